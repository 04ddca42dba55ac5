//! The API's OpenAPI 3.1 document, derived from the handlers (`#[utoipa::path]`) and the
//! types they read and answer (`ToSchema`). Served at `GET /api/openapi.json` (no token
//! needed) and printed by `boardcast openapi`; `docs/openapi.json` is that output, checked
//! in so changes show in review, and a test fails when it is stale.
//!
//! What the derive cannot know is added by the modifiers below: the security schemes, the
//! error answers of every operation (`errors`), and what each stream event carries
//! (`stream`).

#[cfg(test)]
mod api_md;
mod errors;
pub mod params;
pub mod stream;

use std::sync::LazyLock;

use actix_web::{HttpResponse, http::header};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        RefOr,
        security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        },
    },
};

use super::{boards, events, health, metrics, notes, presence, signals};

pub use errors::{answers, by_status, spelled};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "boardcast",
        description = "Shared whiteboards: boards and sticky notes over REST, every change \
            streamed as Server-Sent Events.\n\n\
            Errors are `{\"error\": {\"code\", \"message\"}}` with a stable `code` \
            ([ErrorCode](#/components/schemas/ErrorCode)). Every `GET` also answers `HEAD` \
            (same headers, no body). A method a path does not have answers 405 \
            `method_not_allowed` with `Allow`; a path no route serves, 404 `not_found`.\n\n\
            Auth is off unless the server has `JWT_SECRET`; then every `/api` operation but \
            this document needs an HS256 token (`Authorization: Bearer`, or \
            `?access_token=` on the stream).",
    ),
    paths(
        boards::list,
        boards::create,
        boards::get,
        boards::rename,
        boards::delete,
        notes::list,
        notes::create,
        notes::update,
        notes::delete,
        events::stream,
        events::stream_many,
        presence::list,
        signals::send,
        spec,
        health::healthz,
        health::readyz,
        metrics::metrics,
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::error::ErrorDetail,
        crate::error::ErrorCode,
        crate::error::VersionMismatchBody<'_>,
        stream::SnapshotEvent,
        stream::PresenceEvent,
        stream::PresenceChangeEvent,
        stream::PresenceCountEvent,
        stream::ChangeEvent,
        stream::HeartbeatEvent,
    )),
    tags(
        (name = "boards", description = "Boards: a title and a sequence of events."),
        (name = "notes", description = "Sticky notes on a board; writes may be conditional (`If-Match`)."),
        (name = "stream", description = "The live event stream and who is watching."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
    ),
    modifiers(&Security, &ErrorAnswers, &StreamEvents),
)]
struct ApiDoc;

/// The document, as built from the code.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON with a final newline: what `docs/openapi.json` holds.
pub fn to_json() -> String {
    let mut text = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialize: {e}\"}}"));
    text.push('\n');
    text
}

static JSON: LazyLock<String> = LazyLock::new(to_json);

/// This document (OpenAPI 3.1). Needs no token, even with auth on.
#[utoipa::path(
    get,
    operation_id = "openapi",
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document.", content_type = "application/json", body = Object)),
    security(()),
)]
pub async fn spec() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(JSON.as_str())
}

/// The security schemes, and "a bearer token, or none" on every operation that does not
/// say otherwise (whether a token is needed depends on the server's `JWT_SECRET`).
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An HS256 JWT signed with the server's JWT_SECRET (`boardcast token`). \
                         Claims: `sub`, `exp`, optional `name`, `boards`, `readonly`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "access_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "access_token",
                "The same token as a query parameter, for EventSource (which cannot set \
                 headers). Only the event stream reads it.",
            ))),
        );
        let default = vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::default(),
        ];
        for (_, _, op) in operations(doc) {
            op.security.get_or_insert_with(|| default.clone());
        }
    }
}

/// Every operation's error answers (see `errors`).
struct ErrorAnswers;

impl Modify for ErrorAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, method, op) in operations(doc) {
            let facts = errors::Facts::of(&path, method, op);
            for (status, codes) in by_status(&facts) {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::T(errors::response(&codes)));
            }
        }
    }
}

/// The stream's description, and the schema of one event as an SSE parser reads it
/// (`event`, `id`, `data`), with the JSON in `data` described per event name through
/// `contentMediaType` / `contentSchema` (JSON Schema 2020-12, which OpenAPI 3.1 uses; what
/// Schemathesis checks a stream's events against). Both come from `stream::EVENTS`.
struct StreamEvents;

impl Modify for StreamEvents {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let schema: Option<utoipa::openapi::schema::Schema> =
            serde_json::from_value(stream::event_schema()).ok();
        for (path, _, op) in operations(doc) {
            let Some(RefOr::T(ok)) = op.responses.responses.get_mut("200") else {
                continue;
            };
            let Some(RefOr::T(content)) = ok.content.get_mut("text/event-stream") else {
                continue;
            };
            ok.description = stream::description(path == stream::MANY_BOARDS_PATH);
            content.schema = schema.clone().map(RefOr::T);
        }
    }
}

