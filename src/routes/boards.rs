//! Board handlers: extract, call db, respond.

use actix_web::{HttpResponse, http::header, web};
use serde::{Deserialize, Serialize};

use super::openapi::params::BoardPath;
use super::{AppState, Caller, request, request::PathIds};
use crate::db::boards;
use crate::domain::{
    ValidationError,
    board::{Board, BoardCursor, BoardInput, BoardTitle},
    ids::BoardId,
    note::Note,
};
use crate::error::ApiError;

const PAGE_DEFAULT: i64 = 50;
const PAGE_MAX: i64 = 200;

fn invalid(e: ValidationError) -> ApiError {
    ApiError::Validation(e.0)
}

/// Create a board.
///
/// A token with a list of boards may not create boards (403).
#[utoipa::path(
    post,
    operation_id = "createBoard",
    path = "/api/boards",
    tag = "boards",
    request_body = BoardInput,
    responses((
        status = 201,
        description = "The new board.",
        body = Board,
        headers(("Location" = String, description = "`/api/boards/{id}` of the new board")),
    )),
)]
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    body: request::JsonBody<BoardInput>,
) -> Result<HttpResponse, ApiError> {
    caller.may_create_boards()?;
    let title = BoardTitle::parse(body.read().await?.title).map_err(invalid)?;
    let client = state.db.client().await?;
    let board = boards::insert(&client, &title).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/boards/{}", board.id)))
        .json(board))
}

/// Read as text so that a bad `limit` gets this server's 422 message rather than serde's.
#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// One page of boards, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BoardPage {
    boards: Vec<Board>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    next: Option<String>,
}

/// List boards, newest first.
///
/// A token with a list of boards sees only those.
#[utoipa::path(
    get,
    operation_id = "listBoards",
    path = "/api/boards",
    tag = "boards",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200,
            description = "Boards per page, 1–200 (default 50)."),
        ("cursor" = Option<String>, Query, nullable = false, pattern = "^[0-9]+_[0-9a-f-]{36}$",
            description = "`next` of the previous page."),
    ),
    responses((status = 200, description = "A page of boards.", body = BoardPage)),
)]
pub async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = match query.limit.as_deref() {
        None => PAGE_DEFAULT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=PAGE_MAX).contains(n))
            .ok_or_else(|| {
                ApiError::Validation(format!(
                    "`limit` must be a whole number from 1 to {PAGE_MAX}"
                ))
            })?,
    };
    let cursor = query
        .cursor
        .as_deref()
        .map(BoardCursor::parse)
        .transpose()
        .map_err(invalid)?;
    let client = state.db.client().await?;
    // A token with a list of boards sees only those.
    let (boards, next) = boards::list(&client, limit, cursor, caller.visible_boards()).await?;
    Ok(HttpResponse::Ok().json(BoardPage {
        boards,
        next: next.map(|c| c.encode()),
    }))
}

/// A board with all its notes, as of its `seq`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BoardWithNotes {
    #[serde(flatten)]
    board: Board,
    notes: Vec<Note>,
}

/// Read a board and its notes.
#[utoipa::path(
    get,
    operation_id = "getBoard",
    path = "/api/boards/{board_id}",
    tag = "boards",
    params(BoardPath),
    responses((status = 200, description = "The board and its notes.", body = BoardWithNotes)),
)]
pub async fn get(
    PathIds(id): PathIds<BoardId>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.may_read(id)?;
    let mut client = state.db.client().await?;
    let (board, notes) = boards::snapshot(&mut client, id)
        .await?
        .ok_or_else(|| ApiError::board_not_found(id))?;
    Ok(HttpResponse::Ok().json(BoardWithNotes { board, notes }))
}

/// Rename a board.
#[utoipa::path(
    patch,
    operation_id = "renameBoard",
    path = "/api/boards/{board_id}",
    tag = "boards",
    params(BoardPath),
    request_body = BoardInput,
    responses((status = 200, description = "The renamed board.", body = Board)),
)]
pub async fn rename(
    PathIds(id): PathIds<BoardId>,
    caller: Caller,
    state: web::Data<AppState>,
    body: request::JsonBody<BoardInput>,
) -> Result<HttpResponse, ApiError> {
    caller.may_write(id)?;
    let title = BoardTitle::parse(body.read().await?.title).map_err(invalid)?;
    let client = state.db.client().await?;
    let board = boards::update_title(&client, id, &title, state.settings.event_retention)
        .await?
        .ok_or_else(|| ApiError::board_not_found(id))?;
    Ok(HttpResponse::Ok().json(board))
}

/// Delete a board; its notes and events go with it.
///
/// Its open streams get `board.deleted` and end.
#[utoipa::path(
    delete,
    operation_id = "deleteBoard",
    path = "/api/boards/{board_id}",
    tag = "boards",
    params(BoardPath),
    responses((status = 204, description = "Deleted.")),
)]
pub async fn delete(
    PathIds(id): PathIds<BoardId>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.may_write(id)?;
    let client = state.db.client().await?;
    if !boards::delete(&client, id).await? {
        return Err(ApiError::board_not_found(id));
    }
    Ok(HttpResponse::NoContent().finish())
}
