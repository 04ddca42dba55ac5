//! `ApiError`: the status and JSON body of every failure, mapped in one place.

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use serde::{Deserialize, Serialize};

use crate::db::DbError;
use crate::domain::note::Note;

/// The `Retry-After` of every 503 (the database away, a stream cap reached, shutting
/// down): long enough for a restart or a pool to drain, short enough that a client does
/// not give up.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// What a client is told when a request fails. Every variant has a stable machine `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine `code` and a human `message`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// For people; names the field or value at fault. Not stable: match on `code`.
    pub message: String,
}

/// The 412 answer: the error, and the note as it is now (so a client can show the newer
/// text without asking again).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionMismatchBody<'a> {
    pub error: ErrorDetail,
    #[schema(value_type = Note)]
    pub note: &'a Note,
}

/// The machine `code` of an error body: one per kind of failure, each with one status.
/// The OpenAPI document lists these values (derived from this enum), so a new code shows
/// up there as soon as it exists; `routes::openapi` decides which operations answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: a request the HTTP layer could not read (a malformed request line or header).
    /// The contract names no code for it; this server's choice (see README).
    BadRequest,
    /// 400: a path id that is not a UUID.
    InvalidId,
    /// 400: the body is not JSON, or a field is missing, unknown or of the wrong type.
    InvalidJson,
    /// 401: auth is on and the token is missing, malformed, expired or wrongly signed.
    Unauthorized,
    /// 403: the token does not grant this board, or is read-only and the request writes.
    Forbidden,
    /// 404: no such board, note or route.
    NotFound,
    /// 405: the path exists, the method does not (`Allow` lists those that do).
    MethodNotAllowed,
    /// 412: `If-Match` does not match the note's current `version`.
    VersionMismatch,
    /// 408: the request head or body arrived too slowly.
    RequestTimeout,
    /// 413: a body over 64 KiB.
    PayloadTooLarge,
    /// 414: the request target is longer than the server accepts.
    UriTooLong,
    /// 415: a body that is not `application/json`.
    UnsupportedMediaType,
    /// 422: well-formed JSON (or a query parameter) whose value breaks a limit.
    ValidationFailed,
    /// 429: too many writes from one client (`Retry-After` says when to retry).
    RateLimited,
    /// 431: too many header fields, or a request head too large.
    HeadersTooLarge,
    /// 503: at stream capacity, database down, or shutting down (`Retry-After` set).
    Unavailable,
    /// 500: a bug or an unexpected database answer; never caused by input.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order the contract's table lists them.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidId,
        ErrorCode::InvalidJson,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::VersionMismatch,
        ErrorCode::RequestTimeout,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UriTooLong,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ValidationFailed,
        ErrorCode::RateLimited,
        ErrorCode::HeadersTooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The HTTP status every answer with this code has.
    pub fn status(self) -> StatusCode {
        use StatusCode as S;
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidId | ErrorCode::InvalidJson => S::BAD_REQUEST,
            ErrorCode::Unauthorized => S::UNAUTHORIZED,
            ErrorCode::Forbidden => S::FORBIDDEN,
            ErrorCode::NotFound => S::NOT_FOUND,
            ErrorCode::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
            ErrorCode::VersionMismatch => S::PRECONDITION_FAILED,
            ErrorCode::RequestTimeout => S::REQUEST_TIMEOUT,
            ErrorCode::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            ErrorCode::UriTooLong => S::URI_TOO_LONG,
            ErrorCode::UnsupportedMediaType => S::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::ValidationFailed => S::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => S::TOO_MANY_REQUESTS,
            ErrorCode::HeadersTooLarge => S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::Unavailable => S::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }
}

/// How one variant answers: its code (which fixes the status) and what its answer adds to
/// the error body.
struct Shape {
    code: ErrorCode,
    header: Option<(header::HeaderName, String)>,
    /// The rest of the request may still be trickling in: do not wait for it.
    close: bool,
}

impl Shape {
    fn new(code: ErrorCode) -> Shape {
        Shape {
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
        match self {
            ApiError::InvalidId(_) => Shape::new(ErrorCode::InvalidId),
            ApiError::InvalidJson(_) => Shape::new(ErrorCode::InvalidJson),
            ApiError::Unauthorized(_) => {
                Shape::new(ErrorCode::Unauthorized).with(header::WWW_AUTHENTICATE, "Bearer")
            }
            ApiError::Forbidden(_) => Shape::new(ErrorCode::Forbidden),
            ApiError::NotFound(_) => Shape::new(ErrorCode::NotFound),
            ApiError::MethodNotAllowed { allow, .. } => {
                Shape::new(ErrorCode::MethodNotAllowed).with(header::ALLOW, allow.clone())
            }
            ApiError::VersionMismatch { current } => {
                Shape::new(ErrorCode::VersionMismatch).with(header::ETAG, current.etag())
            }
            ApiError::RequestTimeout(_) => Shape::new(ErrorCode::RequestTimeout).closing(),
            ApiError::PayloadTooLarge(_) => Shape::new(ErrorCode::PayloadTooLarge),
            ApiError::UriTooLong(_) => Shape::new(ErrorCode::UriTooLong),
            ApiError::UnsupportedMediaType(_) => Shape::new(ErrorCode::UnsupportedMediaType),
            ApiError::Validation(_) => Shape::new(ErrorCode::ValidationFailed),
            ApiError::RateLimited {
                retry_after_secs, ..
            } => Shape::new(ErrorCode::RateLimited)
                .with(header::RETRY_AFTER, retry_after_secs.to_string()),
            ApiError::HeadersTooLarge(_) => Shape::new(ErrorCode::HeadersTooLarge).closing(),
            ApiError::Unavailable {
                retry_after_secs, ..
            } => Shape::new(ErrorCode::Unavailable)
                .with(header::RETRY_AFTER, retry_after_secs.to_string()),
            ApiError::Internal(_) => Shape::new(ErrorCode::Internal),
        }
    }

    /// The stable machine `code` of the error body.
    pub fn code(&self) -> ErrorCode {
        self.shape().code
    }

    /// The `{"code", "message"}` member every error body has under `error`.
    pub fn envelope(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code(),
            message: self.to_string(),
        }
    }

    /// 503 with `Retry-After: 5` ([`UNAVAILABLE_RETRY_AFTER_SECS`]).
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::Unavailable {
            message: message.into(),
            retry_after_secs: UNAVAILABLE_RETRY_AFTER_SECS,
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
        let mut response = HttpResponse::build(shape.code.status());
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
        self.shape().code.status()
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) = self {
            log::error!("internal error: {cause}");
        }
        let error = self.envelope();
        let mut response = self.response_builder();
        match self {
            ApiError::VersionMismatch { current } => response.json(VersionMismatchBody {
                error,
                note: current,
            }),
            _ => response.json(ErrorBody { error }),
        }
    }
}
