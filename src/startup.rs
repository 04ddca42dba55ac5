//! `Application`: the pool, the stream machinery and the HTTP server, started on a port
//! (0 in tests) and stopped gracefully when its shutdown token is cancelled.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{App, HttpServer, dev::Server, middleware, rt::net::TcpStream, web};
use tokio_util::sync::CancellationToken;

use crate::capacity::StreamBudget;
use crate::config::{ListenerMode, Settings};
use crate::db::{Database, migrations};
use crate::metrics::{self, Metrics};
use crate::realtime::{Live, LiveSettings, Stats, hub::Hub, presence::Presence, signals::Signals};
use crate::routes::{self, AppState};

/// Above Heroku Router 2.0's 90 s idle timeout for router-to-dyno connections, so the
/// router never reuses a connection the server has just closed (H18/H13 noise).
const HTTP_KEEP_ALIVE: Duration = Duration::from_secs(100);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Database(String),
    #[error(
        "the database schema is at version {current} but this build needs version {needed}: run `boardcast migrate` first"
    )]
    SchemaBehind { current: i32, needed: i32 },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    server: Server,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
    presence: Arc<Presence>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, StartError> {
        let db = Database::new(&settings).map_err(StartError::Database)?;
        let client = db
            .connect_driven()
            .await
            .map_err(|e| StartError::Database(format!("cannot reach the database: {e}")))?;
        let current = migrations::current_version(&client)
            .await
            .map_err(|e| StartError::Database(e.to_string()))?;
        let needed = migrations::latest_version();
        if current < needed {
            return Err(StartError::SchemaBehind { current, needed });
        }
        // Per-stream mode needs the database's limits even with MAX_STREAMS set, to warn
        // when the number asked for cannot be opened.
        let limits = match settings.listener {
            ListenerMode::PerStream => Some(
                crate::db::server::connection_limits(&client)
                    .await
                    .map_err(|e| {
                        StartError::Database(format!(
                            "cannot read the database's connection limits: {e}"
                        ))
                    })?,
            ),
            ListenerMode::Shared => None,
        };
        let budget = StreamBudget::decide(&settings, limits);
        let max_streams = budget.max_streams;
        drop(client);

        let shutdown = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let metrics = web::Data::new(Metrics::new(stats.clone(), db.clone(), &budget));
        let presence = Presence::new(
            db.clone(),
            stats.clone(),
            settings.heartbeat,
            settings.presence_list_limit,
        );
        presence
            .start(shutdown.clone())
            .await
            .map_err(|e| StartError::Database(format!("cannot register for presence: {e}")))?;
        let hub = match settings.listener {
            ListenerMode::Shared => Some(
                Hub::start(
                    db.clone(),
                    stats.clone(),
                    presence.clone(),
                    settings.heartbeat,
                )
                .await
                .map_err(|e| {
                    StartError::Database(format!("cannot start the shared listener: {e}"))
                })?,
            ),
            ListenerMode::PerStream => None,
        };
        let signals = Signals::new(db.clone(), stats.clone(), settings.signal_rate_limit);
        signals.start(shutdown.clone());
        let live = Live::new(
            db.clone(),
            LiveSettings::new(&settings, max_streams),
            shutdown.clone(),
            stats.clone(),
            presence.clone(),
            hub,
            signals,
        );
        log::info!(
            "{}; heartbeat every {:?}",
            budget.summary(),
            settings.heartbeat
        );
        if let Some(warning) = budget.warning() {
            log::warn!("{warning}");
        }
        if settings.jwt_secret.is_none() {
            log::warn!(
                "AUTH IS OFF: JWT_SECRET is not set, so anyone who can reach this server can read and write every board"
            );
        }

        let addr = format!("{}:{}", settings.host, settings.port);
        let listener = TcpListener::bind(&addr).map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?
            .port();

        // One limiter for the whole process, shared by every worker.
        let access = web::Data::new(routes::Access::new(&settings));
        if let Some(limiter) = access.write_limiter() {
            limiter.prune_until(shutdown.clone());
        }
        let cors_origins = settings.cors_origins.clone();
        let heartbeat = settings.heartbeat;
        let grace = settings.shutdown_grace;
        let workers = settings.workers;
        let state = web::Data::new(AppState { db, live, settings });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(access.clone())
                .wrap(middleware::Condition::new(
                    !cors_origins.is_empty(),
                    routes::cors(&cors_origins),
                ))
                // Outside CORS, so its refusals become the contract's JSON too.
                .wrap(middleware::from_fn(routes::edge))
                .app_data(metrics.clone())
                .wrap(request_log())
                .wrap(middleware::from_fn(metrics::count_requests))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        // Must come before listen(): applies to every accepted socket.
        .on_connect(move |conn, _ext| tune_socket(conn, heartbeat))
        // Drop a stream as soon as its client's FIN arrives, not on the next failed write
        // (actix-web #1313). EventSource never half-closes.
        .h1_allow_half_closed(false)
        // With the event body's pieces, keeps each connection's write buffer at 8 KiB.
        .h1_write_buffer_size(crate::realtime::WRITE_BUFFER_FILL)
        .keep_alive(HTTP_KEEP_ALIVE)
        // Slowloris: the request line and headers must arrive within this (then 408).
        .client_request_timeout(crate::limits::REQUEST_HEAD_TIMEOUT)
        .shutdown_timeout(grace.as_secs())
        .shutdown_signal(shutdown.clone().cancelled_owned());
        if let Some(n) = workers {
            server = server.workers(n);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartError::Bind {
                addr: format!("port {port}"),
                source,
            })?
            .run();
        Ok(Application {
            port,
            server,
            shutdown,
            stats,
            presence,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancel to stop: streams get `retry:` and end, then the server drains and exits.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.presence.stop().await;
        result
    }
}

/// Bounds how long a vanished peer (no FIN, no RST) keeps a stream: unacknowledged
/// heartbeat bytes abort the connection after one interval, and keepalive probes find a
/// silent peer while nothing is being written.
fn tune_socket(conn: &dyn std::any::Any, heartbeat: Duration) {
    let Some(tcp) = conn.downcast_ref::<TcpStream>() else {
        return;
    };
    let socket = socket2::SockRef::from(tcp);
    let floor = heartbeat.max(Duration::from_secs(1));
    #[cfg(target_os = "linux")]
    if let Err(e) = socket.set_tcp_user_timeout(Some(floor)) {
        log::debug!("TCP_USER_TIMEOUT not set: {e}");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(floor)
        .with_interval((floor / 3).max(Duration::from_secs(1)));
    #[cfg(target_os = "linux")]
    let keepalive = keepalive.with_retries(3);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        log::debug!("TCP keepalive not set: {e}");
    }
}

/// One line per request: method, path with secrets redacted, status, duration.
fn request_log() -> middleware::Logger {
    middleware::Logger::new("%{request}xi %s %Dms").custom_request_replace("request", |req| {
        format!(
            "{} {}",
            req.method(),
            crate::redact::path_and_query(req.uri())
        )
    })
}
