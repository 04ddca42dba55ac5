//! What the PostgreSQL server says about itself: whether it answers, how full its NOTIFY
//! queue is, and how many connections it lets this role open. Kept here, beside the rest
//! of the SQL.

use tokio_postgres::Client;

use super::DbError;

/// Runs an empty statement: whether the server answers at all.
pub async fn ping(client: &Client) -> Result<(), DbError> {
    client.simple_query("SELECT 1").await?;
    Ok(())
}

/// `pg_notification_queue_usage()`: how full the NOTIFY queue is, 0 to 1.
pub async fn notify_queue_usage(client: &Client) -> Result<f64, DbError> {
    let row = client
        .query_one("SELECT pg_notification_queue_usage() AS usage", &[])
        .await?;
    Ok(row.try_get("usage")?)
}

/// What the database allows this role to open, read once at start (`capacity` turns it
/// into the per-stream budget).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `max_connections`.
    pub max_connections: usize,
    /// `superuser_reserved_connections` plus, from PostgreSQL 16, `reserved_connections`:
    /// slots an ordinary role can never take.
    pub reserved: usize,
    /// The role's `CONNECTION LIMIT` (`pg_roles.rolconnlimit`), if it has one.
    pub role_limit: Option<usize>,
    /// The database's `CONNECTION LIMIT` (`pg_database.datconnlimit`), if it has one.
    pub database_limit: Option<usize>,
}

/// Reads the connection limits. A hosted plan may cap the role or the database below what
/// `max_connections` says, so all three are read.
pub async fn connection_limits(client: &Client) -> Result<ConnectionLimits, DbError> {
    let row = client
        .query_one(
            "SELECT current_setting('max_connections')::int AS max_connections, \
                    current_setting('superuser_reserved_connections')::int \
                      + COALESCE(current_setting('reserved_connections', true), '0')::int \
                      AS reserved, \
                    (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user) AS role_limit, \
                    (SELECT datconnlimit FROM pg_database WHERE datname = current_database()) \
                      AS database_limit",
            &[],
        )
        .await?;
    let count = |v: i32| usize::try_from(v).unwrap_or(0);
    // -1 (or no row) means no limit.
    let limit = |v: Option<i32>| v.and_then(|v| usize::try_from(v).ok());
    Ok(ConnectionLimits {
        max_connections: count(row.try_get("max_connections")?),
        reserved: count(row.try_get("reserved")?),
        role_limit: limit(row.try_get("role_limit")?),
        database_limit: limit(row.try_get("database_limit")?),
    })
}
