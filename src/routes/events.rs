//! The event stream handler: reads where to resume from and who is viewing, then lets
//! `realtime` do the rest.

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, HttpResponseBuilder,
    dev::Payload,
    http::header::{self, ContentEncoding},
    web,
};
use serde::Deserialize;

use super::openapi::params::BoardPath;
use super::{AppState, Caller, request::PathIds};
use crate::db::boards;
use crate::domain::ids::BoardId;
use crate::error::ApiError;
use crate::realtime::OpenRequest;

#[derive(Deserialize)]
pub struct StreamQuery {
    last_event_id: Option<String>,
    name: Option<String>,
    session: Option<String>,
}

/// The longest `?session=` (the contract's 64 characters of `[A-Za-z0-9_-]`).
const SESSION_MAX: usize = 64;

/// `?session=`, checked: 1–64 characters of `[A-Za-z0-9_-]`, else 422.
fn session(query: &StreamQuery) -> Result<Option<String>, ApiError> {
    let Some(raw) = query.session.as_deref() else {
        return Ok(None);
    };
    let fits = (1..=SESSION_MAX).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !fits {
        return Err(ApiError::Validation(format!(
            "`session` must be 1 to {SESSION_MAX} characters of A-Z, a-z, 0-9, `_` and `-`"
        )));
    }
    Ok(Some(raw.to_string()))
}

fn parse_last_event_id(raw: &str, source: &str) -> Result<Option<i64>, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id >= 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::Validation(format!(
                "`{source}` must be an event id this server sent (a whole number ≥ 0)"
            ))
        })
}

/// What a stream request asks for, checked: the same for GET and HEAD, for one board or
/// many.
struct Opening {
    boards: Vec<BoardId>,
    resume: Vec<Option<i64>>,
    viewer: String,
    session: Option<String>,
}

/// The last event id the client sent, raw, and where it came from. The header wins over
/// the query parameter, as the contract says.
fn last_event_id<'a>(
    req: &'a HttpRequest,
    query: &'a StreamQuery,
) -> Result<Option<(&'a str, &'static str)>, ApiError> {
    match req.headers().get("last-event-id") {
        Some(value) => value
            .to_str()
            .map(|raw| Some((raw, "Last-Event-ID")))
            .map_err(|_| ApiError::Validation("`Last-Event-ID` must be a whole number".into())),
        None => Ok(query
            .last_event_id
            .as_deref()
            .map(|raw| (raw, "last_event_id"))),
    }
}

fn opening(
    board: BoardId,
    caller: &Caller,
    req: &HttpRequest,
    query: &StreamQuery,
) -> Result<Opening, ApiError> {
    caller.may_read(board)?;
    let resume = match last_event_id(req, query)? {
        Some((raw, source)) => parse_last_event_id(raw, source)?,
        None => None,
    };
    let viewer = caller.viewer_name(query.name.as_deref())?;
    Ok(Opening {
        boards: vec![board],
        resume: vec![resume],
        viewer,
        session: session(query)?,
    })
}

/// A many-board stream's request, checked in the contract's order: the ids were parsed
/// before auth (400), then the token must grant every board (403), then the list's length
/// and distinctness and the cursor (422).
fn many_opening(
    boards: Vec<BoardId>,
    caller: &Caller,
    req: &HttpRequest,
    query: &StreamQuery,
    max: usize,
) -> Result<Opening, ApiError> {
    for board in &boards {
        caller.may_read(*board)?;
    }
    if boards.is_empty() || boards.len() > max {
        return Err(ApiError::Validation(format!(
            "`boards` must list 1 to {max} board ids, comma-separated (got {})",
            boards.len()
        )));
    }
    for (i, board) in boards.iter().enumerate() {
        if boards[..i].contains(board) {
            return Err(ApiError::Validation(format!(
                "`boards` lists board {board} twice; each board may be listed once"
            )));
        }
    }
    let resume = match last_event_id(req, query)? {
        Some((raw, source)) => parse_cursor(raw, source, boards.len())?,
        None => vec![None; boards.len()],
    };
    let viewer = caller.viewer_name(query.name.as_deref())?;
    Ok(Opening {
        boards,
        resume,
        viewer,
        session: session(query)?,
    })
}

