//! The event stream handler: reads where to resume from and who is viewing, then lets
//! `realtime` do the rest.

use actix_web::{
    HttpRequest, HttpResponse, HttpResponseBuilder,
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

/// What a stream request asks for, checked: the same for GET and HEAD.
struct Opening {
    board: BoardId,
    last_event_id: Option<i64>,
    viewer: String,
}

fn opening(
    board: BoardId,
    caller: &Caller,
    req: &HttpRequest,
    query: &StreamQuery,
) -> Result<Opening, ApiError> {
    caller.may_read(board)?;
    // The header wins over the query parameter, as the contract says.
    let header_id = req.headers().get("last-event-id").map(|v| {
        v.to_str()
            .map_err(|_| ApiError::Validation("`Last-Event-ID` must be a whole number".into()))
    });
    let last_event_id = match header_id {
        Some(raw) => parse_last_event_id(raw?, "Last-Event-ID")?,
        None => match query.last_event_id.as_deref() {
            Some(raw) => parse_last_event_id(raw, "last_event_id")?,
            None => None,
        },
    };
    let viewer = caller.viewer_name(query.name.as_deref())?;
    Ok(Opening {
        board,
        last_event_id,
        viewer,
    })
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
    let request = OpenRequest {
        board: opening.board,
        last_event_id: opening.last_event_id,
        viewer: opening.viewer,
        client_key: caller.client_key(),
        // The stream ends when the token does, so access cannot outlive it.
        expires_at: caller.expires_at(),
        sub: caller.subject().map(str::to_string),
    };
    let body = state.live.open(request).await?;
    Ok(stream_answer().streaming(body))
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
    let client = state.db.client().await?;
    if boards::find(&client, opening.board).await?.is_none() {
        return Err(ApiError::board_not_found(opening.board));
    }
    // An empty streaming body, so the framing headers are a GET's too (chunked, no length).
    let nothing = futures_util::stream::empty::<Result<bytes::Bytes, std::convert::Infallible>>();
    Ok(stream_answer().streaming(nothing))
}
