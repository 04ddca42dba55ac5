//! The pages people use: `/` (the board list), `/b/{id}` (one board), `/docs` (the API
//! reference) and their scripts and styles under `/static/`.
//!
//! Every file is embedded in the binary with `include_bytes!`, so the one executable Heroku
//! runs serves the whole product and there is no directory to ship or misconfigure. Static
//! files come from an explicit allow-list matched on the exact name: an unknown name is a
//! 404, so no request path can ever reach outside `web/` (there is no file system access at
//! all).
//!
//! Pages and files carry a strict Content-Security-Policy: scripts, styles and connections
//! only from this origin, no inline script or style attribute, no framing. The pages are
//! written for it (they set positions through the CSSOM, which CSP allows).

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, HeaderValue},
    web,
};

use crate::error::ApiError;

/// The policy every page and file is served with.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// The policy of `/docs`, which renders the OpenAPI document with Redoc (vendored in
/// `web/vendor/`, served from this origin). It differs from the pages' policy in two
/// places, both needed by Redoc and neither opening scripts or connections to anyone:
/// `style-src 'unsafe-inline'`, because Redoc styles itself with styled-components, which
/// writes `<style>` elements at run time (their text is generated, so hashes cannot list
/// it); and `worker-src blob:`, because its search index runs in a worker Redoc builds
/// from a blob. Scripts stay `'self'` only, connections too.
pub const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self' 'unsafe-inline'; script-src 'self'; worker-src blob:; \
     connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// One embedded file.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const INDEX_HTML: Asset = Asset {
    content_type: HTML,
    body: include_bytes!("../../web/index.html"),
};

const BOARD_HTML: Asset = Asset {
    content_type: HTML,
    body: include_bytes!("../../web/board.html"),
};

const DOCS_HTML: Asset = Asset {
    content_type: HTML,
    body: include_bytes!("../../web/docs.html"),
};

