//! What the PostgreSQL server says about itself: whether it answers, and how full its
//! NOTIFY queue is. Kept here, beside the rest of the SQL.

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
