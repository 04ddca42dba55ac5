//! The event log: how streams read history. Writes log and NOTIFY their events in the
//! write functions of `sql/0004_write_functions.sql` (`boardcast_publish`), which also
//! prune the log past `EVENT_RETENTION` on every 64th event of a board.

use deadpool_postgres::GenericClient;

use super::DbError;
use crate::domain::{event::EventKind, ids::BoardId};

/// One logged event: its seq, its name and its `data:` line.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedEvent {
    pub seq: i64,
    pub kind: EventKind,
    pub data: String,
}

/// Sends several notifications in one statement (one round trip), in order: the signal
/// batches of every board whose window closed, a presence change's announcements. The one
/// place Rust code sends a NOTIFY (writes send theirs in `sql/0004_write_functions.sql`).
/// Outside a transaction each is delivered as soon as the statement ends, inside one at
/// its commit.
pub async fn notify_many(
    client: &impl GenericClient,
    channels: &[String],
    payloads: &[String],
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(c, p, n) ORDER BY n",
        )
        .await?;
    client.execute(&stmt, &[&channels, &payloads]).await?;
    Ok(())
}

/// Events of a board with `after < seq <= upto`, oldest first, at most `limit`.
pub async fn range(
    client: &impl GenericClient,
    board_id: BoardId,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<LoggedEvent>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT seq, type, payload::text AS payload FROM events
             WHERE board_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
        )
        .await?;
    let rows = client
        .query(&stmt, &[&board_id.uuid(), &after, &upto, &limit])
        .await?;
    rows.iter()
        .map(|row| {
            let name: &str = row.try_get("type")?;
            let kind = EventKind::parse(name)
                .ok_or_else(|| DbError::query(format!("unknown event type {name:?} in the log")))?;
            Ok(LoggedEvent {
                seq: row.try_get("seq")?,
                kind,
                data: row.try_get("payload")?,
            })
        })
        .collect()
}

/// The `data` of one logged event, for notifications too large to carry it; `None` when
/// the log no longer holds it (pruned, or the board deleted).
pub async fn data_of(
    client: &impl GenericClient,
    board_id: BoardId,
    seq: i64,
) -> Result<Option<String>, DbError> {
    Ok(range(client, board_id, seq - 1, seq, 1)
        .await?
        .into_iter()
        .next()
        .map(|e| e.data))
}

/// Whether the log still holds the event `seq` of the board.
pub async fn is_kept(
    client: &impl GenericClient,
    board_id: BoardId,
    seq: i64,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM events WHERE board_id = $1 AND seq = $2) AS kept",
        )
        .await?;
    Ok(client
        .query_one(&stmt, &[&board_id.uuid(), &seq])
        .await?
        .try_get("kept")?)
}