/// The files `/static/{file}` may serve, by exact name. Anything else is not found.
pub fn static_asset(name: &str) -> Option<Asset> {
    let (content_type, body): (&'static str, &'static [u8]) = match name {
        "app.css" => (CSS, include_bytes!("../../web/app.css")),
        "api.js" => (JAVASCRIPT, include_bytes!("../../web/api.js")),
        "board.js" => (JAVASCRIPT, include_bytes!("../../web/board.js")),
        "board-core.js" => (JAVASCRIPT, include_bytes!("../../web/board-core.js")),
        "board-stream.js" => (JAVASCRIPT, include_bytes!("../../web/board-stream.js")),
        "stream-worker.js" => (JAVASCRIPT, include_bytes!("../../web/stream-worker.js")),
        "boardcast-client.js" => (JAVASCRIPT, include_bytes!("../../web/boardcast-client.js")),
        "live.js" => (JAVASCRIPT, include_bytes!("../../web/live.js")),
        "view.js" => (JAVASCRIPT, include_bytes!("../../web/view.js")),
        "outbox.js" => (JAVASCRIPT, include_bytes!("../../web/outbox.js")),
        "merge.js" => (JAVASCRIPT, include_bytes!("../../web/merge.js")),
        "undo.js" => (JAVASCRIPT, include_bytes!("../../web/undo.js")),
        "index.js" => (JAVASCRIPT, include_bytes!("../../web/index.js")),
        "signin.js" => (JAVASCRIPT, include_bytes!("../../web/signin.js")),
        "docs.js" => (JAVASCRIPT, include_bytes!("../../web/docs.js")),
        // Redoc 2.5.4 from npm, as published (scripts/vendor-redoc).
        "redoc.standalone.js" => (
            JAVASCRIPT,
            include_bytes!("../../web/vendor/redoc.standalone.js"),
        ),
        // diff-match-patch-es 2.0.1 from npm, as published (scripts/vendor-dmp).
        "diff-match-patch-es.js" => (
            JAVASCRIPT,
            include_bytes!("../../web/vendor/diff-match-patch-es.js"),
        ),
        "icon.svg" => (SVG, include_bytes!("../../web/icon.svg")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

/// The pages' routes, for the route table in `routes`.
pub fn resources() -> [super::Resource; 4] {
    [
        super::Resource::new("/").get(index),
        super::Resource::new("/b/{board_id}").get(board),
        super::Resource::new("/docs").get(docs),
        super::Resource::new("/static/{file}").get(file),
    ]
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, INDEX_HTML)
}

/// The page reads the board id from its own address, so any id gets the page; one that
/// names no board is reported by the page itself (the API answers it 400 or 404).
async fn board(req: HttpRequest) -> HttpResponse {
    serve(&req, BOARD_HTML)
}

/// The API reference: the OpenAPI document rendered by Redoc.
async fn docs(req: HttpRequest) -> HttpResponse {
    serve_with(&req, DOCS_HTML, DOCS_CONTENT_SECURITY_POLICY)
}

async fn file(req: HttpRequest, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let asset = static_asset(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no static file named {:?}", name.as_str())))?;
    Ok(serve(&req, asset))
}

/// A strong validator for an embedded body: FNV-1a over its bytes, computed per answer
/// (the files are a few kilobytes; this costs microseconds).
fn etag(body: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

fn serve(req: &HttpRequest, asset: Asset) -> HttpResponse {
    serve_with(req, asset, CONTENT_SECURITY_POLICY)
}

fn serve_with(req: &HttpRequest, asset: Asset, policy: &'static str) -> HttpResponse {
    let tag = etag(asset.body);
    // `no-cache` revalidates every time; the ETag makes that a cheap 304 after a deploy
    // has not changed the file, and a fresh copy when it has.
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut answer = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    answer
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, tag))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(policy),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    if fresh {
        answer.finish()
    } else {
        answer
            .insert_header((header::CONTENT_TYPE, asset.content_type))
            .body(asset.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_file_is_served_with_its_type() {
        for (name, kind) in [
            ("app.css", "text/css"),
            ("api.js", "text/javascript"),
            ("board.js", "text/javascript"),
            ("board-core.js", "text/javascript"),
            ("boardcast-client.js", "text/javascript"),
            ("board-stream.js", "text/javascript"),
            ("stream-worker.js", "text/javascript"),
            ("live.js", "text/javascript"),
            ("index.js", "text/javascript"),
            ("signin.js", "text/javascript"),
            ("docs.js", "text/javascript"),
            ("redoc.standalone.js", "text/javascript"),
            ("icon.svg", "image/svg+xml"),
        ] {
            let asset = static_asset(name).unwrap_or_else(|| panic!("{name} is listed"));
            assert!(asset.content_type.starts_with(kind), "{name}");
            assert!(!asset.body.is_empty(), "{name}");
        }
    }

    #[test]
    fn names_outside_the_list_are_not_found() {
        for name in [
            "",
            "index.html",
            "board.html",
            "../Cargo.toml",
            "..%2FCargo.toml",
            "/etc/passwd",
            "app.css/",
            "APP.CSS",
            "app.css.map",
            "app.css\0",
        ] {
            assert!(static_asset(name).is_none(), "{name:?} must not be served");
        }
    }

    #[test]
    fn the_pages_load_nothing_inline() {
        for page in [INDEX_HTML, BOARD_HTML, DOCS_HTML] {
            let text = std::str::from_utf8(page.body).expect("pages are UTF-8");
            assert!(!text.contains("style=\""), "no inline style attribute");
            assert!(!text.contains("<style"), "no inline style element");
            for script in text.split("<script").skip(1) {
                assert!(
                    script.contains("src=\"/static/"),
                    "every script is a file: {script}"
                );
            }
        }
    }

    #[test]
    fn the_docs_policy_loosens_only_styles_and_workers() {
        let directives = |policy: &str| -> Vec<String> {
            policy.split(';').map(|d| d.trim().to_string()).collect()
        };
        let pages = directives(CONTENT_SECURITY_POLICY);
        let docs = directives(DOCS_CONTENT_SECURITY_POLICY);
        let added: Vec<&String> = docs.iter().filter(|d| !pages.contains(d)).collect();
        assert_eq!(
            added,
            ["style-src 'self' 'unsafe-inline'", "worker-src blob:"],
            "scripts and connections stay same-origin on /docs"
        );
        assert_eq!(
            pages.len() + 1,
            docs.len(),
            "one directive replaced, one added"
        );
    }

    #[actix_web::test]
    async fn pages_carry_the_security_headers() {
        let app = actix_web::test::init_service(
            resources()
                .into_iter()
                .fold(actix_web::App::new(), |app, resource| {
                    app.service(resource.build())
                }),
        )
        .await;
        for (path, policy) in [
            ("/", CONTENT_SECURITY_POLICY),
            (
                "/b/6f1c0000-0000-4000-8000-000000000000",
                CONTENT_SECURITY_POLICY,
            ),
            ("/static/board.js", CONTENT_SECURITY_POLICY),
            ("/docs", DOCS_CONTENT_SECURITY_POLICY),
        ] {
            let req = actix_web::test::TestRequest::get().uri(path).to_request();
            let res = actix_web::test::call_service(&app, req).await;
            assert_eq!(res.status(), 200, "{path}");
            let h = res.headers();
            assert_eq!(
                h.get("content-security-policy")
                    .and_then(|v| v.to_str().ok()),
                Some(policy),
                "{path}"
            );
            assert_eq!(
                h.get("x-content-type-options")
                    .and_then(|v| v.to_str().ok()),
                Some("nosniff")
            );
            assert_eq!(
                h.get("referrer-policy").and_then(|v| v.to_str().ok()),
                Some("no-referrer")
            );
        }
        let req = actix_web::test::TestRequest::get()
            .uri("/static/..%2F..%2FCargo.toml")
            .to_request();
        let res = actix_web::test::call_service(&app, req).await;
        assert_eq!(res.status(), 404);
    }
}
