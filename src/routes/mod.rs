//! The URL map and the extractor error config: the whole API on one screen.

mod boards;
mod caller;
mod cors;
mod edge;
mod events;
mod health;
mod media_type;
mod metrics;
mod notes;
pub mod openapi;
mod presence;
mod request;
mod signals;
mod web_page;

use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Responder, http::Method, web};

use crate::config::Settings;
use crate::db::Database;
use crate::error::ApiError;
use crate::realtime::Live;

pub(crate) use caller::{Access, Caller};
pub(crate) use cors::cors;
pub(crate) use edge::edge;

/// Largest request body accepted (the contract's 64 KiB).
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
pub(crate) struct AppState {
    pub db: Database,
    pub live: Live,
    pub settings: Settings,
}

/// The signal route: a POST that writes nothing, so the write checks skip it.
pub(crate) const SIGNALS_ROUTE: &str = "/api/boards/{board_id}/signals";

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(query_config());
    for resource in resources() {
        cfg.service(resource.build());
    }
}

/// Every path the server routes, and its methods (HEAD included), in routing order: what
/// the tests compare with the OpenAPI document and docs/API.md.
#[cfg(test)]
pub(crate) fn route_table() -> Vec<(&'static str, Vec<Method>)> {
    resources()
        .into_iter()
        .map(|r| (r.path, r.routes.iter().map(|(m, _)| m.clone()).collect()))
        .collect()
}

/// The route table. `openapi` documents every `/api` and operations route listed here (a
/// test fails when one is missing); the pages are left to `web_page`.
fn resources() -> Vec<Resource> {
    [
        Resource::new("/api/boards")
            .get(boards::list)
            .post(boards::create),
        Resource::new("/api/boards/{board_id}")
            .get(boards::get)
            .patch(boards::rename)
            .delete(boards::delete),
        Resource::new("/api/boards/{board_id}/notes")
            .get(notes::list)
            .post(notes::create),
        Resource::new("/api/boards/{board_id}/notes/{note_id}")
            .patch(notes::update)
            .delete(notes::delete),
        // HEAD of the stream answers its headers without opening anything.
        Resource::new("/api/boards/{board_id}/events").get_and_head(events::stream, events::head),
        Resource::new(SIGNALS_ROUTE).post(signals::send),
        Resource::new("/api/events").get_and_head(events::stream_many, events::head_many),
        Resource::new("/api/boards/{board_id}/presence").get(presence::list),
        Resource::new("/api/openapi.json").get(openapi::spec),
        Resource::new("/healthz").get(health::healthz),
        Resource::new("/readyz").get(health::readyz),
        Resource::new("/metrics").get(metrics::metrics),
    ]
    .into_iter()
    .chain(web_page::resources())
    .collect()
}

/// One path of the route table and its methods. The 405 answer and its `Allow` header are
/// derived from the methods registered here, so they cannot drift from the routes; every
/// GET is also answered for HEAD (RFC 9110 §9.3.2: same headers, no body).
pub(crate) struct Resource {
    path: &'static str,
    routes: Vec<(Method, actix_web::Route)>,
}

impl Resource {
    pub fn new(path: &'static str) -> Resource {
        Resource {
            path,
            routes: Vec::new(),
        }
    }

    fn on<F, Args>(mut self, method: Method, handler: F) -> Resource
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let route = web::route().method(method.clone()).to(handler);
        self.routes.push((method, route));
        self
    }

    /// GET, and HEAD with the same handler (actix sends the headers without the body).
    pub fn get<F, Args>(self, handler: F) -> Resource
    where
        F: Handler<Args> + Clone,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.get_and_head(handler.clone(), handler)
    }

    /// GET, and HEAD with a handler of its own (for answers whose GET has side effects).
    pub fn get_and_head<F, Args, H, HArgs>(self, get: F, head: H) -> Resource
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
        H: Handler<HArgs>,
        HArgs: FromRequest + 'static,
        H::Output: Responder + 'static,
    {
        self.on(Method::GET, get).on(Method::HEAD, head)
    }

    pub fn post<F, Args>(self, handler: F) -> Resource
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::POST, handler)
    }

    pub fn patch<F, Args>(self, handler: F) -> Resource
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::PATCH, handler)
    }

    pub fn delete<F, Args>(self, handler: F) -> Resource
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::DELETE, handler)
    }

    /// The `Allow` value: the methods in the order registered.
    pub fn allow(&self) -> String {
        let methods: Vec<&str> = self.routes.iter().map(|(m, _)| m.as_str()).collect();
        methods.join(", ")
    }

    pub fn build(self) -> actix_web::Resource {
        let allow = self.allow();
        let mut resource = web::resource(self.path);
        for (_, route) in self.routes {
            resource = resource.route(route);
        }
        resource.default_service(web::to(move |req: HttpRequest| {
            std::future::ready(Err::<HttpResponse, _>(ApiError::MethodNotAllowed {
                method: req.method().to_string(),
                allow: allow.clone(),
            }))
        }))
    }
}

/// Answers 404 in the contract's JSON for any path no route serves.
pub(crate) async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        // No method in the text: HEAD's answer must have GET's length.
        "no route for {}",
        req.path()
    )))
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::Validation(format!("the query string is not valid: {err}")).into()
    })
}
