//! The URL map and the extractor error config: the whole API on one screen.

mod boards;
mod caller;
mod cors;
mod events;
mod health;
mod metrics;
mod notes;
mod presence;
mod request;
mod web_page;

use actix_web::{HttpRequest, HttpResponse, error, http::Method, web};

use crate::config::Settings;
use crate::db::Database;
use crate::error::ApiError;
use crate::realtime::Live;

pub use caller::{Access, Caller};
pub use cors::cors;

/// Largest request body accepted (the contract's 64 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
pub struct AppState {
    pub db: Database,
    pub live: Live,
    pub settings: Settings,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(query_config())
        .app_data(web::PayloadConfig::new(BODY_LIMIT))
        .service(
            web::resource("/api/boards")
                .route(web::get().to(boards::list))
                .route(web::post().to(boards::create))
                .default_service(web::to(not_allowed("GET, POST"))),
        )
        .service(
            web::resource("/api/boards/{board_id}")
                .route(web::get().to(boards::get))
                .route(web::patch().to(boards::rename))
                .route(web::delete().to(boards::delete))
                .default_service(web::to(not_allowed("GET, PATCH, DELETE"))),
        )
        .service(
            web::resource("/api/boards/{board_id}/notes")
                .route(web::get().to(notes::list))
                .route(web::post().to(notes::create))
                .default_service(web::to(not_allowed("GET, POST"))),
        )
        .service(
            web::resource("/api/boards/{board_id}/notes/{note_id}")
                .route(web::patch().to(notes::update))
                .route(web::delete().to(notes::delete))
                .default_service(web::to(not_allowed("PATCH, DELETE"))),
        )
        .service(
            web::resource("/api/boards/{board_id}/events")
                .route(web::get().to(events::stream))
                .default_service(web::to(not_allowed("GET"))),
        )
        .service(
            web::resource("/api/boards/{board_id}/presence")
                .route(web::get().to(presence::list))
                .default_service(web::to(not_allowed("GET"))),
        )
        .service(
            web::resource("/healthz")
                .route(web::get().to(health::healthz))
                .default_service(web::to(not_allowed("GET"))),
        )
        .service(
            web::resource("/readyz")
                .route(web::get().to(health::readyz))
                .default_service(web::to(not_allowed("GET"))),
        )
        .service(
            web::resource("/metrics")
                .route(web::get().to(metrics::metrics))
                .default_service(web::to(not_allowed("GET"))),
        );
    web_page::configure(cfg);
}

/// Answers 404 in the contract's JSON for any path no route serves.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

type Answer = Result<HttpResponse, ApiError>;

fn not_allowed(allow: &'static str) -> impl Fn(HttpRequest) -> std::future::Ready<Answer> + Clone {
    move |req: HttpRequest| {
        std::future::ready(Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        }))
    }
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(BODY_LIMIT)
        .error_handler(|err, req| {
            let api = match err {
                error::JsonPayloadError::OverflowKnownLength { .. }
                | error::JsonPayloadError::Overflow { .. } => ApiError::PayloadTooLarge(BODY_LIMIT),
                error::JsonPayloadError::ContentType => ApiError::UnsupportedMediaType(format!(
                    "the body must be JSON sent as Content-Type: application/json (got {})",
                    req.headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map_or_else(|| "no Content-Type".to_string(), |v| format!("{v:?}"))
                )),
                error::JsonPayloadError::Deserialize(e) => {
                    ApiError::InvalidJson(describe_json_error(&e))
                }
                error::JsonPayloadError::Payload(error::PayloadError::Overflow) => {
                    ApiError::PayloadTooLarge(BODY_LIMIT)
                }
                other => ApiError::InvalidJson(format!("the body could not be read: {other}")),
            };
            if req.method() == Method::GET {
                log::debug!("JSON body on a GET: {api}");
            }
            api.into()
        })
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

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::Validation(format!("the query string is not valid: {err}")).into()
    })
}
