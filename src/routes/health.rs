//! Liveness and readiness.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// 200 while the process runs.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// 200 when the database answers within a short timeout, else 503.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let check = async {
        let client = state.db.client().await.map_err(|e| e.to_string())?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({ "status": "ready", "database": "ok" })),
        Ok(Err(e)) => unready(&e),
        Err(_) => unready("the database did not answer within 2 s"),
    }
}

fn unready(why: &str) -> HttpResponse {
    // The cause may name hosts: it goes to the log, not to whoever asks.
    log::warn!("not ready: {why}");
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "5"))
        .json(json!({ "status": "unavailable", "database": "unreachable" }))
}
