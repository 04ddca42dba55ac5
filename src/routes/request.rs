//! Reading what a request says beyond its body: path ids, the writer's name, the client.

use std::marker::PhantomData;

use actix_web::{FromRequest, HttpRequest, dev::Payload, error::PayloadError, http::header};
use futures_util::StreamExt;
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::BODY_LIMIT;
use crate::domain::{
    ids::{BoardId, NoteId},
    viewer,
};
use crate::error::ApiError;
use crate::limits::REQUEST_BODY_TIMEOUT;

/// A JSON object request body, read when the handler asks for it: after the path ids and
/// the caller's rights, so the contract's order holds (media type 415, then size 413, then
/// the body 400 `invalid_json`). Turning it into `T` goes through `serde_path_to_error`, so
/// a value of the wrong type is reported with the field it is in, which serde_json alone
/// does not say.
///
/// The body must arrive within [`REQUEST_BODY_TIMEOUT`] (actix bounds only the time to the
/// end of the headers; a body trickling in a byte at a time would otherwise hold its
/// connection and buffer for as long as the client likes), else 408. It must be an object:
/// serde also reads structs from arrays, so `["a", 1, 2]` would otherwise make a note.
pub struct JsonBody<T> {
    req: HttpRequest,
    payload: Payload,
    into: PhantomData<T>,
}

impl<T> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        std::future::ready(Ok(JsonBody {
            req: req.clone(),
            payload: payload.take(),
            into: PhantomData,
        }))
    }
}

impl<T: DeserializeOwned> JsonBody<T> {
    pub async fn read(mut self) -> Result<T, ApiError> {
        json_media_type(&self.req)?;
        let declared = self
            .req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
            return Err(ApiError::PayloadTooLarge(BODY_LIMIT));
        }
        let bytes = tokio::time::timeout(REQUEST_BODY_TIMEOUT, collect(&mut self.payload))
            .await
            .map_err(|_| {
                ApiError::RequestTimeout(format!(
                    "the request body did not arrive within {} s",
                    REQUEST_BODY_TIMEOUT.as_secs()
                ))
            })??;
        let raw: Box<RawValue> = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::InvalidJson(describe_json_error(&e)))?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(ApiError::InvalidJson(
                "the body must be a JSON object, such as {\"title\": \"Plans\"}".into(),
            ));
        }
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(raw.get()))
            .map_err(|e| {
                let path = e.path().to_string();
                let cause = e.into_inner();
                let message = if path == "." {
                    format!("the body does not have the expected fields: {cause}")
                } else {
                    format!("`{path}`: {cause}")
                };
                ApiError::InvalidJson(message)
            })
    }
}

/// The whole body, refused with 413 as soon as it passes [`BODY_LIMIT`].
async fn collect(payload: &mut Payload) -> Result<bytes::BytesMut, ApiError> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            PayloadError::Overflow => ApiError::PayloadTooLarge(BODY_LIMIT),
            other => ApiError::InvalidJson(format!("the body could not be read: {other}")),
        })?;
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(ApiError::PayloadTooLarge(BODY_LIMIT));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof if e.line() == 1 && e.column() == 0 => {
            "the body is empty; a JSON object was expected".into()
        }
        Category::Syntax | Category::Eof => format!("the body is not valid JSON: {e}"),
        Category::Data => format!("the body does not have the expected fields: {e}"),
        Category::Io => format!("the body could not be read: {e}"),
    }
}

/// 415 unless `Content-Type` is JSON as RFC 9110 writes media types (see `media_type`).
fn json_media_type(req: &HttpRequest) -> Result<(), ApiError> {
    let refuse = |got: String| {
        ApiError::UnsupportedMediaType(format!(
            "the body must be JSON sent as Content-Type: application/json (got {got})"
        ))
    };
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Err(refuse("no Content-Type".into()));
    };
    let text = value
        .to_str()
        .map_err(|_| refuse("a non-ASCII value".into()))?;
    match super::media_type::parse(text) {
        Some(media) if media.is_json() => Ok(()),
        _ => Err(refuse(format!("{text:?}"))),
    }
}

/// The ids in a route's path, read before anything else about the request: a malformed
/// id (400 `invalid_id`) answers before auth, the media type and the body (the contract's
/// order). Handlers take it as their first argument.
pub struct PathIds<T>(pub T);

#[derive(serde::Deserialize)]
struct RawIds {
    board_id: String,
    note_id: Option<String>,
}

fn raw_ids(req: &HttpRequest) -> Result<RawIds, ApiError> {
    req.match_info()
        .load::<RawIds>()
        .map_err(|e| ApiError::Internal(format!("a route without a board id: {e}")))
}

impl FromRequest for PathIds<BoardId> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(raw_ids(req).and_then(|ids| board_id(&ids.board_id).map(PathIds)))
    }
}

impl FromRequest for PathIds<(BoardId, NoteId)> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(raw_ids(req).and_then(|ids| {
            let board = board_id(&ids.board_id)?;
            let note = note_id(ids.note_id.as_deref().unwrap_or_default())?;
            Ok(PathIds((board, note)))
        }))
    }
}

pub fn board_id(raw: &str) -> Result<BoardId, ApiError> {
    BoardId::parse(raw).map_err(ApiError::InvalidId)
}

pub fn note_id(raw: &str) -> Result<NoteId, ApiError> {
    NoteId::parse(raw).map_err(ApiError::InvalidId)
}

/// Validates a display name from a header or query by the one rule
/// ([`viewer::display_name`]); a refusal names `source`. Empty means none.
pub fn display_name(raw: &str, source: &str) -> Result<Option<String>, ApiError> {
    viewer::display_name(raw).map_err(|e| ApiError::Validation(format!("`{source}` {e}")))
}

/// The writer's name with auth off: `X-Display-Name`, percent-decoded (browsers cannot
/// send raw non-ASCII header values, so the page percent-encodes them).
pub fn writer_name(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("x-display-name") else {
        return Ok(None);
    };
    let decoded = percent_decode_str(value.to_str().map_err(|_| {
        ApiError::Validation("`X-Display-Name` must be ASCII (percent-encode UTF-8)".into())
    })?)
    .decode_utf8()
    .map_err(|_| {
        ApiError::Validation("`X-Display-Name` is not valid percent-encoded UTF-8".into())
    })?;
    display_name(&decoded, "X-Display-Name")
}

/// The client a limit counts against: its IP address. When the proxy is trusted (behind
/// Heroku's router) that is the last `X-Forwarded-For` hop: the router appends the address
/// it saw to whatever the client sent, so the hops before it are the client's to invent
/// (and would let it dodge its limits by sending a new one each time).
pub fn client_ip(req: &HttpRequest, trust_proxy: bool) -> String {
    if trust_proxy
        && let Some(forwarded) = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .last()
        && let Some(last) = forwarded
            .rsplit(',')
            .next()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    {
        return last.to_string();
    }
    req.peer_addr()
        .map_or_else(|| "unknown".to_string(), |a| a.ip().to_string())
}
