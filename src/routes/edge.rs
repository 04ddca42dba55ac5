//! The edge: what every answer goes through, whichever part of the stack made it.
//!
//! - A request whose target or head is over this server's limits is refused here, before
//!   routing, with the contract's 414 `uri_too_long` / 431 `headers_too_large`.
//! - An error answer that is not the contract's JSON (one made by actix-web or actix-cors
//!   rather than by `ApiError`: a refused CORS preflight is 400 `text/plain` there) is
//!   rewritten into the `{"error": {"code", "message"}}` envelope, keeping its headers.
//! - An HTTP/1.0 client cannot read chunked coding, so a streamed answer to one is sent
//!   unchunked and ended by closing the connection (RFC 9112 §6.3).
//!
//! actix-http answers some requests before any service sees them (a head over 96 fields or
//! 128 KiB, a malformed head, a head slower than the request timeout); the limits here sit
//! below its own, so what this server refuses for size is refused in JSON.

use actix_web::{
    HttpResponse,
    body::{self, BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{ConnectionType, Method, StatusCode, Version, header},
    middleware::Next,
};
use serde_json::json;

use crate::error::{ApiError, ErrorCode};

/// The longest request target accepted (path and query), as nginx and Apache default to.
pub const URI_MAX_BYTES: usize = 8 * 1024;
/// The most header fields a request may carry (actix-http's own hard cap is 96).
pub const HEADER_FIELDS_MAX: usize = 64;
/// The largest request head (request line and header fields); actix-http's cap is 128 KiB.
pub const HEAD_MAX_BYTES: usize = 32 * 1024;

/// How much of a framework error body is read to become the envelope's message.
const MESSAGE_MAX_BYTES: usize = 1024;

/// The middleware; wrap it outside CORS so preflight refusals pass through it.
pub async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if let Some(refusal) = refusal(&req) {
        return Ok(req.error_response(refusal));
    }
    let http10 = req.version() < Version::HTTP_11;
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut res = match next.call(req).await {
        Ok(res) => res.map_into_boxed_body(),
        // Answered by actix outside this middleware, from the error: make it the envelope.
        Err(e) => {
            let response = e.error_response();
            if !is_framework_error(&response) {
                return Err(e);
            }
            return Err(Envelope::of(response, preflight).await.into());
        }
    };
    if is_framework_error(res.response()) {
        let (request, response) = res.into_parts();
        let envelope = Envelope::of(response, preflight).await;
        res = ServiceResponse::new(request, envelope.answer());
    }
    if http10 {
        let head = res.response_mut().head_mut();
        head.no_chunking(true);
        head.set_connection_type(ConnectionType::Close);
    }
    Ok(res)
}

/// 414 or 431 for a request over the limits above.
fn refusal(req: &ServiceRequest) -> Option<ApiError> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > URI_MAX_BYTES {
        return Some(ApiError::UriTooLong(format!(
            "the request target is {target} bytes; at most {URI_MAX_BYTES} are accepted"
        )));
    }
    let fields = req.headers().len();
    if fields > HEADER_FIELDS_MAX {
        return Some(ApiError::HeadersTooLarge(format!(
            "the request has {fields} header fields; at most {HEADER_FIELDS_MAX} are accepted"
        )));
    }
    // Name, ": ", value and CRLF per field, plus the request line.
    let head: usize = target
        + req.method().as_str().len()
        + 12
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    (head > HEAD_MAX_BYTES).then(|| {
        ApiError::HeadersTooLarge(format!(
            "the request head is {head} bytes; at most {HEAD_MAX_BYTES} are accepted"
        ))
    })
}

/// An error answer whose body is not JSON: made by the framework, not by `ApiError`.
fn is_framework_error(response: &HttpResponse) -> bool {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(super::media_type::parse);
    !content_type.is_some_and(|m| m.is_json())
}

/// The contract's code for a status the framework answered with: the first code of
/// `ErrorCode::ALL` with that status (for 400, `bad_request`: a request the framework could
/// not read), so the pairs of code and status have one home.
fn code_of(status: StatusCode) -> ErrorCode {
    ErrorCode::ALL
        .into_iter()
        .find(|code| code.status() == status)
        .unwrap_or(if status.is_server_error() {
            ErrorCode::Internal
        } else {
            ErrorCode::BadRequest
        })
}

/// An error answer of the framework's, restated in the contract's envelope.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Envelope {
    status: StatusCode,
    message: String,
    /// The framework answer's own headers (`Allow`, CORS, `Retry-After`), kept.
    headers: header::HeaderMap,
}

impl Envelope {
    async fn of(response: HttpResponse, preflight: bool) -> Envelope {
        let mut status = response.status();
        let (head, body) = response.into_parts();
        let said = body::to_bytes_limited(body, MESSAGE_MAX_BYTES)
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|s| !s.is_empty());
        let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
        let mut message = said.unwrap_or(reason);
        // actix-cors refuses a preflight with 400; to a browser any non-2xx fails it, and
        // the contract's word for "this origin (or header, or method) may not" is 403.
        if preflight && status.is_client_error() {
            status = StatusCode::FORBIDDEN;
            message = format!("this cross-origin request is not allowed: {message}");
        }
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            log::error!("the framework answered {status}: {message}");
            message = "something went wrong on our side".into();
        }
        let mut headers = header::HeaderMap::new();
        for (name, value) in head.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                headers.append(name.clone(), value.clone());
            }
        }
        Envelope {
            status,
            message,
            headers,
        }
    }

    fn answer(&self) -> HttpResponse {
        let mut answer = HttpResponse::build(self.status);
        for (name, value) in self.headers.iter() {
            answer.append_header((name.clone(), value.clone()));
        }
        answer.insert_header((header::CACHE_CONTROL, "no-store"));
        answer.json(json!({ "error": { "code": code_of(self.status), "message": self.message } }))
    }
}

impl actix_web::ResponseError for Envelope {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        self.answer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framework_status_gets_the_code_of_that_status() {
        for (status, code) in [
            (400, ErrorCode::BadRequest),
            (404, ErrorCode::NotFound),
            (405, ErrorCode::MethodNotAllowed),
            (408, ErrorCode::RequestTimeout),
            (413, ErrorCode::PayloadTooLarge),
            (431, ErrorCode::HeadersTooLarge),
            (503, ErrorCode::Unavailable),
            // No code of their own: the nearest kind.
            (409, ErrorCode::BadRequest),
            (502, ErrorCode::Internal),
        ] {
            let status = StatusCode::from_u16(status).expect("a status");
            assert_eq!(code_of(status), code, "{status}");
        }
    }
}
