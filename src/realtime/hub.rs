//! `LISTENER=shared`: one listener connection per instance, fanned out in memory.
//!
//! The hub LISTENs on a board's channel when the board gets its first stream and UNLISTENs
//! when its last one leaves. Each notification is parsed once, a reference payload is read
//! from the log once, and the SSE frame is encoded once: every stream of the board gets the
//! same `Bytes`. Fan-out never waits on a stream: each has a bounded queue, and a stream
//! whose queue is full is dropped from the fan-out (its task closes it as `slow`), so one
//! stuck client cannot delay the others.
//!
//! When the connection dies (an error, or a ping that times out on a hung backend) the hub
//! reconnects with backoff, re-LISTENs every active board and tells every stream to catch
//! up from the log; `/readyz` answers 503 meanwhile.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::{
    sync::{
        mpsc::{self, error::TrySendError},
        oneshot,
    },
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};
use uuid::Uuid;

use super::{
    QUEUE_LIMIT,
    listener::{self, Listener, ListenerEvent},
    notification::{Decoded, Delivery, decode},
    presence::Presence,
    presence_list,
    stats::Stats,
};
use crate::db::{Database, DbError};
use crate::domain::ids::BoardId;

enum Command {
    Subscribe {
        board: BoardId,
        id: u64,
        tx: mpsc::Sender<Delivery>,
        ready: oneshot::Sender<Result<(), DbError>>,
    },
    Unsubscribe {
        board: BoardId,
        id: u64,
    },
}

/// A handle on the instance's hub.
#[derive(Clone)]
pub struct Hub {
    commands: mpsc::UnboundedSender<Command>,
    next_id: Arc<AtomicU64>,
}

/// A stream's place in the fan-out; leaving it (drop) unsubscribes.
pub struct Subscription {
    pub events: mpsc::Receiver<Delivery>,
    board: BoardId,
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Unsubscribe {
            board: self.board,
            id: self.id,
        });
    }
}

/// How long presence changes are gathered before they go out together.
const PRESENCE_WINDOW: Duration = Duration::from_millis(50);
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

