//! `ApiError`: the status and JSON body of every failure, mapped in one place.

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use serde_json::json;

use crate::db::DbError;
use crate::domain::note::Note;

/// What a client is told when a request fails. Every variant has a stable machine `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request the HTTP layer could not read (a malformed request line or header). The
    /// contract names no code for it; `bad_request` is this server's (see README).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidId(String),
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// `allow` is the resource's methods as the `Allow` header lists them.
    #[error("{method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: String },
    /// `If-Match` named another version; the body carries the note as it is now so a client
    /// can show the newer text without another request.
    #[error("the note is at version {}, not the one in If-Match", current.version)]
    VersionMismatch { current: Box<Note> },
    /// The head or the body did not arrive in time (a slow or stalled client).
    #[error("{0}")]
    RequestTimeout(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UriTooLong(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Validation(String),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    HeadersTooLarge(String),
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_secs: u64,
    },
    /// A bug or an unexpected database answer. The cause is logged, never sent.
    #[error("something went wrong on our side")]
    Internal(String),
}

/// How one variant answers: status, code and what its answer adds to the error body.
struct Shape {
    status: StatusCode,
    code: &'static str,
    header: Option<(header::HeaderName, String)>,
    /// The rest of the request may still be trickling in: do not wait for it.
    close: bool,
}

impl Shape {
    fn new(status: StatusCode, code: &'static str) -> Shape {
        Shape {
            status,
            code,
            header: None,
            close: false,
        }
    }

    fn with(mut self, name: header::HeaderName, value: impl Into<String>) -> Shape {
        self.header = Some((name, value.into()));
        self
    }

    fn closing(mut self) -> Shape {
        self.close = true;
        self
    }
}

impl ApiError {
    /// Each variant's whole answer, in one place.
    fn shape(&self) -> Shape {
        use StatusCode as S;
        match self {
            ApiError::BadRequest(_) => Shape::new(S::BAD_REQUEST, "bad_request").closing(),
            ApiError::InvalidId(_) => Shape::new(S::BAD_REQUEST, "invalid_id"),
            ApiError::InvalidJson(_) => Shape::new(S::BAD_REQUEST, "invalid_json"),
            ApiError::Unauthorized(_) => {
                Shape::new(S::UNAUTHORIZED, "unauthorized").with(header::WWW_AUTHENTICATE, "Bearer")
            }
            ApiError::Forbidden(_) => Shape::new(S::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => Shape::new(S::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed { allow, .. } => {
                Shape::new(S::METHOD_NOT_ALLOWED, "method_not_allowed")
                    .with(header::ALLOW, allow.clone())
            }
            ApiError::VersionMismatch { current } => {
                Shape::new(S::PRECONDITION_FAILED, "version_mismatch")
                    .with(header::ETAG, current.etag())
            }
            ApiError::RequestTimeout(_) => {
                Shape::new(S::REQUEST_TIMEOUT, "request_timeout").closing()
            }
            ApiError::PayloadTooLarge(_) => Shape::new(S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UriTooLong(_) => Shape::new(S::URI_TOO_LONG, "uri_too_long"),
            ApiError::UnsupportedMediaType(_) => {
                Shape::new(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Validation(_) => Shape::new(S::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::RateLimited {
                retry_after_secs, ..
            } => Shape::new(S::TOO_MANY_REQUESTS, "rate_limited")
                .with(header::RETRY_AFTER, retry_after_secs.to_string()),
            ApiError::HeadersTooLarge(_) => {
                Shape::new(S::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large").closing()
            }
            ApiError::Unavailable {
                retry_after_secs, ..
            } => Shape::new(S::SERVICE_UNAVAILABLE, "unavailable")
                .with(header::RETRY_AFTER, retry_after_secs.to_string()),
            ApiError::Internal(_) => Shape::new(S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The stable machine `code` of the error body.
    pub fn code(&self) -> &'static str {
        self.shape().code
    }

    /// The `{"code", "message"}` member every error body has under `error`.
    pub fn envelope(&self) -> serde_json::Value {
        json!({ "code": self.code(), "message": self.to_string() })
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::Unavailable {
            message: message.into(),
            retry_after_secs: 5,
        }
    }

    pub fn board_not_found(id: impl std::fmt::Display) -> ApiError {
        ApiError::NotFound(format!("board {id} does not exist"))
    }

    pub fn note_not_found(id: impl std::fmt::Display) -> ApiError {
        ApiError::NotFound(format!("note {id} does not exist on this board"))
    }

    /// The answer's builder with the status and headers of this error, for answers that
    /// add their own members next to `error` (`/readyz`).
    pub fn response_builder(&self) -> actix_web::HttpResponseBuilder {
        let shape = self.shape();
        let mut response = HttpResponse::build(shape.status);
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(pair) = shape.header {
            response.insert_header(pair);
        }
        if shape.close {
            response.force_close();
        }
        response
    }
}

impl From<DbError> for ApiError {
    /// The cause goes to the log (with its SQLSTATE and where it was raised); the client
    /// gets only the code and a fixed message.
    fn from(e: DbError) -> Self {
        if e.is_unavailable() {
            log::warn!("{e}");
            ApiError::unavailable("the database is not answering; try again shortly")
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.shape().status
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) = self {
            log::error!("internal error: {cause}");
        }
        let error = self.envelope();
        let mut response = self.response_builder();
        match self {
            ApiError::VersionMismatch { current } => {
                response.json(json!({ "error": error, "note": current }))
            }
            _ => response.json(json!({ "error": error })),
        }
    }
}