/// A many-board stream's cursor: each board's last seq, comma-separated in the order of
/// `boards`. A slot that is not a whole number is 422; an empty slot, or a cursor with the
/// wrong number of slots (another list of boards), means a snapshot.
fn parse_cursor(raw: &str, source: &str, boards: usize) -> Result<Vec<Option<i64>>, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(vec![None; boards]);
    }
    let slots = raw
        .split(',')
        .map(|slot| {
            parse_last_event_id(slot, source).map_err(|_| {
                ApiError::Validation(format!(
                    "`{source}` must be a cursor this server sent: a whole number ≥ 0 (or nothing) per board, comma-separated (got {raw:?})"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if slots.len() != boards {
        return Ok(vec![None; boards]);
    }
    Ok(slots)
}

/// The `boards` of a many-board stream, read before anything else about the request (as
/// path ids are): an entry that is not a UUID is 400 `invalid_id`. An absent or empty list
/// is left to the handler, which answers 422 after auth.
pub struct BoardList(pub Vec<BoardId>);

#[derive(Deserialize)]
struct BoardsQuery {
    boards: Option<String>,
}

impl FromRequest for BoardList {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parsed = web::Query::<BoardsQuery>::from_query(req.query_string())
            .map_err(|e| ApiError::Validation(format!("the query string is not valid: {e}")))
            .and_then(|query| {
                let raw = query.into_inner().boards.unwrap_or_default();
                if raw.trim().is_empty() {
                    return Ok(BoardList(Vec::new()));
                }
                raw.split(',')
                    .map(|id| {
                        BoardId::parse(id.trim()).map_err(|_| {
                            ApiError::InvalidId(format!(
                                "`boards` must be board ids (UUIDs) separated by commas; {:?} is not one",
                                id.trim()
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(BoardList)
            });
        std::future::ready(parsed)
    }
}

/// The headers of a stream's answer, for GET and HEAD alike.
fn stream_answer() -> HttpResponseBuilder {
    let mut answer = HttpResponse::Ok();
    answer
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // nginx-style proxies must not buffer a stream.
        .insert_header(("X-Accel-Buffering", "no"))
        // Compression would hold back frames until a block fills.
        .insert_header(ContentEncoding::Identity);
    answer
}

/// Stream a board's events (Server-Sent Events).
///
/// Stays open. Begins with `retry:`, then a `snapshot` (or, given a last event id, a
/// replay of every event after it), then one `presence`, then every change live, with
/// heartbeats. The `data` of each event type is described in the response below.
#[utoipa::path(
    get,
    operation_id = "streamEvents",
    path = "/api/boards/{board_id}/events",
    tag = "stream",
    params(
        BoardPath,
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]*$",
            description = "Resume after this event id (a board `seq`); wins over `last_event_id`."),
        ("last_event_id" = Option<String>, Query, nullable = false, pattern = "^[0-9]*$",
            description = "Resume after this event id, for clients that cannot set headers."),
        ("name" = Option<String>, Query, nullable = false, max_length = 100,
            description = "Display name for presence when auth is off."),
        ("session" = Option<String>, Query, nullable = false, pattern = "^[A-Za-z0-9_-]{1,64}$",
            description = "A client's session: reconnecting with it (and the same token `sub`) within two heartbeat intervals of the stream closing keeps the viewer id, and no `presence.left`/`presence.joined` is announced for the gap."),
    ),
    responses((
        status = 200,
        description = "The board's events (see the table below).",
        content_type = "text/event-stream",
        body = String,
        headers(
            ("Cache-Control" = String, description = "`no-cache`"),
            ("X-Accel-Buffering" = String, description = "`no`: proxies must not buffer the stream."),
        ),
    )),
    security(("bearer" = []), ("access_token" = []), ()),
)]
pub async fn stream(
    PathIds(board): PathIds<BoardId>,
    caller: Caller,
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let opening = opening(board, &caller, &req, &query)?;
    open(opening, &caller, &state).await
}

async fn open(
    opening: Opening,
    caller: &Caller,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let request = OpenRequest {
        boards: opening.boards,
        resume: opening.resume,
        viewer: opening.viewer,
        client_key: caller.client_key(),
        // The stream ends when the token does, so access cannot outlive it.
        expires_at: caller.expires_at(),
        sub: caller.subject().map(str::to_string),
        session: opening.session,
    };
    let body = state.live.open(request).await?;
    Ok(stream_answer().streaming(body))
}

/// Answers a HEAD of a stream: 404 when a board does not exist, else the stream's headers
/// with an empty streaming body (so the framing headers are a GET's too: chunked, no
/// length).
async fn head_answer(boards: &[BoardId], state: &AppState) -> Result<HttpResponse, ApiError> {
    let client = state.db.client().await?;
    for board in boards {
        if boards::find(&client, *board).await?.is_none() {
            return Err(ApiError::board_not_found(*board));
        }
    }
    let nothing = futures_util::stream::empty::<Result<bytes::Bytes, std::convert::Infallible>>();
    Ok(stream_answer().streaming(nothing))
}

/// Stream the events of many boards on one connection (Server-Sent Events).
///
/// Browsers allow six HTTP/1.1 connections per origin: one stream for all the boards a
/// page shows leaves the others for its writes. `boards` lists 1 to
/// `MAX_BOARDS_PER_STREAM` (default 20) distinct board ids. The stream opens with each
/// board's `snapshot` (or replay) in the order listed, then each board's `presence` (each
/// with its own `you`), then goes live with every board's events, in the board stream's
/// format (each `data` names its `board_id`). Per board, events stay consecutive and in
/// commit order.
///
/// The SSE `id` is the **cursor**: the latest seq delivered for each board,
/// comma-separated in the order of `boards`, an empty slot for a board not yet delivered
/// (`41,` after the first snapshot, `41,7` after the second, `42,7` after the next change
/// of the first board). Reconnecting with it as `Last-Event-ID` (and the same `boards`)
/// resumes each board as its own stream would: a replay, or a fresh `snapshot` for that
/// board alone; an empty slot, or a cursor with another number of slots, means a snapshot.
/// A board deleted while streaming sends `board.deleted` and keeps its last seq in the
/// cursor; the stream goes on for the others. The stream counts once against
/// `MAX_STREAMS` and `MAX_STREAMS_PER_CLIENT`.
#[utoipa::path(
    get,
    operation_id = "streamManyBoards",
    path = "/api/events",
    tag = "stream",
    params(
        ("boards" = String, Query, pattern = "^[0-9a-fA-F-]{36}(,[0-9a-fA-F-]{36})*$",
            description = "1 to `MAX_BOARDS_PER_STREAM` distinct board ids, comma-separated."),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]*(,[0-9]*)*$",
            description = "Resume from this cursor (the stream's last `id`); wins over `last_event_id`."),
        ("last_event_id" = Option<String>, Query, nullable = false, pattern = "^[0-9]*(,[0-9]*)*$",
            description = "Resume from this cursor, for clients that cannot set headers."),
        ("name" = Option<String>, Query, nullable = false, max_length = 100,
            description = "Display name for presence when auth is off."),
        ("session" = Option<String>, Query, nullable = false, pattern = "^[A-Za-z0-9_-]{1,64}$",
            description = "A client's session: reconnecting with it (and the same token `sub`) within two heartbeat intervals of the stream closing keeps the viewer id, and no `presence.left`/`presence.joined` is announced for the gap."),
    ),
    responses((
        status = 200,
        description = "The boards' events (see the table below); ids are cursors.",
        content_type = "text/event-stream",
        body = String,
        headers(
            ("Cache-Control" = String, description = "`no-cache`"),
            ("X-Accel-Buffering" = String, description = "`no`: proxies must not buffer the stream."),
        ),
    )),
    security(("bearer" = []), ("access_token" = []), ()),
)]
pub async fn stream_many(
    BoardList(boards): BoardList,
    caller: Caller,
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let max = state.settings.max_boards_per_stream;
    let opening = many_opening(boards, &caller, &req, &query, max)?;
    open(opening, &caller, &state).await
}

/// `HEAD` of a many-board stream: checks what GET would, opens nothing.
pub async fn head_many(
    BoardList(boards): BoardList,
    caller: Caller,
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let max = state.settings.max_boards_per_stream;
    let opening = many_opening(boards, &caller, &req, &query, max)?;
    head_answer(&opening.boards, &state).await
}

/// `HEAD` of a stream: the answer a GET would start with (its status and headers), but
/// nothing is opened: no viewer joins, no listener connects, no stream is counted.
pub async fn head(
    PathIds(board): PathIds<BoardId>,
    caller: Caller,
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let opening = opening(board, &caller, &req, &query)?;
    head_answer(&opening.boards, &state).await
}
