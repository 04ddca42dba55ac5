//! Presence across instances: who is viewing which board, kept in PostgreSQL so every
//! instance of a deployment sees the same list, and cleaned up when an instance vanishes.
//!
//! Joins and leaves are written in batches: whatever arrived while the previous batch was
//! being written goes out together, one transaction and one announcement per board (see
//! `db::presence::apply`). So a crowd arriving costs a few statements per batch, not a
//! transaction, a NOTIFY and a list read per viewer; a lone join still goes at once.
//!
//! Liveness costs one statement per instance per half heartbeat interval (the instance's
//! row), not a write per stream. An instance silent for two intervals is reaped by any
//! other, which announces its viewers' departures: within 2.5 intervals of the death.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{SubsecRound, Utc};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::stats::Stats;
use crate::db::{
    Database, DbError, DbErrorKind,
    presence::{self, Applied, Leaving, Owner, View},
};
use crate::domain::{ids::BoardId, viewer::Viewer};

pub struct Presence {
    db: Database,
    stats: Arc<Stats>,
    instance: Uuid,
    heartbeat: Duration,
    /// `PRESENCE_LIST_LIMIT`: past it a board is a crowd.
    limit: usize,
    /// This instance's viewers, so they can be re-announced if the instance was reaped
    /// while it could not reach the database.
    local: Mutex<HashMap<Uuid, (BoardId, Viewer)>>,
    /// The token subject (auth on) and session of each of this instance's viewers that has
    /// one: written with the viewer, so a signal taken by another instance can be checked
    /// against it, and a session's next stream can take the viewer over.
    owners: Mutex<HashMap<Uuid, Owner>>,
    /// Leaves that failed (database unreachable), retried by the maintenance loop.
    pending_leaves: Mutex<Vec<(BoardId, Uuid)>>,
    /// Joins and leaves on their way to the batching writer.
    changes: mpsc::UnboundedSender<Change>,
    changes_rx: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
}

enum Change {
    Join {
        board: BoardId,
        viewer: Viewer,
        /// The board's presence version once the join is written; `None`: no such board.
        done: oneshot::Sender<Result<Option<i64>, DbError>>,
    },
    Leave {
        board: BoardId,
        viewer: Uuid,
        done: oneshot::Sender<()>,
    },
}

/// The most changes taken from the queue for one round of batches.
const BATCH: usize = 4096;

/// A board's share of one round: its joins and leaves, and who waits on them.
#[derive(Default)]
struct BoardBatch {
    joining: Vec<Viewer>,
    joined_done: Vec<oneshot::Sender<Result<Option<i64>, DbError>>>,
    leaving: Vec<Uuid>,
    left_done: Vec<oneshot::Sender<()>>,
}

impl Presence {
    pub fn new(
        db: Database,
        stats: Arc<Stats>,
        heartbeat: Duration,
        limit: usize,
    ) -> Arc<Presence> {
        let (changes, changes_rx) = mpsc::unbounded_channel();
        Arc::new(Presence {
            db,
            stats,
            instance: Uuid::new_v4(),
            heartbeat,
            limit,
            local: Mutex::default(),
            owners: Mutex::default(),
            pending_leaves: Mutex::default(),
            changes,
            changes_rx: Mutex::new(Some(changes_rx)),
        })
    }

