//! The event stream handler: reads where to resume from and who is viewing, then lets
//! `realtime` do the rest.

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, ContentEncoding},
    web,
};
use serde::Deserialize;

use super::{AppState, Caller, request};
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

pub async fn stream(
    caller: Caller,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let board = request::board_id(&path)?;
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

    let body = state
        .live
        .open(OpenRequest {
            board,
            last_event_id,
            viewer,
            client_key: caller.client_key(),
            // The stream ends when the token does, so access cannot outlive it.
            expires_at: caller.expires_at(),
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // nginx-style proxies must not buffer a stream.
        .insert_header(("X-Accel-Buffering", "no"))
        // Compression would hold back frames until a block fills.
        .insert_header(ContentEncoding::Identity)
        .streaming(body))
}
