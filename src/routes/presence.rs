//! Who is viewing a board, on every instance.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::openapi::params::BoardPath;
use super::{AppState, Caller, request::PathIds};
use crate::db::boards;
use crate::domain::ids::BoardId;
use crate::domain::viewer::Viewer;
use crate::error::ApiError;

/// Who is viewing a board, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ViewerList {
    viewers: Vec<Viewer>,
}

/// List who is viewing a board, on every instance.
#[utoipa::path(
    get,
    operation_id = "listViewers",
    path = "/api/boards/{board_id}/presence",
    tag = "stream",
    params(BoardPath),
    responses((status = 200, description = "The board's viewers.", body = ViewerList)),
)]
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
    Ok(HttpResponse::Ok().json(ViewerList { viewers }))
}