/// Every operation of the document with its path and lower-case method.
fn operations(
    doc: &mut utoipa::openapi::OpenApi,
) -> Vec<(String, &'static str, &mut utoipa::openapi::path::Operation)> {
    let mut out = Vec::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [
            ("get", item.get.as_mut()),
            ("put", item.put.as_mut()),
            ("post", item.post.as_mut()),
            ("delete", item.delete.as_mut()),
            ("patch", item.patch.as_mut()),
            ("head", item.head.as_mut()),
            ("options", item.options.as_mut()),
            ("trace", item.trace.as_mut()),
        ] {
            if let Some(op) = op {
                out.push((path.clone(), method, op));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::error::ErrorCode;

    /// The regeneration command every failure message names.
    const REGENERATE: &str = "run `cargo run -- openapi > docs/openapi.json`";

    fn json() -> serde_json::Value {
        serde_json::from_str(&to_json()).expect("the document is JSON")
    }

    #[test]
    fn the_checked_in_document_is_what_the_code_generates() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let checked_in = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {path} ({e}): {REGENERATE}"));
        assert!(
            checked_in == to_json(),
            "docs/openapi.json differs from what the code generates: {REGENERATE}"
        );
    }

    /// The pages people open in a browser: routed, but not part of the API.
    const PAGES: &[&str] = &["/", "/b/{board_id}", "/static/{file}", "/docs"];

    #[test]
    fn every_route_is_documented_and_every_documented_route_is_routed() {
        let routed: BTreeSet<(String, String)> = crate::routes::route_table()
            .into_iter()
            .filter(|(path, _)| !PAGES.contains(path))
            .flat_map(|(path, methods)| {
                let has_get = methods.contains(&actix_web::http::Method::GET);
                methods
                    .into_iter()
                    // Every GET answers HEAD too; the document says so once.
                    .filter(move |m| !(has_get && *m == actix_web::http::Method::HEAD))
                    .map(move |m| (m.as_str().to_string(), path.to_string()))
            })
            .collect();
        let doc = json();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let missing: Vec<String> = routed
            .difference(&documented)
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        assert!(
            missing.is_empty(),
            "routed but not in the OpenAPI document: {missing:?}. Give each handler a \
             #[utoipa::path(...)] and list it in `paths(...)` in src/routes/openapi/mod.rs \
             (or, for a page, in PAGES here), then {REGENERATE}"
        );
        let stale: Vec<String> = documented
            .difference(&routed)
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        assert!(
            stale.is_empty(),
            "in the OpenAPI document but not routed: {stale:?}. Remove them from `paths(...)` \
             in src/routes/openapi/mod.rs (or route them in src/routes/mod.rs), then {REGENERATE}"
        );
        for page in PAGES {
            assert!(
                doc["paths"].get(*page).is_none(),
                "{page} is a page, not an API route"
            );
        }
    }

    #[test]
    fn it_is_openapi_3_1_with_unique_operation_ids() {
        let doc = json();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut seen = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let id = op["operationId"].as_str().unwrap_or_else(|| {
                    panic!("{method} {path} has no operationId: add `operation_id = \"…\"` to its #[utoipa::path]")
                });
                assert!(
                    seen.insert(id.to_string()),
                    "operationId {id} is used twice"
                );
            }
        }
    }

    /// Every code of `ErrorCode` is in the document's enum and answered, with its status,
    /// by the operations that can meet it; the two that no operation answers are explained
    /// in the document's description or are bugs by definition.
    #[test]
    fn every_error_code_is_documented_with_its_status() {
        let doc = json();
        let listed: Vec<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode enum")
            .iter()
            .map(|v| v.as_str().expect("string").to_string())
            .collect();
        let all: Vec<String> = ErrorCode::ALL.into_iter().map(spelled).collect();
        assert_eq!(
            listed, all,
            "ErrorCode::ALL must list every variant of ErrorCode, in its order"
        );
        let description = doc["info"]["description"].as_str().expect("description");
        for code in ErrorCode::ALL {
            let name = spelled(code);
            let status = code.status().as_u16().to_string();
            let answered = doc["paths"]
                .as_object()
                .expect("paths")
                .values()
                .flat_map(|item| item.as_object().expect("item").values())
                .filter_map(|op| op["responses"].get(&status))
                .any(|r| {
                    r["description"]
                        .as_str()
                        .is_some_and(|d| d.contains(&format!("`{name}`")))
                });
            match code {
                ErrorCode::MethodNotAllowed => assert!(
                    description.contains(&format!("`{name}`")),
                    "the document's description must explain `{name}`"
                ),
                ErrorCode::Internal => assert!(!answered, "`internal` is a bug, not an answer"),
                _ => assert!(
                    answered,
                    "no operation answers {status} `{name}`: say which do in \
                     src/routes/openapi/errors.rs (answers), then {REGENERATE}"
                ),
            }
        }
    }

    #[test]
    fn every_stream_event_schema_is_a_component() {
        let doc = json();
        for path in ["/api/boards/{board_id}/events", stream::MANY_BOARDS_PATH] {
            every_event_of(&doc, path);
        }
    }

    fn every_event_of(doc: &serde_json::Value, path: &str) {
        let stream = doc["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"]
            ["schema"]
            .to_string();
        for (name, _, schema) in stream::EVENTS {
            assert!(
                stream.contains(&format!("\"#/components/schemas/{schema}\"")),
                "event {name}: the stream's schema does not describe its data"
            );
            assert!(
                doc["components"]["schemas"].get(*schema).is_some(),
                "event {name}: schema {schema} is not in components: add it to \
                 #[openapi(components(schemas(…)))]"
            );
        }
    }

    #[test]
    fn error_bodies_have_the_documented_members() {
        // The error body the server sends has exactly the documented members.
        let body = serde_json::to_value(crate::error::ErrorBody {
            error: crate::error::ErrorDetail {
                code: ErrorCode::NotFound,
                message: "board x does not exist".into(),
            },
        })
        .expect("serializes");
        assert_eq!(body["error"]["code"], "not_found");
        let doc = json();
        let detail = &doc["components"]["schemas"]["ErrorDetail"]["required"];
        assert_eq!(detail, &serde_json::json!(["code", "message"]));
    }
}
