//! `GET /metrics`: the Prometheus scrape target.

use actix_web::{HttpResponse, http::header, web};

use crate::metrics::{CONTENT_TYPE, Metrics};

/// Prometheus metrics, in the OpenMetrics text format.
///
/// The registry in the OpenMetrics text format. Holds counts and gauges only: no board
/// ids, names or other data, so it is safe to expose to a scraper.
#[utoipa::path(
    get,
    operation_id = "metrics",
    path = "/metrics",
    tag = "operations",
    responses((
        status = 200,
        description = "Counters, gauges and histograms (see the README for the names).",
        content_type = "application/openmetrics-text",
        body = String,
    )),
    security(()),
)]
pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(metrics.render().await)
}