    /// `PRESENCE_LIST_LIMIT`.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Registers the instance and starts the writer and the maintenance loop, which ends
    /// with `shutdown` and then removes the instance's row.
    pub async fn start(self: &Arc<Self>, shutdown: CancellationToken) -> Result<(), DbError> {
        let client = self.db.client().await?;
        presence::register_instance(&client, self.instance).await?;
        drop(client);
        let taken = self.changes_rx.lock().take();
        if let Some(changes) = taken {
            tokio::spawn(self.clone().write_changes(changes));
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(this.heartbeat / 2);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticker.tick() => {
                        if let Err(e) = this.maintain().await {
                            log::warn!("presence: maintenance failed: {e}");
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// Adds a viewer of `board` and returns it with the board's presence version once its
    /// join is written and announced; `None` when the board does not exist. `sub` is the
    /// token subject of its stream (auth on), kept with it for signals.
    ///
    /// With a `session`, a viewer of that session (and `sub`) held since its stream closed
    /// is taken over instead: same id, nothing announced. A reconnect that arrives before
    /// the server noticed the old stream close waits for it, up to one heartbeat interval.
    /// A hold already expired is reaped first, so the board hears the old viewer leave
    /// before the new one joins.
    pub async fn join(
        &self,
        board: BoardId,
        name: String,
        sub: Option<String>,
        session: Option<String>,
    ) -> Result<Option<(Viewer, i64)>, DbError> {
        if let Some(session) = &session {
            if let Some(taken) = self
                .take_over(board, session, sub.as_deref(), &name)
                .await?
            {
                let owner = Owner {
                    sub: sub.clone(),
                    session: Some(session.clone()),
                };
                self.owners.lock().insert(taken.0.id, owner);
                self.lock_local()
                    .insert(taken.0.id, (board, taken.0.clone()));
                return Ok(Some(taken));
            }
            let leaving = Leaving::Expired {
                session,
                sub: sub.as_deref(),
            };
            self.apply(board, &[], leaving).await?;
        }
        let viewer = Viewer {
            id: Uuid::new_v4(),
            name,
            // PostgreSQL keeps microseconds: the time every instance reads back from the
            // table must be the one announced.
            since: Utc::now().trunc_subsecs(6),
        };
        if sub.is_some() || session.is_some() {
            self.owners.lock().insert(viewer.id, Owner { sub, session });
        }
        let (done, written) = oneshot::channel();
        let change = Change::Join {
            board,
            viewer: viewer.clone(),
            done,
        };
        let stopped = || DbError::unavailable("the presence writer has stopped");
        self.changes.send(change).map_err(|_| stopped())?;
        let Some(version) = written.await.map_err(|_| stopped())?? else {
            self.owners.lock().remove(&viewer.id);
            return Ok(None);
        };
        self.lock_local().insert(viewer.id, (board, viewer.clone()));
        Ok(Some((viewer, version)))
    }

    /// The viewer a session's new stream takes over, if one is held for it. While the
    /// session still has an open stream on the board (its close not yet noticed), asks
    /// again every 50 ms for up to one heartbeat interval.
    async fn take_over(
        &self,
        board: BoardId,
        session: &str,
        sub: Option<&str>,
        name: &str,
    ) -> Result<Option<(Viewer, i64)>, DbError> {
        let deadline = tokio::time::Instant::now() + self.heartbeat;
        loop {
            let client = self.db.client().await?;
            if let Some(taken) =
                presence::claim(&client, board, session, sub, name, self.instance).await?
            {
                return Ok(Some(taken));
            }
            if tokio::time::Instant::now() >= deadline
                || !presence::session_open(&client, board, session, sub, name).await?
            {
                return Ok(None);
            }
            drop(client);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ends a stream's viewer: held for two heartbeat intervals when it has a session (a
    /// stream of that session may take it over; nothing is announced), else removed at
    /// once as [`leave`](Self::leave) does.
    pub async fn end(&self, board: BoardId, viewer: Uuid) {
        let session = self
            .owners
            .lock()
            .get(&viewer)
            .is_some_and(|owner| owner.session.is_some());
        if session {
            let held = match self.db.client().await {
                Ok(client) => presence::hold(&client, board, viewer, self.heartbeat * 2).await,
                Err(e) => Err(e),
            };
            match held {
                Ok(_) => {
                    self.lock_local().remove(&viewer);
                    self.owners.lock().remove(&viewer);
                    return;
                }
                Err(e) => log::warn!("presence: viewer {viewer} not held ({e}); it leaves"),
            }
        }
        self.leave(board, viewer).await;
    }

    /// Removes a viewer, returning once its leave is written (or queued for a retry when the
    /// database cannot be reached now).
    pub async fn leave(&self, board: BoardId, viewer: Uuid) {
        self.lock_local().remove(&viewer);
        self.owners.lock().remove(&viewer);
        let (done, written) = oneshot::channel();
        if self
            .changes
            .send(Change::Leave {
                board,
                viewer,
                done,
            })
            .is_ok()
        {
            let _ = written.await;
        }
    }

    /// The board's presence as the database has it now: the count and the oldest viewers
    /// (up to the list limit, or all with `all`).
    pub async fn view(&self, board: BoardId, all: bool) -> Result<View, DbError> {
        let client = self.db.client().await?;
        presence::view(&client, board, (!all).then_some(self.limit)).await
    }

    /// Every viewer of the board, oldest first (`GET …/presence`).
    pub async fn list(&self, board: BoardId) -> Result<Vec<Viewer>, DbError> {
        let client = self.db.client().await?;
        presence::list(&client, board).await
    }

    /// Writes changes in rounds: everything queued when a round starts, grouped by board,
    /// the boards written concurrently (each a transaction of its own).
    async fn write_changes(self: Arc<Self>, mut changes: mpsc::UnboundedReceiver<Change>) {
        let mut round = Vec::new();
        while changes.recv_many(&mut round, BATCH).await > 0 {
            let mut boards: HashMap<BoardId, BoardBatch> = HashMap::new();
            for change in round.drain(..) {
                match change {
                    Change::Join {
                        board,
                        viewer,
                        done,
                    } => {
                        let batch = boards.entry(board).or_default();
                        batch.joining.push(viewer);
                        batch.joined_done.push(done);
                    }
                    Change::Leave {
                        board,
                        viewer,
                        done,
                    } => {
                        let batch = boards.entry(board).or_default();
                        batch.leaving.push(viewer);
                        batch.left_done.push(done);
                    }
                }
            }
            let writes = boards
                .into_iter()
                .map(|(board, batch)| self.write_batch(board, batch));
            futures_util::future::join_all(writes).await;
        }
    }

    async fn write_batch(&self, board: BoardId, batch: BoardBatch) {
        let result = self
            .apply(board, &batch.joining, Leaving::These(&batch.leaving))
            .await;
        match &result {
            Ok(_) => {}
            Err(e) if !batch.leaving.is_empty() => {
                log::warn!("presence: {} leaves deferred: {e}", batch.leaving.len());
                self.defer(board, batch.leaving);
            }
            Err(_) => {}
        }
        for done in batch.joined_done {
            let answer = match &result {
                Ok(applied) => Ok(applied.as_ref().map(|a| a.version)),
                Err(e) => Err(for_each_joiner(e)),
            };
            let _ = done.send(answer);
        }
        for done in batch.left_done {
            let _ = done.send(());
        }
    }

    async fn apply(
        &self,
        board: BoardId,
        joining: &[Viewer],
        leaving: Leaving<'_>,
    ) -> Result<Option<Applied>, DbError> {
        let owners: Vec<Owner> = {
            let known = self.owners.lock();
            joining
                .iter()
                .map(|v| known.get(&v.id).cloned().unwrap_or_default())
                .collect()
        };
        let mut client = self.db.client().await?;
        let applied = presence::apply(
            &mut client,
            board,
            joining,
            &owners,
            leaving,
            self.instance,
            self.limit,
        )
        .await?;
        if let Some(applied) = &applied
            && !(applied.joined.is_empty() && applied.left.is_empty())
        {
            self.stats
                .presence_written(applied.joined.len() + applied.left.len());
        }
        Ok(applied)
    }

    /// Writes the leaves still pending (at shutdown the worker runtimes that drove their
    /// connections are gone, so they failed), then removes the instance's row, so others
    /// reap whatever viewers it left at once.
    pub async fn stop(&self) {
        let by_board = self.take_pending_leaves();
        for (board, viewers) in by_board {
            if let Err(e) = self.apply(board, &[], Leaving::These(&viewers)).await {
                log::warn!(
                    "presence: {} leaves not written at stop ({e}); others will reap them",
                    viewers.len()
                );
            }
        }
        if let Ok(client) = self.db.client().await {
            let _ = presence::remove_instance(&client, self.instance).await;
        }
    }

    /// The leaves waiting for a retry, grouped by board (one transaction each).
    fn take_pending_leaves(&self) -> HashMap<BoardId, Vec<Uuid>> {
        let pending = std::mem::take(&mut *self.pending_leaves.lock());
        let mut by_board: HashMap<BoardId, Vec<Uuid>> = HashMap::new();
        for (board, viewer) in pending {
            by_board.entry(board).or_default().push(viewer);
        }
        by_board
    }

    fn defer(&self, board: BoardId, viewers: Vec<Uuid>) {
        let mut pending = self.pending_leaves.lock();
        pending.extend(viewers.into_iter().map(|v| (board, v)));
    }

    fn lock_local(&self) -> parking_lot::MutexGuard<'_, HashMap<Uuid, (BoardId, Viewer)>> {
        self.local.lock()
    }

    async fn maintain(&self) -> Result<(), DbError> {
        let client = self.db.client().await?;
        if !presence::refresh_instance(&client, self.instance).await? {
            // Others took this instance for dead (it could not reach the database for two
            // intervals) and announced its viewers left; they are still here.
            log::warn!(
                "presence: this instance was reaped while unreachable; re-announcing its viewers"
            );
            presence::register_instance(&client, self.instance).await?;
            let mut by_board: HashMap<BoardId, Vec<Viewer>> = HashMap::new();
            for (board, viewer) in self.lock_local().values().cloned() {
                by_board.entry(board).or_default().push(viewer);
            }
            for (board, viewers) in by_board {
                self.apply(board, &viewers, Leaving::These(&[])).await?;
            }
        }
        // `apply` takes its own pooled connection: hold none meanwhile.
        drop(client);
        let by_board = self.take_pending_leaves();
        let mut failed = None;
        for (board, viewers) in by_board {
            if failed.is_some() {
                self.defer(board, viewers);
            } else if let Err(e) = self.apply(board, &[], Leaving::These(&viewers)).await {
                self.defer(board, viewers);
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let orphaned = {
            let client = self.db.client().await?;
            presence::orphaned_boards(&client, self.heartbeat * 2).await?
        };
        let mut reaped = 0;
        for board in orphaned {
            if let Some(applied) = self.apply(board, &[], Leaving::Orphaned).await? {
                reaped += applied.left.len();
            }
        }
        let expired = {
            let client = self.db.client().await?;
            presence::expired_boards(&client).await?
        };
        for board in expired {
            // No session matches "": only expired holds go.
            let leaving = Leaving::Expired {
                session: "",
                sub: None,
            };
            if let Some(applied) = self.apply(board, &[], leaving).await? {
                reaped += applied.left.len();
            }
        }
        if reaped > 0 {
            log::info!(
                "presence: reaped {reaped} viewers (of vanished instances, or held for a session past its time)"
            );
        }
        Ok(())
    }
}

/// The error of a batch, for each of the joins it carried (`DbError` keeps its source,
/// which cannot be cloned): the same kind and words.
fn for_each_joiner(e: &DbError) -> DbError {
    match e.kind() {
        DbErrorKind::Unavailable => DbError::unavailable(e.to_string()),
        DbErrorKind::Query => DbError::query(e.to_string()),
    }
}
