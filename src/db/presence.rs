//! Presence statements: viewers joining and leaving, instances proving they are alive, and
//! reaping the viewers of instances that stopped doing so.
//!
//! Every change to a board's viewers goes through [`apply`]: one transaction per batch of
//! joins and leaves, which numbers the change with the board's presence version and
//! announces it (one NOTIFY per 8000 bytes of viewers). No change reads the viewer list.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{DbError, events};
use crate::domain::{
    ids::BoardId,
    presence::{Tally, payloads},
    viewer::Viewer,
};

fn viewer_from(row: &Row) -> Result<Viewer, DbError> {
    Ok(Viewer {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        since: row.try_get("since")?,
    })
}

/// Which viewers a batch removes.
#[derive(Clone, Copy, Debug)]
pub enum Leaving<'a> {
    /// These ids (streams that closed); ids already gone are skipped.
    These(&'a [Uuid]),
    /// Every viewer of the board whose instance is no longer registered, but for viewers
    /// held for their session and not yet expired (they outlive their instance: a deploy).
    Orphaned,
    /// Every viewer of the board held for its session past its time, and every held
    /// viewer of this session and subject (a reconnect under another name: the old name
    /// leaves now, before the new one joins).
    Expired {
        session: &'a str,
        sub: Option<&'a str>,
    },
}

/// Who a joining viewer belongs to: the token subject its stream was opened with (auth
/// on), and the session it may be taken over by (`?session=`).
#[derive(Clone, Debug, Default)]
pub struct Owner {
    pub sub: Option<String>,
    pub session: Option<String>,
}

/// A committed batch: what it changed and the version the board is at after it.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub version: i64,
    pub joined: Vec<Viewer>,
    pub left: Vec<Viewer>,
}

/// Adds `joining` to the board (on `instance`) and removes `leaving`, in one transaction
/// that takes the board's presence row lock (so a board's changes are serialized and
/// numbered), and announces the change. Viewers already present are not added twice, and
/// only the viewers a DELETE actually found are announced as left, so a viewer is never
/// announced twice. `owners` are the joining viewers' token subjects (kept for signals and
/// sessions; `None` with auth off) and sessions, in the same order. `None` when the board
/// does not exist.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    client: &mut deadpool_postgres::Object,
    board: BoardId,
    joining: &[Viewer],
    owners: &[Owner],
    leaving: Leaving<'_>,
    instance: Uuid,
    limit: usize,
) -> Result<Option<Applied>, DbError> {
    let tx = client.transaction().await?;
    // KEY SHARE on the board first: a concurrent DELETE of the board then either goes
    // first (no row: `None`) or waits for this transaction; never a deadlock between the
    // cascade and this row lock.
    let lock = tx
        .prepare_cached(
            "WITH b AS (SELECT id FROM boards WHERE id = $1 FOR KEY SHARE)
             INSERT INTO board_presence (board_id) SELECT id FROM b
             ON CONFLICT (board_id) DO UPDATE SET version = board_presence.version
             RETURNING version, viewers, crowd",
        )
        .await?;
    let Some(row) = tx.query_opt(&lock, &[&board.uuid()]).await? else {
        return Ok(None);
    };
    let version: i64 = row.try_get("version")?;
    let before = Tally {
        count: usize::try_from(row.try_get::<_, i32>("viewers")?).unwrap_or(0),
        crowd: row.try_get("crowd")?,
    };
    let mut applied = Applied {
        version,
        ..Applied::default()
    };
    if !joining.is_empty() {
        let insert = tx
            .prepare_cached(
                "INSERT INTO viewers (id, board_id, instance_id, name, since, sub, session)
                 SELECT u.id, $1, $2, u.name, u.since, u.sub, u.session
                 FROM unnest($3::uuid[], $4::text[], $5::timestamptz[], $6::text[], $7::text[])
                      AS u(id, name, since, sub, session)
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id",
            )
            .await?;
        let ids: Vec<Uuid> = joining.iter().map(|v| v.id).collect();
        let names: Vec<&str> = joining.iter().map(|v| v.name.as_str()).collect();
        let sinces: Vec<DateTime<Utc>> = joining.iter().map(|v| v.since).collect();
        let subs: Vec<Option<&str>> = owners.iter().map(|o| o.sub.as_deref()).collect();
        let sessions: Vec<Option<&str>> = owners.iter().map(|o| o.session.as_deref()).collect();
        let inserted = tx
            .query(
                &insert,
                &[
                    &board.uuid(),
                    &instance,
                    &ids,
                    &names,
                    &sinces,
                    &subs,
                    &sessions,
                ],
            )
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<std::collections::HashSet<Uuid>, _>>()?;
        applied.joined = joining
            .iter()
            .filter(|v| inserted.contains(&v.id))
            .cloned()
            .collect();
    }
    let left_rows = match leaving {
        Leaving::These([]) => Vec::new(),
        Leaving::These(ids) => {
            let delete = tx
                .prepare_cached(
                    "DELETE FROM viewers WHERE board_id = $1 AND id = ANY($2)
                     RETURNING id, name, since",
                )
                .await?;
            tx.query(&delete, &[&board.uuid(), &ids]).await?
        }
        Leaving::Orphaned => {
            let delete = tx
                .prepare_cached(
                    "DELETE FROM viewers v WHERE board_id = $1
                       AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = v.instance_id)
                       AND (held_until IS NULL OR held_until <= now())
                     RETURNING id, name, since",
                )
                .await?;
            tx.query(&delete, &[&board.uuid()]).await?
        }
        Leaving::Expired { session, sub } => {
            let delete = tx
                .prepare_cached(
                    "DELETE FROM viewers WHERE board_id = $1 AND held_until IS NOT NULL
                       AND (held_until <= now()
                            OR (session = $2 AND sub IS NOT DISTINCT FROM $3))
                     RETURNING id, name, since",
                )
                .await?;
            tx.query(&delete, &[&board.uuid(), &session, &sub]).await?
        }
    };
    applied.left = left_rows
        .iter()
        .map(viewer_from)
        .collect::<Result<_, _>>()?;
    applied.left.sort_by_key(|v| (v.since, v.id));
    let (notices, after) = payloads(version + 1, before, limit, &applied.joined, &applied.left);
    if notices.is_empty() {
        tx.commit().await?;
        return Ok(Some(applied));
    }
    applied.version = version + notices.len() as i64;
    // The count itself is kept by the table's trigger (sql/0004), from the rows.
    let update = tx
        .prepare_cached("UPDATE board_presence SET version = $2, crowd = $3 WHERE board_id = $1")
        .await?;
    tx.execute(&update, &[&board.uuid(), &applied.version, &after.crowd])
        .await?;
    // In version order; inside the transaction they go out at its commit.
    let channels = vec![board.channel(); notices.len()];
    events::notify_many(&tx, &channels, &notices).await?;
    tx.commit().await?;
    Ok(Some(applied))
}

