//! Who is viewing a board, on every instance.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::{AppState, Caller, request};
use crate::db::boards;
use crate::error::ApiError;

pub async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let board = request::board_id(&path)?;
    caller.may_read(board)?;
    let viewers = state.live.presence().list(board).await?;
    if viewers.is_empty() {
        // An empty list must not hide a missing board.
        let client = state.db.client().await?;
        if boards::find(&client, board).await?.is_none() {
            return Err(ApiError::board_not_found(board));
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "viewers": viewers })))
}
