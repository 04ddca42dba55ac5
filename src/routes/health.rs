//! Liveness and readiness.

use std::time::Duration;

use actix_web::{HttpResponse, http::header, web};
use serde::Serialize;

use super::AppState;
use crate::db;
use crate::error::{ApiError, ErrorDetail};

/// The answer of `/healthz`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Alive {
    /// Always `ok`.
    status: &'static str,
}

/// The answer of `/readyz` when ready.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// Always `ready`.
    status: &'static str,
    /// `ok`.
    database: &'static str,
    /// `ok`.
    listener: &'static str,
}

/// The answer of `/readyz` when not ready: the error envelope, and what is down.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NotReady {
    error: ErrorDetail,
    /// `ok` or `unreachable`.
    database: &'static str,
    /// `ok` or `down`.
    listener: &'static str,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(
    get,
    operation_id = "healthz",
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process runs.", body = Alive)),
    security(()),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Alive { status: "ok" })
}

/// How long the database may take to answer a readiness check.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness: 200 when the database answers and the listener is up, else 503.
///
/// The database must answer within 2 s. A load balancer (or an operator) stops sending new streams to an instance that is not
/// ready; open streams are not affected, and the answer goes back to 200 on recovery.
#[utoipa::path(
    get,
    operation_id = "readyz",
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (status = 503, description = "Error: `unavailable` (the database or the listener is down).",
            body = NotReady,
            headers(("Retry-After" = i64, description = "Seconds to wait before asking again."))),
    ),
    security(()),
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let check = async {
        let client = state.db.client().await.map_err(|e| e.to_string())?;
        db::server::ping(&client).await.map_err(|e| e.to_string())
    };
    let database = match tokio::time::timeout(DATABASE_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the database did not answer within 2 s".to_string()),
    };
    // Set by the shared listener while it has no working LISTEN connection.
    let listener_down = state.live.stats().listener_down();
    let database_state = if database.is_ok() {
        "ok"
    } else {
        "unreachable"
    };
    let listener_state = if listener_down { "down" } else { "ok" };
    if database.is_ok() && !listener_down {
        return HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(Ready {
                status: "ready",
                database: database_state,
                listener: listener_state,
            });
    }
    // The cause may name hosts: it goes to the log, not to whoever asks.
    if let Err(why) = &database {
        log::warn!("not ready: {why}");
    }
    if listener_down {
        log::warn!("not ready: the listener has no working connection");
    }
    // The contract's error envelope, with what is down next to it.
    let error = ApiError::unavailable(match (database.is_ok(), listener_down) {
        (false, true) => "the database and the listener are down",
        (false, false) => "the database is not answering",
        _ => "the listener has no working connection",
    });
    error.response_builder().json(NotReady {
        error: error.envelope(),
        database: database_state,
        listener: listener_state,
    })
}
