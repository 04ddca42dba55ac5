//! Who is viewing a board, on every instance.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::{AppState, Caller, request::PathIds};
use crate::db::boards;
use crate::domain::ids::BoardId;
use crate::error::ApiError;

pub async fn list(
    PathIds(board): PathIds<BoardId>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
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
