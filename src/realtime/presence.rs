//! Presence across instances: who is viewing which board, kept in PostgreSQL so every
//! instance of a deployment sees the same list, and cleaned up when an instance vanishes.
//!
//! Liveness costs one statement per instance per half heartbeat interval (the instance's
//! row), not a write per stream. An instance silent for two intervals is reaped by any
//! other, which announces its viewers' departures: within 2.5 intervals of the death.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{Database, DbError, presence};
use crate::domain::{ids::BoardId, viewer::Viewer};

pub struct Presence {
    db: Database,
    instance: Uuid,
    heartbeat: Duration,
    /// This instance's viewers, so they can be re-announced if the instance was reaped
    /// while it could not reach the database.
    local: Mutex<HashMap<Uuid, (BoardId, Viewer)>>,
    /// Leaves that failed (database unreachable), retried by the maintenance loop.
    pending_leaves: Mutex<Vec<(BoardId, Uuid)>>,
    /// Per-board queues for joins (see `join`).
    turns: Mutex<HashMap<BoardId, Arc<tokio::sync::Mutex<()>>>>,
    /// Leaves on their way to the batching worker.
    leaves: mpsc::UnboundedSender<Leave>,
    leaves_rx: Mutex<Option<mpsc::UnboundedReceiver<Leave>>>,
}

struct Leave {
    board: BoardId,
    viewer: Uuid,
    done: oneshot::Sender<()>,
}

/// The most leaves written in one go; a flood of closes becomes a few transactions.
const LEAVE_BATCH: usize = 1000;

impl Presence {
    pub fn new(db: Database, heartbeat: Duration) -> Arc<Presence> {
        let (leaves, leaves_rx) = mpsc::unbounded_channel();
        Arc::new(Presence {
            db,
            instance: Uuid::new_v4(),
            heartbeat,
            local: Mutex::default(),
            pending_leaves: Mutex::default(),
            turns: Mutex::default(),
            leaves,
            leaves_rx: Mutex::new(Some(leaves_rx)),
        })
    }

