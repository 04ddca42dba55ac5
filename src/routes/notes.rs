//! Note handlers: extract, call db, respond. Note answers carry `ETag: "<version>"`.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, http::header, web};
use serde::Serialize;

use super::openapi::params::{BoardPath, NotePath};
use super::{AppState, Caller, request, request::PathIds};
use crate::db::notes::{self, Outcome};
use crate::domain::{
    ids::{BoardId, NoteId},
    note::{NewNote, Note, NoteInput, NotePatch, NotePatchInput, Precondition},
};
use crate::error::ApiError;

fn note_response(status: StatusCode, note: &Note) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::ETAG, note.etag()))
        .json(note)
}

fn precondition(req: &HttpRequest) -> Result<Option<Precondition>, ApiError> {
    match req.headers().get(header::IF_MATCH) {
        None => Ok(None),
        // RFC 9110 allows obs-text (bytes ≥ 0x80) in an entity tag: such a tag is opaque
        // and simply names no version, so it never matches (412), like any other.
        Some(v) => Ok(Some(Precondition::parse(&String::from_utf8_lossy(
            v.as_bytes(),
        )))),
    }
}

fn settle<T>(outcome: Outcome<T>, board: BoardId, note: NoteId) -> Result<T, ApiError> {
    match outcome {
        Outcome::Done(value) => Ok(value),
        Outcome::NoBoard => Err(ApiError::board_not_found(board)),
        Outcome::NoNote => Err(ApiError::note_not_found(note)),
        Outcome::Stale(current) => Err(ApiError::VersionMismatch {
            current: Box::new(current),
        }),
    }
}

/// The notes of a board.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NoteList {
    notes: Vec<Note>,
}

/// List a board's notes.
#[utoipa::path(
    get,
    operation_id = "listNotes",
    path = "/api/boards/{board_id}/notes",
    tag = "notes",
    params(BoardPath),
    responses((status = 200, description = "Every note of the board.", body = NoteList)),
)]
pub async fn list(
    PathIds(board): PathIds<BoardId>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.may_read(board)?;
    let mut client = state.db.client().await?;
    // One snapshot read, so an empty list is never confused with a missing board.
    let (_, notes) = crate::db::boards::snapshot(&mut client, board)
        .await?
        .ok_or_else(|| ApiError::board_not_found(board))?;
    Ok(HttpResponse::Ok().json(NoteList { notes }))
}

/// Add a note to a board.
#[utoipa::path(
    post,
    operation_id = "createNote",
    path = "/api/boards/{board_id}/notes",
    tag = "notes",
    params(
        BoardPath,
        ("X-Display-Name" = Option<String>, Header, nullable = false, max_length = 100,
            description = "With auth off: the author's name (percent-encoded UTF-8). With auth on the token names the author."),
    ),
    request_body = NoteInput,
    responses((
        status = 201,
        description = "The new note.",
        body = Note,
        headers(("ETag" = String, description = "The note's version, quoted: `\"1\"`.")),
    )),
)]
pub async fn create(
    PathIds(board): PathIds<BoardId>,
    caller: Caller,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: request::JsonBody<NoteInput>,
) -> Result<HttpResponse, ApiError> {
    caller.may_write(board)?;
    let new = NewNote::parse(body.read().await?).map_err(|e| ApiError::Validation(e.0))?;
    let author = caller.author(&req)?;
    let client = state.db.client().await?;
    match notes::insert(
        &client,
        board,
        &new,
        author.as_deref(),
        state.settings.event_retention,
    )
    .await?
    {
        Outcome::Done(note) => Ok(note_response(StatusCode::CREATED, &note)),
        _ => Err(ApiError::board_not_found(board)),
    }
}

/// Change some fields of a note.
///
/// With `If-Match`, the change is made only if the note is still at that version; else
/// 412 with the note as it is now.
#[utoipa::path(
    patch,
    operation_id = "updateNote",
    path = "/api/boards/{board_id}/notes/{note_id}",
    tag = "notes",
    params(
        NotePath,
        ("If-Match" = Option<String>, Header, nullable = false,
            description = "An `ETag` of the note (`\"3\"`), several, or `*`."),
        ("X-Display-Name" = Option<String>, Header, nullable = false, max_length = 100,
            description = "With auth off: the author's name (percent-encoded UTF-8)."),
    ),
    request_body = NotePatchInput,
    responses((
        status = 200,
        description = "The note after the change.",
        body = Note,
        headers(("ETag" = String, description = "The note's new version, quoted.")),
    )),
)]
pub async fn update(
    PathIds((board, note)): PathIds<(BoardId, NoteId)>,
    caller: Caller,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: request::JsonBody<NotePatchInput>,
) -> Result<HttpResponse, ApiError> {
    caller.may_write(board)?;
    let patch = NotePatch::parse(body.read().await?).map_err(|e| ApiError::Validation(e.0))?;
    let precondition = precondition(&req)?;
    let client = state.db.client().await?;
    let outcome = notes::update(
        &client,
        board,
        note,
        &patch,
        precondition.as_ref(),
        state.settings.event_retention,
    )
    .await?;
    let updated = settle(outcome, board, note)?;
    Ok(note_response(StatusCode::OK, &updated))
}

/// Delete a note.
#[utoipa::path(
    delete,
    operation_id = "deleteNote",
    path = "/api/boards/{board_id}/notes/{note_id}",
    tag = "notes",
    params(
        NotePath,
        ("If-Match" = Option<String>, Header, nullable = false,
            description = "Delete only if the note is at this version (`\"3\"`), or `*`."),
    ),
    responses((status = 204, description = "Deleted.")),
)]
pub async fn delete(
    PathIds((board, note)): PathIds<(BoardId, NoteId)>,
    caller: Caller,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.may_write(board)?;
    let precondition = precondition(&req)?;
    let client = state.db.client().await?;
    let outcome = notes::delete(
        &client,
        board,
        note,
        precondition.as_ref(),
        state.settings.event_retention,
    )
    .await?;
    settle(outcome, board, note)?;
    Ok(HttpResponse::NoContent().finish())
}
