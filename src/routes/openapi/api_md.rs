//! docs/API.md against the code. The OpenAPI document is generated from the code; API.md is
//! written by hand for people, so only these tests keep it in step: the routes of its
//! tables, the codes of its error table and its list of event types must be exactly what
//! the server has, both ways.

use std::collections::BTreeSet;

use actix_web::http::Method;

use crate::domain::event::{EventKind, EventName};
use crate::error::ErrorCode;

const API_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md");

fn api_md() -> String {
    std::fs::read_to_string(API_MD).unwrap_or_else(|e| panic!("cannot read {API_MD}: {e}"))
}

/// The cells of every table row (a line starting with `|`), header rows included.
fn table_rows(md: &str) -> Vec<Vec<&str>> {
    md.lines()
        .map(str::trim)
        .filter(|line| line.starts_with('|'))
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

/// The `code spans` of a piece of markdown.
fn code_spans(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// `{board_id}` in the code is `{id}` in the prose: paths are compared with their
/// parameters' names left out.
fn unnamed_params(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("{}");
            }
            '}' => inside = false,
            _ if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// `METHOD /path` for every route the server has. HEAD is left out where GET is there:
/// API.md says once that every GET answers HEAD.
fn routed() -> BTreeSet<String> {
    crate::routes::route_table()
        .into_iter()
        .flat_map(|(path, methods)| {
            let has_get = methods.contains(&Method::GET);
            methods
                .into_iter()
                .filter(move |m| !(has_get && *m == Method::HEAD))
                .map(move |m| format!("{m} {}", unnamed_params(path)))
        })
        .collect()
}

/// `METHOD /path` for every route in the first column of API.md's tables, without its query.
fn documented_routes(md: &str) -> BTreeSet<String> {
    const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
    table_rows(md)
        .into_iter()
        .filter_map(|cells| cells.first().copied())
        .flat_map(code_spans)
        .filter_map(|span| {
            let (method, target) = span.split_once(' ')?;
            METHODS.contains(&method).then_some(())?;
            let path = target.split('?').next().unwrap_or(target);
            Some(format!("{method} {}", unnamed_params(path)))
        })
        .collect()
}

/// `(status, code)` of every row of API.md's error table (`| 404 | `not_found` | … |`).
fn documented_errors(md: &str) -> BTreeSet<(u16, String)> {
    table_rows(md)
        .into_iter()
        .filter_map(|cells| {
            let status = cells.first()?.parse::<u16>().ok()?;
            let code = code_spans(cells.get(1)?).next()?;
            Some((status, code.to_string()))
        })
        .collect()
}

/// The names listed after `Event types:`, up to the end of that paragraph.
fn documented_events(md: &str) -> BTreeSet<String> {
    let start = md
        .find("Event types:")
        .unwrap_or_else(|| panic!("{API_MD} has no `Event types:` paragraph"));
    let paragraph = md[start..].split("\n\n").next().unwrap_or_default();
    code_spans(paragraph).map(str::to_string).collect()
}

/// Both ways at once, each difference named with where to fix it.
fn assert_same<T: Ord + std::fmt::Debug>(
    what: &str,
    code: &BTreeSet<T>,
    doc: &BTreeSet<T>,
    fix_doc: &str,
) {
    let undocumented: Vec<&T> = code.difference(doc).collect();
    let stale: Vec<&T> = doc.difference(code).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/API.md and the code differ in their {what}: not in docs/API.md: \
         {undocumented:?}; in docs/API.md but not in the code: {stale:?}. {fix_doc}"
    );
}

#[test]
fn every_route_is_in_api_md_and_every_route_there_is_routed() {
    assert_same(
        "routes",
        &routed(),
        &documented_routes(&api_md()),
        "Each route is a row of a table, its first cell `METHOD /path` (src/routes/mod.rs).",
    );
}

#[test]
fn every_error_code_is_in_api_md_with_its_status() {
    // Fails to compile when ErrorCode gains a variant: add it to ErrorCode::ALL as well.
    let listed = |code: ErrorCode| match code {
        ErrorCode::BadRequest
        | ErrorCode::InvalidId
        | ErrorCode::InvalidJson
        | ErrorCode::Unauthorized
        | ErrorCode::Forbidden
        | ErrorCode::NotFound
        | ErrorCode::MethodNotAllowed
        | ErrorCode::VersionMismatch
        | ErrorCode::RequestTimeout
        | ErrorCode::PayloadTooLarge
        | ErrorCode::UriTooLong
        | ErrorCode::UnsupportedMediaType
        | ErrorCode::ValidationFailed
        | ErrorCode::RateLimited
        | ErrorCode::HeadersTooLarge
        | ErrorCode::Unavailable
        | ErrorCode::Internal => (code.status().as_u16(), super::spelled(code)),
    };
    let code: BTreeSet<(u16, String)> = ErrorCode::ALL.into_iter().map(listed).collect();
    assert_same(
        "error codes",
        &code,
        &documented_errors(&api_md()),
        "The error table's rows are `| status | `code` | when |` (src/error.rs, ErrorCode).",
    );
}

#[test]
fn every_event_type_the_server_sends_is_listed_in_api_md() {
    // Fails to compile when EventName or EventKind gains a variant: add it to their ALL.
    let listed = |name: EventName| match name {
        EventName::Snapshot
        | EventName::Presence
        | EventName::PresenceJoined
        | EventName::PresenceLeft
        | EventName::PresenceCount
        | EventName::Signal
        | EventName::Heartbeat
        | EventName::Change(
            EventKind::BoardUpdated
            | EventKind::BoardDeleted
            | EventKind::NoteCreated
            | EventKind::NoteUpdated
            | EventKind::NoteDeleted,
        ) => name.as_str().to_string(),
    };
    let sent: BTreeSet<String> = EventName::ALL.into_iter().map(listed).collect();
    assert_eq!(sent.len(), EventName::ALL.len(), "a name is listed twice");
    assert_same(
        "event types",
        &sent,
        &documented_events(&api_md()),
        "The names are the code spans of the paragraph starting `Event types:` \
         (src/domain/event.rs, EventName).",
    );
}