    /// Registers the instance and starts the maintenance loop, which ends with `shutdown`
    /// and then removes the instance's row.
    pub async fn start(self: &Arc<Self>, shutdown: CancellationToken) -> Result<(), DbError> {
        let client = self.db.client().await?;
        presence::register_instance(&client, self.instance).await?;
        drop(client);
        let taken = self
            .leaves_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(leaves) = taken {
            tokio::spawn(self.clone().write_leaves(leaves));
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
                            log::warn!("presence maintenance failed: {e}");
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// Adds a viewer of `board` and returns it with everyone viewing; `None` when the board
    /// does not exist.
    pub async fn join(
        &self,
        board: BoardId,
        name: String,
    ) -> Result<Option<(Viewer, Vec<Viewer>)>, DbError> {
        let viewer = Viewer {
            id: Uuid::new_v4(),
            name,
            since: Utc::now(),
        };
        // Joins of one board take the board's advisory lock in turn. Queue here first, so a
        // burst of opens waits in memory instead of holding every pooled connection while
        // it waits on the database (which starved REST requests and gave 503s).
        let turn = self.board_turn(board);
        let joined = {
            let _turn = turn.lock().await;
            self.join_now(board, &viewer).await
        };
        self.release_turn(board, turn);
        let Some(viewers) = joined? else {
            return Ok(None);
        };
        self.lock_local().insert(viewer.id, (board, viewer.clone()));
        Ok(Some((viewer, viewers)))
    }

    /// Removes a viewer, returning once its leave is written (or queued for a retry when the
    /// database cannot be reached now).
    pub async fn leave(&self, board: BoardId, viewer: Uuid) {
        self.lock_local().remove(&viewer);
        let (done, written) = oneshot::channel();
        if self
            .leaves
            .send(Leave {
                board,
                viewer,
                done,
            })
            .is_ok()
        {
            let _ = written.await;
        }
    }

    /// Writes leaves in batches: everything queued at the moment, one transaction a board.
    async fn write_leaves(self: Arc<Self>, mut leaves: mpsc::UnboundedReceiver<Leave>) {
        let mut batch = Vec::new();
        while leaves.recv_many(&mut batch, LEAVE_BATCH).await > 0 {
            let mut by_board: HashMap<BoardId, Vec<Uuid>> = HashMap::new();
            for leave in &batch {
                by_board.entry(leave.board).or_default().push(leave.viewer);
            }
            for (board, viewers) in by_board {
                if let Err(e) = self.write_leave(board, &viewers).await {
                    log::warn!("presence: {} leaves deferred: {e}", viewers.len());
                    self.defer(board, viewers);
                }
            }
            for leave in batch.drain(..) {
                let _ = leave.done.send(());
            }
        }
    }

    async fn write_leave(&self, board: BoardId, viewers: &[Uuid]) -> Result<(), DbError> {
        let mut client = self.db.client().await?;
        presence::leave(&mut client, board, viewers).await
    }

    pub async fn list(&self, board: BoardId) -> Result<Vec<Viewer>, DbError> {
        let client = self.db.client().await?;
        presence::list(&client, board).await
    }

    /// Writes the leaves still pending (at shutdown the worker runtimes that drove their
    /// connections are gone, so they failed), then removes the instance's row, so others
    /// reap whatever viewers it left at once.
    pub async fn stop(&self) {
        let by_board = self.take_pending_leaves();
        for (board, viewers) in by_board {
            if let Err(e) = self.write_leave(board, &viewers).await {
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

    /// The in-process queue for one board's joins; dropped once no one waits on it.
    fn board_turn(&self, board: BoardId) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        turns.entry(board).or_default().clone()
    }

    /// Gives the turn back, forgetting the board's queue when no one else waits in it.
    fn release_turn(&self, board: BoardId, turn: Arc<tokio::sync::Mutex<()>>) {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        drop(turn);
        if turns.get(&board).is_some_and(|t| Arc::strong_count(t) == 1) {
            turns.remove(&board);
        }
    }

    async fn join_now(
        &self,
        board: BoardId,
        viewer: &Viewer,
    ) -> Result<Option<Vec<Viewer>>, DbError> {
        let mut client = self.db.client().await?;
        presence::join(&mut client, board, viewer, self.instance).await
    }

    /// The leaves waiting for a retry, grouped by board (one transaction each).
    fn take_pending_leaves(&self) -> HashMap<BoardId, Vec<Uuid>> {
        let pending = std::mem::take(
            &mut *self
                .pending_leaves
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut by_board: HashMap<BoardId, Vec<Uuid>> = HashMap::new();
        for (board, viewer) in pending {
            by_board.entry(board).or_default().push(viewer);
        }
        by_board
    }

    fn defer(&self, board: BoardId, viewers: Vec<Uuid>) {
        let mut pending = self
            .pending_leaves
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pending.extend(viewers.into_iter().map(|v| (board, v)));
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (BoardId, Viewer)>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn maintain(&self) -> Result<(), DbError> {
        let mut client = self.db.client().await?;
        if !presence::refresh_instance(&client, self.instance).await? {
            // Others took this instance for dead (it could not reach the database for two
            // intervals) and announced its viewers left; they are still here.
            log::warn!(
                "presence: this instance was reaped while unreachable; re-announcing its viewers"
            );
            presence::register_instance(&client, self.instance).await?;
            let local: Vec<(BoardId, Viewer)> = self.lock_local().values().cloned().collect();
            for (board, viewer) in local {
                presence::join(&mut client, board, &viewer, self.instance).await?;
            }
        }
        let by_board = self.take_pending_leaves();
        let mut failed = None;
        for (board, viewers) in by_board {
            if failed.is_some() {
                self.defer(board, viewers);
            } else if let Err(e) = presence::leave(&mut client, board, &viewers).await {
                self.defer(board, viewers);
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let reaped = presence::reap(&mut client, self.heartbeat * 2).await?;
        if reaped > 0 {
            log::info!("presence: reaped {reaped} viewers of vanished instances");
        }
        Ok(())
    }
}
