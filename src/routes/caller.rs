//! `Caller`: who is making an `/api` request, and what they may do.
//!
//! Every `/api` handler takes a `Caller` as its first argument, so no route can forget
//! authentication: with auth off the caller is `Anonymous` (known by IP address); with auth
//! on, extracting a `Caller` verifies the token (`Authorization: Bearer`, else
//! `?access_token=` for `EventSource`) and answers 401 when there is none or it does not
//! verify. A write (POST, PATCH, DELETE) is also refused here with 403 for a read-only token
//! and counted against the caller's write rate limit (429). The board-level checks
//! (`may_read`, `may_write`) need the board id, so handlers call them once they have parsed
//! it.

use std::time::SystemTime;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::Method, http::header, web};
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;

use super::request;
use crate::auth::{Claims, SECRET_MIN_BYTES, Tokens};
use crate::config::Settings;
use crate::domain::{ids::BoardId, viewer::ANONYMOUS};
use crate::error::ApiError;
use crate::limits::WriteLimiter;

/// How requests are authenticated and limited; one per process, in `app_data`.
pub struct Access {
    tokens: Option<Tokens>,
    writes: Option<WriteLimiter>,
    trust_proxy: bool,
}

impl Access {
    pub fn new(settings: &Settings) -> Access {
        if let Some(secret) = &settings.jwt_secret
            && secret.len() < SECRET_MIN_BYTES
        {
            log::warn!(
                "JWT_SECRET is shorter than {SECRET_MIN_BYTES} bytes: tokens signed with it can be forged by brute force; use a long random secret"
            );
        }
        Access {
            tokens: settings.jwt_secret.as_deref().map(Tokens::new),
            writes: WriteLimiter::new(settings.write_rate_limit),
            trust_proxy: settings.trust_proxy,
        }
    }

    /// The write limiter, when `WRITE_RATE_LIMIT` is not 0.
    pub fn write_limiter(&self) -> Option<&WriteLimiter> {
        self.writes.as_ref()
    }
}

/// The verified caller of an `/api` route.
#[derive(Debug)]
pub enum Caller {
    /// Auth is off: anyone, known by IP address (for limits only).
    Anonymous { ip: String },
    /// Auth is on and the token verified.
    Token(Box<Claims>),
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Caller, ApiError>>;

    /// Identifies the caller when first polled, not when the handler's arguments are built:
    /// a request refused by an argument before it (a malformed path id) is never counted
    /// against the write limit.
    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { identify(&req) })
    }
}

fn identify(req: &HttpRequest) -> Result<Caller, ApiError> {
    // Fail closed: without its access rules the server must not serve the API.
    let access = req
        .app_data::<web::Data<Access>>()
        .ok_or_else(|| ApiError::Internal("routes::Access is not registered".into()))?;
    let caller = match &access.tokens {
        None => Caller::Anonymous {
            ip: request::client_ip(req, access.trust_proxy),
        },
        Some(tokens) => {
            let token = presented_token(req)?;
            let claims = tokens
                .verify(&token)
                .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
            Caller::Token(Box::new(claims))
        }
    };
    // A signal changes nothing stored: read-only tokens may send them, and they have their
    // own limit per viewer (SIGNAL_RATE_LIMIT) instead of the write limit.
    let signal = req.match_pattern().as_deref() == Some(super::SIGNALS_ROUTE);
    if is_write(req.method()) && !signal {
        if let Caller::Token(claims) = &caller
            && claims.readonly
        {
            return Err(read_only());
        }
        if let Some(limiter) = &access.writes {
            limiter.check(&caller.client_key())?;
        }
    }
    Ok(caller)
}

fn is_write(method: &Method) -> bool {
    [Method::POST, Method::PATCH, Method::DELETE, Method::PUT].contains(method)
}

fn read_only() -> ApiError {
    ApiError::Forbidden("this token is read-only: it may read and stream, not write".into())
}

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

/// The token from `Authorization: Bearer …`, else from `?access_token=`; the header wins.
fn presented_token(req: &HttpRequest) -> Result<String, ApiError> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let bad =
            || ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into());
        let value = value.to_str().map_err(|_| bad())?.trim();
        let (scheme, token) = value.split_once(' ').ok_or_else(bad)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(bad());
        }
        return Ok(token.to_string());
    }
    let query = web::Query::<TokenQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::Unauthorized("send `access_token` at most once".into()))?;
    match query.into_inner().access_token {
        Some(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
        _ => Err(ApiError::Unauthorized(
            "this API needs a token: send `Authorization: Bearer <token>` (or `?access_token=<token>` from EventSource)"
                .into(),
        )),
    }
}

impl Caller {
    /// The client that rate limits and stream caps count against: the token's `sub`, or
    /// the IP address with auth off.
    pub fn client_key(&self) -> String {
        match self {
            Caller::Anonymous { ip } => format!("ip:{ip}"),
            Caller::Token(claims) => format!("sub:{}", claims.sub),
        }
    }

    /// The token's `sub`; `None` with auth off.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Caller::Token(claims) => Some(&claims.sub),
            Caller::Anonymous { .. } => None,
        }
    }

    /// 403 unless the caller may read `board`.
    pub fn may_read(&self, board: BoardId) -> Result<(), ApiError> {
        match self {
            Caller::Token(claims) if !claims.grants(board) => Err(ApiError::Forbidden(format!(
                "this token does not grant board {board}"
            ))),
            _ => Ok(()),
        }
    }

    /// 403 unless the caller may change `board` (or its notes).
    pub fn may_write(&self, board: BoardId) -> Result<(), ApiError> {
        self.may_read(board)?;
        match self {
            Caller::Token(claims) if claims.readonly => Err(read_only()),
            _ => Ok(()),
        }
    }

    /// 403 for a token limited to a list of boards, or read-only: only a token for every
    /// board may create one.
    pub fn may_create_boards(&self) -> Result<(), ApiError> {
        match self {
            Caller::Token(claims) if claims.readonly => Err(read_only()),
            Caller::Token(claims) if claims.boards.is_some() => Err(ApiError::Forbidden(
                "this token is limited to a list of boards and may not create boards".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The boards this caller may see; `None` is every board.
    pub fn visible_boards(&self) -> Option<&[BoardId]> {
        match self {
            Caller::Token(claims) => claims.boards.as_deref(),
            Caller::Anonymous { .. } => None,
        }
    }

    /// The `author` of what the caller writes: the token's `name`, else its `sub`; with auth
    /// off, `X-Display-Name` (else none).
    pub fn author(&self, req: &HttpRequest) -> Result<Option<String>, ApiError> {
        match self {
            Caller::Token(claims) => Ok(Some(claims.display_name().to_string())),
            Caller::Anonymous { .. } => request::writer_name(req),
        }
    }

    /// The caller's name in a board's presence: the token's `name`, else its `sub`; with
    /// auth off, `?name=` (else [`ANONYMOUS`]).
    pub fn viewer_name(&self, requested: Option<&str>) -> Result<String, ApiError> {
        let name = match self {
            Caller::Token(claims) => Some(claims.display_name().to_string()),
            Caller::Anonymous { .. } => match requested {
                Some(raw) => request::display_name(raw, "name")?,
                None => None,
            },
        };
        Ok(name.unwrap_or_else(|| ANONYMOUS.to_string()))
    }

    /// When the caller's access ends: the token's `exp` (auth off: never).
    pub fn expires_at(&self) -> Option<SystemTime> {
        match self {
            Caller::Token(claims) => claims.expires_at(),
            Caller::Anonymous { .. } => None,
        }
    }
}
