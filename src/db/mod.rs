//! Storage: the connection pool, dedicated connections for LISTEN, and the SQL of each table.

pub(crate) mod boards;
mod error;
pub(crate) mod events;
pub mod migrations;
pub(crate) mod notes;
pub(crate) mod presence;
pub(crate) mod server;
pub(crate) mod tls;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{Client, Connection, Socket, tls::MakeTlsConnect};

use crate::config::{Settings, TlsCheck};
pub use error::{DbError, DbErrorKind};

/// A read-only REPEATABLE READ transaction: every statement in it sees one moment, so a
/// board's `seq`, its notes and its log agree.
pub(crate) async fn consistent_read(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, DbError> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// The stream type of a dedicated connection.
pub(crate) type TlsStream = <tls::Connector as MakeTlsConnect<Socket>>::Stream;
/// The driver half of a dedicated connection; whoever holds it must poll it.
pub(crate) type DedicatedConnection = Connection<Socket, TlsStream>;

/// The pool that serves REST requests, and the means to open dedicated connections.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: tls::Connector,
    /// How the server's certificate is checked (`sslmode`, `sslrootcert`).
    tls_check: TlsCheck,
}

impl Database {
    pub fn new(settings: &Settings) -> Result<Database, String> {
        let tls = tls::connector(&settings.database_tls)?;
        let manager = Manager::from_config(
            settings.database.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Sized explicitly: deadpool's default follows the CPU count, which on a dyno says
        // nothing about how many connections the Postgres plan allows.
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| format!("cannot build the database pool: {e}"))?;
        Ok(Database {
            pool,
            config: settings.database.clone(),
            tls,
            tls_check: settings.database_tls.clone(),
        })
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A pooled connection for one request's work. Never hold it for a stream's lifetime.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        Ok(self.pool.get().await?)
    }

    /// A new connection of its own, outside the pool: LISTEN needs one, because a pooled
    /// connection's driver discards notifications and its LISTEN state would leak to the
    /// next user. The caller must poll the returned connection.
    /// `purpose` becomes part of its `application_name`, so operators (and tests) can tell
    /// listener connections apart in `pg_stat_activity`.
    pub(crate) async fn connect_dedicated(
        &self,
        purpose: &str,
    ) -> Result<(Client, DedicatedConnection), DbError> {
        let mut config = self.config.clone();
        config.application_name(format!("boardcast {purpose}"));
        let connected = config.connect(self.tls.clone()).await;
        connected.map_err(|e| self.explain_refused_certificate(e.into()))
    }

    /// A refused certificate in verifying mode is a configuration choice to revisit, so
    /// say which: the error alone reads like a broken server.
    fn explain_refused_certificate(&self, error: DbError) -> DbError {
        let check = &self.tls_check;
        if !(check.verify && error.is_unavailable() && error.message().contains("certificate")) {
            return error;
        }
        let mode = if check.host_name {
            "verify-full"
        } else {
            "verify-ca"
        };
        // rustls says "certificate not valid for name …" when only the host name is wrong.
        if check.host_name && error.message().contains("not valid for name") {
            return error.context(
                "sslmode=verify-full checks that the server's certificate is for the host named \
                 in DATABASE_URL: connect by a name the certificate holds, or use \
                 sslmode=verify-ca to check the issuing CA only",
            );
        }
        match &check.root_cert {
            Some(path) => error.context(format!(
                "sslmode={mode} verifies the server's certificate against the CAs in \
                 sslrootcert {}: check that the file is the CA bundle of this database's \
                 provider",
                path.display()
            )),
            None => error.context(format!(
                "sslmode={mode} verifies the server's certificate against the public web PKI \
                 roots; a private CA's certificate needs sslrootcert=/path/ca.pem, and a \
                 self-signed one, such as Heroku Postgres' default one, needs sslmode=require, \
                 which encrypts without verifying"
            )),
        }
    }

    /// A dedicated connection whose driver runs in its own task (for `migrate` and checks).
    pub async fn connect_driven(&self) -> Result<Client, DbError> {
        let (client, connection) = self.connect_dedicated("admin").await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("dedicated connection ended: {e}");
            }
        });
        Ok(client)
    }
}
