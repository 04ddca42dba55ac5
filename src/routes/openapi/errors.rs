//! Which error answers each operation documents, decided from what the operation is (its
//! path ids, body, parameters, method) rather than listed by hand on every handler, so a
//! new handler gets them right and a new [`ErrorCode`] must be placed here (the match in
//! [`answers`] is exhaustive).

use std::collections::BTreeMap;

use utoipa::openapi::{
    ContentBuilder, Ref, RefOr, ResponseBuilder,
    header::HeaderBuilder,
    path::{Operation, ParameterIn},
    schema::{ObjectBuilder, Type},
};

use crate::error::ErrorCode;

/// What decides an operation's error answers.
pub struct Facts {
    /// Under `/api/` and not public: auth applies.
    pub authenticated: bool,
    /// Names boards or notes by id: in its path (`{board_id}`, `{note_id}`) or in the
    /// many-board stream's `boards` list (each may be malformed, missing or forbidden).
    pub path_id: bool,
    pub body: bool,
    /// POST, PATCH or DELETE: counted against the write limit, refused to read-only tokens.
    pub write: bool,
    /// Takes query or header parameters the server validates.
    pub parameters: bool,
    pub if_match: bool,
    /// Reads the database (or opens a stream): 503 when it is down or full.
    pub database: bool,
}

impl Facts {
    pub fn of(path: &str, method: &str, op: &Operation) -> Facts {
        let params: Vec<_> = op
            .parameters
            .iter()
            .flatten()
            .filter_map(|p| match p {
                RefOr::T(p) => Some(p),
                RefOr::Ref(_) => None,
            })
            .collect();
        let public = op
            .security
            .as_ref()
            .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
        let api = path.starts_with("/api/");
        Facts {
            authenticated: api && !public,
            path_id: params
                .iter()
                .any(|p| p.parameter_in == ParameterIn::Path || p.name == "boards"),
            body: op.request_body.is_some(),
            write: matches!(method, "post" | "patch" | "delete"),
            parameters: params
                .iter()
                .any(|p| matches!(p.parameter_in, ParameterIn::Query | ParameterIn::Header)),
            if_match: params.iter().any(|p| p.name == "If-Match"),
            database: api && !public,
        }
    }
}

/// Whether an operation can answer with this code. Exhaustive on purpose: a new code does
/// not compile until it is placed.
pub fn answers(code: ErrorCode, f: &Facts) -> bool {
    match code {
        ErrorCode::InvalidId | ErrorCode::NotFound => f.path_id,
        ErrorCode::InvalidJson | ErrorCode::PayloadTooLarge | ErrorCode::UnsupportedMediaType => {
            f.body
        }
        // The edge answers these before routing, to any request.
        ErrorCode::BadRequest
        | ErrorCode::RequestTimeout
        | ErrorCode::UriTooLong
        | ErrorCode::HeadersTooLarge => true,
        ErrorCode::Unauthorized => f.authenticated,
        ErrorCode::Forbidden => f.authenticated && (f.path_id || f.write),
        ErrorCode::ValidationFailed => f.body || f.parameters,
        ErrorCode::VersionMismatch => f.if_match,
        ErrorCode::RateLimited => f.authenticated && f.write,
        ErrorCode::Unavailable => f.database,
        // Answered to methods a path does not have, which are not operations; the
        // document's description says so.
        ErrorCode::MethodNotAllowed => false,
        // A bug, never an answer to input: not part of any operation's contract.
        ErrorCode::Internal => false,
    }
}

/// The codes an operation answers, grouped by status.
pub fn by_status(f: &Facts) -> BTreeMap<u16, Vec<ErrorCode>> {
    let mut out: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in ErrorCode::ALL {
        if answers(code, f) {
            out.entry(code.status().as_u16()).or_default().push(code);
        }
    }
    out
}

/// The code as error bodies spell it.
pub fn spelled(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The response object for one status: the error body (412 adds the note), the codes it
/// may carry, and the headers that come with them.
pub fn response(codes: &[ErrorCode]) -> utoipa::openapi::Response {
    let names: Vec<String> = codes.iter().map(|c| format!("`{}`", spelled(*c))).collect();
    let body = if codes.contains(&ErrorCode::VersionMismatch) {
        "VersionMismatchBody"
    } else {
        "ErrorBody"
    };
    let mut response = ResponseBuilder::new()
        .description(format!("Error: {}.", names.join(", ")))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(body)))
                .build(),
        );
    let text = || ObjectBuilder::new().schema_type(Type::String);
    let seconds = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
    };
    for code in codes {
        response = match code {
            ErrorCode::Unauthorized => response.header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(Some(text()))
                    .description(Some("`Bearer`"))
                    .build(),
            ),
            ErrorCode::RateLimited | ErrorCode::Unavailable => response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(seconds()))
                    .description(Some("Seconds to wait before trying again."))
                    .build(),
            ),
            ErrorCode::VersionMismatch => response.header(
                "ETag",
                HeaderBuilder::new()
                    .schema(Some(text()))
                    .description(Some("The note's current version, quoted."))
                    .build(),
            ),
            _ => response,
        };
    }
    response.build()
}
