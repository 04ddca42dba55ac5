//! Reading what a request says beyond its body: path ids, the writer's name, the client.

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::future::LocalBoxFuture;
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::domain::ids::{BoardId, NoteId};
use crate::error::ApiError;
use crate::limits::REQUEST_BODY_TIMEOUT;

/// The longest display name kept; longer ones are refused rather than cut silently.
pub const NAME_MAX_CHARS: usize = 100;

/// A JSON object request body. Reading and syntax-checking it is `web::Json`'s (so the
/// `JsonConfig` limits and error answers apply); turning it into `T` goes through
/// `serde_path_to_error`, so a value of the wrong type is reported with the field it is in,
/// which serde_json alone does not say.
///
/// The body must arrive within [`REQUEST_BODY_TIMEOUT`] (actix bounds only the time to the
/// end of the headers; a body trickling in a byte at a time would otherwise hold its
/// connection and buffer for as long as the client likes), else 408. It must be an object:
/// serde also reads structs from arrays, so `["a", 1, 2]` would otherwise make a note.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let raw = web::Json::<Box<RawValue>>::from_request(req, payload);
        Box::pin(async move {
            let raw = tokio::time::timeout(REQUEST_BODY_TIMEOUT, raw)
                .await
                .map_err(|_| {
                    ApiError::RequestTimeout(format!(
                        "the request body did not arrive within {} s",
                        REQUEST_BODY_TIMEOUT.as_secs()
                    ))
                })??
                .into_inner();
            if !raw.get().trim_start().starts_with('{') {
                return Err(ApiError::InvalidJson(
                    "the body must be a JSON object, such as {\"title\": \"Plans\"}".into(),
                )
                .into());
            }
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(raw.get()))
                .map(JsonBody)
                .map_err(|e| {
                    let path = e.path().to_string();
                    let cause = e.into_inner();
                    let message = if path == "." {
                        format!("the body does not have the expected fields: {cause}")
                    } else {
                        format!("`{path}`: {cause}")
                    };
                    ApiError::InvalidJson(message).into()
                })
        })
    }
}

pub fn board_id(raw: &str) -> Result<BoardId, ApiError> {
    BoardId::parse(raw).map_err(ApiError::InvalidId)
}

pub fn note_id(raw: &str) -> Result<NoteId, ApiError> {
    NoteId::parse(raw).map_err(ApiError::InvalidId)
}

/// Validates a display name from a header or query: trimmed, at most 100 characters, no
/// control characters. Empty means none.
pub fn display_name(raw: &str, source: &str) -> Result<Option<String>, ApiError> {
    let name = raw.trim();
    if name.chars().any(char::is_control) {
        return Err(ApiError::Validation(format!(
            "`{source}` must not contain control characters"
        )));
    }
    let chars = name.chars().count();
    if chars > NAME_MAX_CHARS {
        return Err(ApiError::Validation(format!(
            "`{source}` must be at most {NAME_MAX_CHARS} characters (got {chars})"
        )));
    }
    Ok((!name.is_empty()).then(|| name.to_string()))
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
