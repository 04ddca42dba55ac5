//! Board handlers: extract, call db, respond.

use actix_web::{HttpResponse, http::header, web};
use serde::{Deserialize, Serialize};

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

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct Page {
    boards: Vec<Board>,
    next: Option<String>,
}

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
    Ok(HttpResponse::Ok().json(Page {
        boards,
        next: next.map(|c| c.encode()),
    }))
}

#[derive(Serialize)]
struct BoardWithNotes {
    #[serde(flatten)]
    board: Board,
    notes: Vec<Note>,
}

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

pub async fn rename(
    PathIds(id): PathIds<BoardId>,
    caller: Caller,
    state: web::Data<AppState>,
    body: request::JsonBody<BoardInput>,
) -> Result<HttpResponse, ApiError> {
    caller.may_write(id)?;
    let title = BoardTitle::parse(body.read().await?.title).map_err(invalid)?;
    let mut client = state.db.client().await?;
    let board = boards::update_title(&mut client, id, &title, state.settings.event_retention)
        .await?
        .ok_or_else(|| ApiError::board_not_found(id))?;
    Ok(HttpResponse::Ok().json(board))
}

pub async fn delete(
    PathIds(id): PathIds<BoardId>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.may_write(id)?;
    let mut client = state.db.client().await?;
    if !boards::delete(&mut client, id).await? {
        return Err(ApiError::board_not_found(id));
    }
    Ok(HttpResponse::NoContent().finish())
}