impl Hub {
    /// Connects the listener, then runs the hub's task on the current runtime.
    pub async fn start(
        db: Database,
        stats: Arc<Stats>,
        presence: Arc<Presence>,
        heartbeat: Duration,
    ) -> Result<Hub, DbError> {
        let listener = Listener::connect(&db).await?;
        stats.listener_opened();
        stats.set_listener_down(false);
        let (commands, receiver) = mpsc::unbounded_channel();
        let task = HubTask {
            db,
            stats,
            presence,
            listener: Some(listener),
            connected_once: true,
            presence_batches: HashMap::new(),
            presence_window_ends: None,
            boards: HashMap::new(),
            ping_every: heartbeat.max(Duration::from_secs(5)),
        };
        tokio::spawn(task.run(receiver));
        Ok(Hub {
            commands,
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Joins the board's fan-out; returns once the board's channel is LISTENed, so
    /// nothing committed after this returns can be missed.
    pub async fn subscribe(&self, board: BoardId) -> Result<Subscription, DbError> {
        let (tx, events) = mpsc::channel(QUEUE_LIMIT);
        let (ready, listening) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let subscription = Subscription {
            events,
            board,
            id,
            commands: self.commands.clone(),
        };
        self.commands
            .send(Command::Subscribe {
                board,
                id,
                tx,
                ready,
            })
            .map_err(|_| DbError::unavailable("the listener hub has stopped"))?;
        listening
            .await
            .map_err(|_| DbError::unavailable("the listener hub has stopped"))??;
        Ok(subscription)
    }
}

struct HubTask {
    db: Database,
    stats: Arc<Stats>,
    presence: Arc<Presence>,
    listener: Option<Listener>,
    connected_once: bool,
    /// Presence changes waiting for the end of their window, per board, and when the
    /// oldest window ends.
    presence_batches: HashMap<BoardId, (Vec<Uuid>, Vec<Bytes>)>,
    presence_window_ends: Option<Instant>,
    boards: HashMap<BoardId, Vec<(u64, mpsc::Sender<Delivery>)>>,
    ping_every: Duration,
}

impl HubTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut reconnect_at: Option<Instant> = None;
        let mut backoff = RECONNECT_FIRST;
        let mut ping = interval(self.ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let presence_due = self.presence_due();
            let presence_pending = !self.presence_batches.is_empty();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => break,
                },
                signal = next_signal(&mut self.listener) => match signal {
                    ListenerEvent::Notification { channel, payload } => self.fan_out(&channel, &payload).await,
                    ListenerEvent::Lost(why) => {
                        log::warn!("shared listener lost ({why}); reconnecting");
                        self.lose();
                        reconnect_at = Some(Instant::now());
                    }
                },
                _ = sleep_until(reconnect_at.unwrap_or_else(Instant::now)), if reconnect_at.is_some() => {
                    match self.reconnect().await {
                        Ok(()) => {
                            reconnect_at = None;
                            backoff = RECONNECT_FIRST;
                        }
                        Err(e) => {
                            log::warn!("shared listener cannot reconnect: {e}");
                            self.lose();
                            backoff = (backoff * 2).min(RECONNECT_MAX);
                            reconnect_at = Some(Instant::now() + backoff);
                        }
                    }
                }
                _ = sleep_until(presence_due), if presence_pending => {
                    self.flush_presence();
                }
                _ = ping.tick() => {
                    if let Some(listener) = &self.listener
                        && !listener.ping(PING_TIMEOUT).await
                    {
                        log::warn!("shared listener did not answer a ping; reconnecting");
                        self.lose();
                        reconnect_at = Some(Instant::now());
                    }
                }
            }
        }
        self.lose();
    }

    fn presence_due(&self) -> Instant {
        self.presence_window_ends.unwrap_or_else(Instant::now)
    }

    /// Sends each board's gathered presence changes as one event.
    fn flush_presence(&mut self) {
        self.presence_window_ends = None;
        for (board, (viewers, frames)) in std::mem::take(&mut self.presence_batches) {
            let mut joined = bytes::BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
            let mut ends = Vec::with_capacity(viewers.len());
            for (viewer, frame) in viewers.into_iter().zip(&frames) {
                joined.extend_from_slice(frame);
                ends.push((viewer, joined.len()));
            }
            let event = Delivery::Presence {
                viewers: ends.into(),
                frames: joined.freeze(),
            };
            self.send(board, &event);
        }
    }

    fn lose(&mut self) {
        // The full list each stream gets with its resync supersedes these.
        self.presence_batches.clear();
        self.presence_window_ends = None;
        if self.listener.take().is_some() {
            self.stats.listener_closed();
        }
        self.stats.set_listener_down(true);
    }

    /// Connects, LISTENs on every active board, and tells their streams to catch up.
    async fn reconnect(&mut self) -> Result<(), DbError> {
        let listener = Listener::connect(&self.db).await?;
        let boards: Vec<BoardId> = self.boards.keys().copied().collect();
        listener.listen(&boards).await?;
        self.listener = Some(listener);
        self.stats.listener_opened();
        self.stats.set_listener_down(false);
        if std::mem::replace(&mut self.connected_once, true) {
            self.stats.listener_reconnected();
            log::info!(
                "shared listener back; re-listening on {} boards",
                boards.len()
            );
        }
        for board in boards {
            let presence = match self.presence.list(board).await {
                Ok(viewers) => presence_list(&viewers),
                Err(_) => continue,
            };
            self.send(board, &Delivery::Resync { presence });
        }
        Ok(())
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                board,
                id,
                tx,
                ready,
            } => {
                let result = self.add(board, id, tx).await;
                let _ = ready.send(result);
            }
            Command::Unsubscribe { board, id } => {
                let Some(streams) = self.boards.get_mut(&board) else {
                    return;
                };
                streams.retain(|(sid, _)| *sid != id);
                if streams.is_empty() {
                    self.boards.remove(&board);
                    if let Some(listener) = &self.listener
                        && let Err(e) = listener.unlisten(&[board]).await
                    {
                        log::warn!("UNLISTEN for board {board} failed: {e}");
                    }
                }
            }
        }
    }

    async fn add(
        &mut self,
        board: BoardId,
        id: u64,
        tx: mpsc::Sender<Delivery>,
    ) -> Result<(), DbError> {
        let Some(listener) = &self.listener else {
            return Err(DbError::unavailable("the shared listener is reconnecting"));
        };
        if !self.boards.contains_key(&board) {
            listener.listen(&[board]).await?;
        }
        self.boards.entry(board).or_default().push((id, tx));
        Ok(())
    }

    /// Turns one notification into one shared event and offers it to every stream of the
    /// board without waiting on any of them.
    async fn fan_out(&mut self, channel: &str, payload: &str) {
        let Some(board) = listener::board_of(channel) else {
            return;
        };
        if !self.boards.contains_key(&board) {
            return;
        }
        let event = match decode(&self.db, board, payload).await {
            Decoded::Change(event) => event,
            Decoded::Presence { viewer, frame } => {
                // Held for the batch: a crowd arriving costs one wake-up per stream per
                // window rather than one per viewer.
                let batch = self.presence_batches.entry(board).or_default();
                batch.0.push(viewer);
                batch.1.push(frame);
                self.presence_window_ends
                    .get_or_insert_with(|| Instant::now() + PRESENCE_WINDOW);
                return;
            }
            // Gone from the log (pruned or the board deleted) or unreadable for now: the
            // streams find the gap on the next event and catch up, or end.
            Decoded::Missing | Decoded::Unavailable | Decoded::Unreadable => return,
        };
        self.send(board, &event);
    }

    /// Offers `event` to every stream of `board`; a stream whose queue is full or closed
    /// leaves the fan-out (dropping its sender ends its subscription).
    fn send(&mut self, board: BoardId, event: &Delivery) {
        let Some(streams) = self.boards.get_mut(&board) else {
            return;
        };
        streams.retain(|(_, tx)| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => false,
        });
        // An emptied board is UNLISTENed when its subscriptions' unsubscribes arrive.
    }
}

async fn next_signal(listener: &mut Option<Listener>) -> ListenerEvent {
    match listener {
        Some(listener) => listener.recv().await,
        None => std::future::pending().await,
    }
}