/// A viewer of `board` with its name and the token subject its stream was opened with:
/// who a signal from another instance is sent as.
pub async fn find(
    client: &impl GenericClient,
    board: BoardId,
    viewer: Uuid,
) -> Result<Option<(String, Option<String>)>, DbError> {
    let stmt = client
        .prepare_cached("SELECT name, sub FROM viewers WHERE id = $1 AND board_id = $2")
        .await?;
    match client.query_opt(&stmt, &[&viewer, &board.uuid()]).await? {
        Some(row) => Ok(Some((row.try_get("name")?, row.try_get("sub")?))),
        None => Ok(None),
    }
}

/// A board's presence as of one version: the count, the crowd state and the oldest viewers.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub version: i64,
    pub tally: Tally,
    /// Oldest first; at most the `limit` asked for (all with `None`).
    pub viewers: Vec<Viewer>,
}

/// Reads the board's presence in one statement (one snapshot, so the version, the count and
/// the list agree): the oldest `limit` viewers, or all of them with `None`.
pub async fn view(
    client: &impl GenericClient,
    board: BoardId,
    limit: Option<usize>,
) -> Result<View, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT p.version, p.viewers, p.crowd, v.id, v.name, v.since
             FROM (SELECT $1::uuid AS board_id) b
             LEFT JOIN board_presence p ON p.board_id = b.board_id
             LEFT JOIN LATERAL (
                 SELECT id, name, since FROM viewers WHERE board_id = b.board_id
                 ORDER BY since, id LIMIT $2
             ) v ON true",
        )
        .await?;
    let limit = limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let rows = client.query(&stmt, &[&board.uuid(), &limit]).await?;
    let mut view = View::default();
    for row in &rows {
        view.version = row.try_get::<_, Option<i64>>("version")?.unwrap_or(0);
        view.tally = Tally {
            count: usize::try_from(row.try_get::<_, Option<i32>>("viewers")?.unwrap_or(0))
                .unwrap_or(0),
            crowd: row.try_get::<_, Option<bool>>("crowd")?.unwrap_or(false),
        };
        if row.try_get::<_, Option<Uuid>>("id")?.is_some() {
            view.viewers.push(viewer_from(row)?);
        }
    }
    Ok(view)
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

