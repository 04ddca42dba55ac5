//! Cross-origin access for the origins in `CORS_ORIGINS` (none by default: the page is
//! served from the API's own origin and needs no CORS).
//!
//! An allowed origin gets CORS headers on every answer (the API and the event stream, which
//! `EventSource` opens as a plain GET carrying `Last-Event-ID`); any other origin gets none,
//! so the browser keeps the answer from its page. Requests are never refused for their
//! `Origin` alone: a same-origin page sends one on every POST, and that must keep working.
//! A preflight that cannot pass (another origin, a method or header not listed) answers
//! 403 `forbidden` in the contract's JSON (`routes::edge` rewrites actix-cors' text).

use actix_cors::Cors;
use actix_web::http::{Method, header};

/// The CORS middleware for `origins` (exact `scheme://host[:port]` strings). Credentials
/// (cookies) are not supported: tokens travel in `Authorization` or the query.
pub fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
        ])
        // What browsers and EventSource polyfills send (the contract's list): polyfills
        // add `Cache-Control` and `Last-Event-ID` to the stream's GET.
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::HeaderName::from_static("last-event-id"),
            header::CACHE_CONTROL,
            header::ACCEPT,
            header::HeaderName::from_static("x-display-name"),
        ])
        .expose_headers([header::ETAG, header::LOCATION, header::RETRY_AFTER])
        // Another origin is answered without CORS headers, not refused (see above).
        .block_on_origin_mismatch(false)
        .max_age(3600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}
