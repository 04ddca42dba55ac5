//! The event log and NOTIFY: how a write announces itself, and how streams read history.

use chrono::Utc;
use deadpool_postgres::GenericClient;

use super::DbError;
use crate::domain::{
    event::{Change, EventKind, notify_payload},
    ids::BoardId,
};

/// Pruning runs on every 64th event of a board, deleting at most 64 rows: the cost of
/// retention is spread evenly over writes instead of landing on one.
const PRUNE_EVERY: i64 = 64;

/// One logged event: its seq, its name and its `data:` line.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedEvent {
    pub seq: i64,
    pub kind: EventKind,
    pub data: String,
}

/// Takes the board's next sequence number. The row lock it takes is held until commit, so
/// writes to one board commit in seq order. `None` when the board does not exist.
pub async fn next_seq(tx: &impl GenericClient, board_id: BoardId) -> Result<Option<i64>, DbError> {
    let stmt = tx
        .prepare_cached("UPDATE boards SET seq = seq + 1 WHERE id = $1 RETURNING seq")
        .await?;
    Ok(tx
        .query_opt(&stmt, &[&board_id.uuid()])
        .await?
        .map(|r| r.try_get("seq"))
        .transpose()?)
}

/// Logs the event of `change` as `seq`, prunes the log past `retention`, and NOTIFYs the
/// board's channel. Call inside the writing transaction: listeners hear of it only if the
/// transaction commits.
pub async fn publish(
    tx: &impl GenericClient,
    board_id: BoardId,
    seq: i64,
    change: Change<'_>,
    retention: i64,
) -> Result<(), DbError> {
    let at = Utc::now();
    let kind = change.kind();
    let data = change.encode(seq, board_id, at);
    let insert = tx
        .prepare_cached("INSERT INTO events (board_id, seq, type, payload, at) VALUES ($1, $2, $3, $4::text::json, $5)")
        .await?;
    tx.execute(
        &insert,
        &[&board_id.uuid(), &seq, &kind.as_str(), &data, &at],
    )
    .await?;
    if seq % PRUNE_EVERY == 0 && seq > retention {
        let prune = tx
            .prepare_cached("DELETE FROM events WHERE board_id = $1 AND seq <= $2")
            .await?;
        tx.execute(&prune, &[&board_id.uuid(), &(seq - retention)])
            .await?;
    }
    notify(tx, board_id, seq, kind, &data).await
}

/// NOTIFYs without logging: for `board.deleted`, whose log goes with the board.
pub async fn notify(
    tx: &impl GenericClient,
    board_id: BoardId,
    seq: i64,
    kind: EventKind,
    data: &str,
) -> Result<(), DbError> {
    let payload = notify_payload(data, seq, kind, board_id);
    // Bind parameters, never SQL built from strings; `execute` because the result is void.
    let stmt = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
    tx.execute(&stmt, &[&board_id.channel(), &payload]).await?;
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