/// Forgets instances silent for longer than `stale_after`, and returns the boards that
/// still have viewers of instances no longer registered (for [`apply`] with
/// [`Leaving::Orphaned`], which announces each departure exactly once).
pub async fn orphaned_boards(
    client: &impl GenericClient,
    stale_after: Duration,
) -> Result<Vec<BoardId>, DbError> {
    let stale = client
        .prepare_cached("DELETE FROM instances WHERE last_seen < now() - make_interval(secs => $1)")
        .await?;
    client
        .execute(&stale, &[&stale_after.as_secs_f64()])
        .await?;
    let boards = client
        .prepare_cached(
            "SELECT DISTINCT board_id FROM viewers v
             WHERE NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = v.instance_id)
               AND (held_until IS NULL OR held_until <= now())",
        )
        .await?;
    let boards = client
        .query(&boards, &[])
        .await?
        .iter()
        .map(|r| r.try_get("board_id"))
        .collect::<Result<Vec<Uuid>, _>>()?;
    Ok(boards.into_iter().map(BoardId).collect())
}

/// Holds a session's viewer for `hold` after its stream closed: still listed, nothing
/// announced; a stream of the same session may take it over meanwhile ([`claim`]), else it
/// is reaped with [`Leaving::Expired`]. `false`: no such viewer with a session.
pub async fn hold(
    client: &impl GenericClient,
    board: BoardId,
    viewer: Uuid,
    hold: Duration,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE viewers SET held_until = now() + make_interval(secs => $3)
             WHERE id = $1 AND board_id = $2 AND session IS NOT NULL",
        )
        .await?;
    Ok(client
        .execute(&stmt, &[&viewer, &board.uuid(), &hold.as_secs_f64()])
        .await?
        == 1)
}

/// Takes over a viewer of `board` held for `session` (opened with the same `sub`, under
/// the same `name`) whose hold has not expired, for a stream on `instance`; with the board's presence version
/// (which already reflects the viewer: it never left). `None`: nothing to take over.
pub async fn claim(
    client: &impl GenericClient,
    board: BoardId,
    session: &str,
    sub: Option<&str>,
    name: &str,
    instance: Uuid,
) -> Result<Option<(Viewer, i64)>, DbError> {
    // The hold is checked again on the row itself: a reaper deleting it at its expiry and
    // this takeover cannot both succeed.
    let stmt = client
        .prepare_cached(
            "WITH taken AS (
                 UPDATE viewers SET held_until = NULL, instance_id = $4
                 WHERE id = (SELECT id FROM viewers
                             WHERE board_id = $1 AND session = $2
                               AND sub IS NOT DISTINCT FROM $3 AND name = $5
                               AND held_until > now()
                             ORDER BY since, id LIMIT 1 FOR UPDATE SKIP LOCKED)
                   AND held_until > now()
                 RETURNING id, name, since)
             SELECT t.id, t.name, t.since, COALESCE(p.version, 0) AS version
             FROM taken t LEFT JOIN board_presence p ON p.board_id = $1",
        )
        .await?;
    match client
        .query_opt(&stmt, &[&board.uuid(), &session, &sub, &instance, &name])
        .await?
    {
        Some(row) => Ok(Some((viewer_from(&row)?, row.try_get("version")?))),
        None => Ok(None),
    }
}

/// Whether `board` has a viewer of `session` (and `sub`, and `name`) whose stream is still
/// open: a reconnect that arrived before the server noticed the old stream close.
pub async fn session_open(
    client: &impl GenericClient,
    board: BoardId,
    session: &str,
    sub: Option<&str>,
    name: &str,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM viewers WHERE board_id = $1 AND session = $2
                              AND sub IS NOT DISTINCT FROM $3 AND name = $4
                              AND held_until IS NULL)",
        )
        .await?;
    Ok(client
        .query_one(&stmt, &[&board.uuid(), &session, &sub, &name])
        .await?
        .try_get(0)?)
}

/// The boards with a viewer held past its time (for [`apply`] with [`Leaving::Expired`]).
pub async fn expired_boards(client: &impl GenericClient) -> Result<Vec<BoardId>, DbError> {
    let stmt = client
        .prepare_cached("SELECT DISTINCT board_id FROM viewers WHERE held_until <= now()")
        .await?;
    let boards = client
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|r| r.try_get("board_id"))
        .collect::<Result<Vec<Uuid>, _>>()?;
    Ok(boards.into_iter().map(BoardId).collect())
}
