//! Presence statements: viewers joining and leaving, instances proving they are alive, and
//! reaping the viewers of instances that stopped doing so.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::DbError;
use crate::domain::{
    ids::BoardId,
    viewer::{Viewer, presence_payload},
};

fn viewer_from(row: &Row) -> Result<Viewer, DbError> {
    Ok(Viewer {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        since: row.try_get("since")?,
    })
}

/// Serializes the presence changes of one board. A stream lists the viewers and announces
/// itself in one locked transaction, so every presence notification it receives before its
/// own `joined` is already reflected in its list, and every one after is not.
async fn lock_board(tx: &impl GenericClient, board: BoardId) -> Result<(), DbError> {
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .await?;
    tx.execute(&stmt, &[&board.to_string()]).await?;
    Ok(())
}

async fn announce(
    tx: &impl GenericClient,
    board: BoardId,
    joined: bool,
    viewer: &Viewer,
) -> Result<(), DbError> {
    let stmt = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
    tx.execute(
        &stmt,
        &[&board.channel(), &presence_payload(joined, viewer)],
    )
    .await?;
    Ok(())
}

pub async fn register_instance(client: &impl GenericClient, instance: Uuid) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached("INSERT INTO instances (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET last_seen = now()")
        .await?;
    client.execute(&stmt, &[&instance]).await?;
    Ok(())
}

/// Marks the instance alive; `false` if its row is gone (it was reaped while unreachable).
pub async fn refresh_instance(
    client: &impl GenericClient,
    instance: Uuid,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("UPDATE instances SET last_seen = now() WHERE id = $1")
        .await?;
    Ok(client.execute(&stmt, &[&instance]).await? == 1)
}

pub async fn remove_instance(client: &impl GenericClient, instance: Uuid) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached("DELETE FROM instances WHERE id = $1")
        .await?;
    client.execute(&stmt, &[&instance]).await?;
    Ok(())
}

/// The board's viewers, oldest first.
pub async fn list(client: &impl GenericClient, board: BoardId) -> Result<Vec<Viewer>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT id, name, since FROM viewers WHERE board_id = $1 ORDER BY since, id",
        )
        .await?;
    client
        .query(&stmt, &[&board.uuid()])
        .await?
        .iter()
        .map(viewer_from)
        .collect()
}

/// Adds the viewer, announces `presence.joined`, and returns everyone viewing (the new
/// viewer included). `None` when the board does not exist.
pub async fn join(
    client: &mut deadpool_postgres::Object,
    board: BoardId,
    viewer: &Viewer,
    instance: Uuid,
) -> Result<Option<Vec<Viewer>>, DbError> {
    let tx = client.transaction().await?;
    lock_board(&tx, board).await?;
    // KEY SHARE keeps the board from being deleted under us without blocking writes.
    let exists = tx
        .prepare_cached("SELECT 1 FROM boards WHERE id = $1 FOR KEY SHARE")
        .await?;
    if tx.query_opt(&exists, &[&board.uuid()]).await?.is_none() {
        return Ok(None);
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO viewers (id, board_id, instance_id, name, since) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET instance_id = excluded.instance_id",
        )
        .await?;
    tx.execute(
        &insert,
        &[
            &viewer.id,
            &board.uuid(),
            &instance,
            &viewer.name,
            &viewer.since,
        ],
    )
    .await?;
    let viewers = list(&tx, board).await?;
    announce(&tx, board, true, viewer).await?;
    tx.commit().await?;
    Ok(Some(viewers))
}

/// Removes viewers of one board and announces each `presence.left`, once: only the
/// caller whose DELETE found a row announces it.
pub async fn leave(
    client: &mut deadpool_postgres::Object,
    board: BoardId,
    viewers: &[Uuid],
) -> Result<(), DbError> {
    let tx = client.transaction().await?;
    lock_board(&tx, board).await?;
    let stmt = tx
        .prepare_cached("DELETE FROM viewers WHERE id = ANY($1) RETURNING id, name, since")
        .await?;
    for row in tx.query(&stmt, &[&viewers]).await? {
        announce(&tx, board, false, &viewer_from(&row)?).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Forgets instances silent for longer than `stale_after`, then removes the viewers no
/// live instance owns, announcing each `presence.left` exactly once. Returns how many.
pub async fn reap(
    client: &mut deadpool_postgres::Object,
    stale_after: Duration,
) -> Result<usize, DbError> {
    let stale = client
        .prepare_cached("DELETE FROM instances WHERE last_seen < now() - make_interval(secs => $1)")
        .await?;
    client
        .execute(&stale, &[&stale_after.as_secs_f64()])
        .await?;
    let boards = client
        .prepare_cached(
            "SELECT DISTINCT board_id FROM viewers v
             WHERE NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = v.instance_id)",
        )
        .await?;
    let boards = client
        .query(&boards, &[])
        .await?
        .iter()
        .map(|r| r.try_get("board_id"))
        .collect::<Result<Vec<Uuid>, _>>()?;
    let mut reaped = 0;
    for board in boards.into_iter().map(BoardId) {
        let tx = client.transaction().await?;
        lock_board(&tx, board).await?;
        let orphans = tx
            .prepare_cached(
                "DELETE FROM viewers v WHERE board_id = $1
                   AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = v.instance_id)
                 RETURNING id, name, since",
            )
            .await?;
        for row in tx.query(&orphans, &[&board.uuid()]).await? {
            announce(&tx, board, false, &viewer_from(&row)?).await?;
            reaped += 1;
        }
        tx.commit().await?;
    }
    Ok(reaped)
}
