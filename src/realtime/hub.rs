//! `LISTENER=shared`: one listener connection per instance, fanned out in memory.
//!
//! The hub LISTENs on a board's channel when the board gets its first stream and UNLISTENs
//! when its last one leaves. Each notification is parsed once, a reference payload is read
//! from the log once, and the SSE frame is encoded once: every stream of the board gets the
//! same `Bytes`. Fan-out never waits on a stream: each has a bounded queue, and a stream
//! whose queue is full is dropped from the fan-out (its task closes it as `slow`), so one
//! stuck client cannot delay the others.
//!
//! **One hop per live event.** A stream starts *handled by its task*: the hub hands it
//! every delivery through the subscription's queue, and the task sends the opening,
//! replays, fills gaps. Once the task has sent everything up to the live edge and holds
//! nothing the hub gave it, it asks to go *live* ([`Subscription::go_live`]) with its last
//! seq. From then on the hub puts each next change frame straight into the stream's
//! [`Outbox`], the body's own queue: one wake-up (the connection's) per delivery, and the
//! stream's task sleeps until its heartbeat. Anything else hands the stream back to its
//! task first, with the last seq the hub put out: an event that is not the next one (a
//! missed notification: the task fills the gap from the log), `board.deleted`, or a
//! listener resync. The hub accepts a request only if every delivery it gave the task
//! before has been taken by it, so nothing the task still holds can come after what the
//! hub puts out.
//!
//! When the connection dies (an error, or a ping that times out on a hung backend) the hub
//! reconnects with backoff, re-LISTENs every active board and tells every stream to catch
//! up from the log; `/readyz` answers 503 meanwhile.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_channel::mpsc as deliveries;
use tokio::{
    sync::{mpsc, oneshot},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use super::{
    backoff::Reconnect,
    body::{Outbox, QUEUE_LIMIT, Refused},
    listener::{self, Listener, ListenerEvent},
    notification::{Decoded, Delivery, decode},
    presence::Presence,
    roster::{self, Listing, Roster},
    stats::{DropReason, Stats},
};
use crate::db::{Database, DbError};
use crate::domain::{event::EventKind, ids::BoardId, presence::Batch};

enum Command {
    Subscribe {
        board: BoardId,
        id: u64,
        tx: deliveries::Sender<Delivery>,
        given: Arc<AtomicU64>,
        outbox: Arc<Outbox>,
        ready: oneshot::Sender<Result<(), DbError>>,
    },
    /// The stream's task has sent everything up to `last_sent` and taken `received`
    /// deliveries: the hub may put the next events in its outbox itself.
    GoLive {
        board: BoardId,
        id: u64,
        last_sent: i64,
        received: u64,
    },
    Unsubscribe {
        board: BoardId,
        id: u64,
    },
    /// The board's presence once the roster reflects `version` (a stream's own join).
    Opening {
        board: BoardId,
        version: i64,
        reply: oneshot::Sender<Arc<Listing>>,
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
    pub events: deliveries::Receiver<Delivery>,
    /// Deliveries the hub has put in `events` so far.
    given: Arc<AtomicU64>,
    board: BoardId,
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
}

impl Subscription {
    /// Whether every delivery the hub gave is among the `received` ones taken.
    pub fn all_taken(&self, received: u64) -> bool {
        self.given.load(Ordering::Acquire) == received
    }

    /// Asks the hub to deliver this board's next change events (after `last_sent`, the
    /// last seq the stream queued) straight into the stream's outbox. `received` counts
    /// every delivery taken from `events`: the hub refuses if it has given more (they are
    /// still on their way, and must go out first); the task then asks again once it has
    /// taken them. Either way the answer comes as what arrives next: a refusal leaves the
    /// deliveries coming, an acceptance stops them until a `Delivery::Handback`.
    pub fn go_live(&self, last_sent: i64, received: u64) {
        let _ = self.commands.send(Command::GoLive {
            board: self.board,
            id: self.id,
            last_sent,
            received,
        });
    }
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
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications handled in one turn of the hub before it looks at its commands again:
/// enough for every board's signal window of a flush (one NOTIFY per board), few enough
/// that subscribes are not held up behind a long backlog.
const DRAIN_AT_ONCE: usize = 256;
/// Live deliveries put out between two readings of the clock for their latency: a
/// reading per delivery would cost more than the delivery's own queueing.
const LATENCY_EVERY: u64 = 64;

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
            counts_due: HashSet::new(),
            presence_window_ends: None,
            boards: HashMap::new(),
            signal_backlog: Vec::new(),
            ping_every: heartbeat.max(Duration::from_secs(5)),
        };
        tokio::spawn(task.run(receiver));
        Ok(Hub {
            commands,
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Joins the board's fan-out; returns once the board's channel is LISTENed, so
    /// nothing committed after this returns can be missed. The board's signals go straight
    /// into `outbox`, the stream's body's own queue, without waking the stream's task, and
    /// so do its live events once the stream goes live.
    pub async fn subscribe(
        &self,
        board: BoardId,
        outbox: Arc<Outbox>,
    ) -> Result<Subscription, DbError> {
        // One slot is the sender's own (futures-channel counts it): QUEUE_LIMIT in all.
        let (tx, events) = deliveries::channel(QUEUE_LIMIT - 1);
        let given = Arc::new(AtomicU64::new(0));
        let (ready, listening) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let subscription = Subscription {
            events,
            given: given.clone(),
            board,
            id,
            commands: self.commands.clone(),
        };
        self.commands
            .send(Command::Subscribe {
                board,
                id,
                tx,
                given,
                outbox,
                ready,
            })
            .map_err(|_| DbError::unavailable("the listener hub has stopped"))?;
        listening
            .await
            .map_err(|_| DbError::unavailable("the listener hub has stopped"))??;
        Ok(subscription)
    }

    /// The board's presence for a stream's opening, from the instance's roster once it
    /// reflects `version` (the stream's own join): no read from PostgreSQL.
    pub async fn opening(&self, board: BoardId, version: i64) -> Result<Arc<Listing>, DbError> {
        let stopped = || DbError::unavailable("the listener hub has stopped");
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Opening {
                board,
                version,
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }
}

struct HubTask {
    db: Database,
    stats: Arc<Stats>,
    presence: Arc<Presence>,
    listener: Option<Listener>,
    connected_once: bool,
    /// Presence frames waiting for the end of their window, per board (each with its
    /// version), and when the oldest window ends.
    presence_batches: HashMap<BoardId, Vec<(i64, Bytes)>>,
    /// Crowds whose `presence.count` is waiting for its second to come.
    counts_due: HashSet<BoardId>,
    presence_window_ends: Option<Instant>,
    boards: HashMap<BoardId, BoardEntry>,
    /// Signal batches taken from the listener, fanned out once the notifications that
    /// arrived with them are handled (see `take_notifications`).
    signal_backlog: Vec<(BoardId, Bytes, u64)>,
    ping_every: Duration,
}

/// A stream of a board, as the hub reaches it: its task's queue of deliveries, and its
/// body's outbox.
struct Member {
    id: u64,
    tx: deliveries::Sender<Delivery>,
    outbox: Arc<Outbox>,
    /// Deliveries put in `tx` so far (the task counts what it takes: see `go_live`).
    given: Arc<AtomicU64>,
    /// `Some(last seq put out)` while the hub feeds the outbox itself.
    live: Option<i64>,
}

impl Member {
    /// Gives the task a delivery; `false`: its queue is full or gone, so it leaves.
    fn give(&mut self, delivery: Delivery) -> bool {
        // Counted before it is sent, so the task never sees it taken and not counted;
        // on failure the member leaves the fan-out and the count no longer matters.
        self.given.fetch_add(1, Ordering::AcqRel);
        // Err: full (the client is a queue behind) or the stream gone.
        self.tx.try_send(delivery).is_ok()
    }

    /// The task asks to go live (see `Subscription::go_live`): granted only if it has
    /// taken every delivery given to it.
    fn go_live(&mut self, last_sent: i64, received: u64) {
        if self.live.is_none() && self.given.load(Ordering::Relaxed) == received {
            self.live = Some(last_sent);
        }
    }

    /// Hands a live stream back to its task, with the last seq put in its outbox.
    fn hand_back(&mut self) -> bool {
        match self.live.take() {
            Some(last_sent) => self.give(Delivery::Handback { last_sent }),
            None => true,
        }
    }

    /// Offers a change: into the outbox if the stream is live and this is its next event,
    /// else (back) to the task.
    fn offer_change(&mut self, event: &Delivery) -> Placed {
        if let (
            Some(last),
            Delivery::Change {
                seq, kind, frame, ..
            },
        ) = (self.live, event)
        {
            if *seq <= last {
                return Placed::WithTask;
            }
            if *seq == last + 1 && *kind != EventKind::BoardDeleted {
                return match self.outbox.push(frame.clone()) {
                    Ok(()) => {
                        self.live = Some(*seq);
                        Placed::InOutbox
                    }
                    Err(Refused::Full | Refused::Gone) => Placed::Left,
                };
            }
            if !self.hand_back() {
                return Placed::Left;
            }
        }
        if self.give(event.clone()) {
            Placed::WithTask
        } else {
            Placed::Left
        }
    }
}

/// Where a change offered to a stream went.
#[derive(Debug, PartialEq, Eq)]
enum Placed {
    /// Into its outbox: delivered by the hub.
    InOutbox,
    /// To its task (or nowhere, if the stream already had it).
    WithTask,
    /// Nowhere: the stream's queue was full or gone, so it leaves the fan-out.
    Left,
}

/// What the hub keeps for a board it serves.
struct BoardEntry {
    /// In id order (see `add`).
    streams: Vec<Member>,
    roster: Roster,
    /// Openings waiting for the roster to reach their join's version.
    waiters: Vec<(i64, oneshot::Sender<Arc<Listing>>)>,
}

impl BoardEntry {
    /// The stream `id`, if it is still in the fan-out.
    fn member(&mut self, id: u64) -> Option<&mut Member> {
        let at = self.position(id)?;
        self.streams.get_mut(at)
    }

    /// Where the stream `id` is in `streams` (kept in id order).
    fn position(&self, id: u64) -> Option<usize> {
        self.streams.binary_search_by_key(&id, |m| m.id).ok()
    }

    /// Answers the openings the roster now reflects.
    fn answer_waiters(&mut self) {
        let version = self.roster.version();
        if self.waiters.iter().all(|(v, _)| *v > version) {
            return;
        }
        let snapshot = self.roster.snapshot();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(v, _)| *v <= version);
        self.waiters = waiting;
        for (_, reply) in ready {
            let _ = reply.send(snapshot.clone());
        }
    }
}

impl HubTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut reconnect_at: Option<Instant> = None;
        let mut reconnect = Reconnect::default();
        let mut ping = interval(self.ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let presence_due = self.presence_due();
            let presence_pending = self.presence_window_ends.is_some();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => break,
                },
                signal = next_signal(&mut self.listener) => {
                    if let Err(why) = self.take_notifications(signal).await {
                        log::warn!("shared listener lost ({why}); reconnecting");
                        self.lose();
                        reconnect_at = Some(reconnect.next_attempt());
                    }
                }
                _ = sleep_until(reconnect_at.unwrap_or_else(Instant::now)), if reconnect_at.is_some() => {
                    match self.reconnect().await {
                        Ok(()) => {
                            reconnect_at = None;
                            reconnect.connected();
                        }
                        Err(e) => {
                            log::warn!("shared listener cannot reconnect: {e}");
                            self.lose();
                            reconnect_at = Some(reconnect.next_attempt());
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
                        reconnect_at = Some(reconnect.next_attempt());
                    }
                }
            }
        }
        self.lose();
    }

    /// Handles `first` and every notification already arrived after it (up to
    /// [`DRAIN_AT_ONCE`]), changes and presence in order, then fans out the signal batches
    /// among them: a change that arrived behind a burst of signal NOTIFYs (every board's
    /// window is flushed in one statement) reaches its streams before that burst's work.
    /// Signals are not ordered with change events (the contract), so this reorders
    /// nothing that is promised. `Err`: the connection is gone.
    async fn take_notifications(&mut self, first: ListenerEvent) -> Result<(), String> {
        let mut next = Some(first);
        let mut taken = 0;
        let mut outcome = Ok(());
        while let Some(event) = next.take() {
            match event {
                ListenerEvent::Notification { channel, payload } => {
                    self.fan_out(&channel, &payload).await;
                }
                ListenerEvent::Lost(why) => {
                    outcome = Err(why);
                    break;
                }
            }
            taken += 1;
            if taken < DRAIN_AT_ONCE {
                next = self.listener.as_mut().and_then(Listener::try_recv);
            }
        }
        for (board, frames, count) in std::mem::take(&mut self.signal_backlog) {
            self.send_signals(board, frames, count);
        }
        outcome
    }

    fn presence_due(&self) -> Instant {
        self.presence_window_ends.unwrap_or_else(Instant::now)
    }

    /// Sends each board's gathered presence frames as one event, with the `presence.count`
    /// of each crowd whose second has come.
    fn flush_presence(&mut self) {
        self.presence_window_ends = None;
        let mut batches = std::mem::take(&mut self.presence_batches);
        for board in std::mem::take(&mut self.counts_due) {
            let Some(entry) = self.boards.get_mut(&board) else {
                continue;
            };
            let tally = entry.roster.tally();
            if let Some(frame) = entry.roster.pacer.take(board, tally) {
                let version = entry.roster.version();
                batches.entry(board).or_default().push((version, frame));
            } else if entry.roster.pacer.due(tally).is_some() {
                self.counts_due.insert(board);
            }
        }
        let later: Vec<Instant> = self
            .counts_due
            .iter()
            .filter_map(|board| self.boards.get(board))
            .filter_map(|entry| entry.roster.pacer.due(entry.roster.tally()))
            .collect();
        for due in later {
            self.schedule(due);
        }
        for (board, frames) in batches {
            let mut joined =
                bytes::BytesMut::with_capacity(frames.iter().map(|(_, f)| f.len()).sum());
            let mut ends: Vec<(i64, usize)> = Vec::with_capacity(frames.len());
            for (version, frame) in &frames {
                joined.extend_from_slice(frame);
                match ends.last_mut() {
                    Some(last) if last.0 == *version => last.1 = joined.len(),
                    _ => ends.push((*version, joined.len())),
                }
            }
            if joined.is_empty() {
                continue;
            }
            let event = Delivery::Presence {
                ends: ends.into(),
                frames: joined.freeze(),
            };
            self.send(board, &event);
        }
    }

    /// Makes the presence window end by `at` at the latest.
    fn schedule(&mut self, at: Instant) {
        let ends = self.presence_window_ends.get_or_insert(at);
        *ends = (*ends).min(at);
    }

    fn lose(&mut self) {
        // The full list each stream gets with its resync supersedes these.
        self.presence_batches.clear();
        self.counts_due.clear();
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
            // Presence announcements were lost too: the roster starts again from the table.
            let Ok(presence) = self.reload(board).await else {
                continue;
            };
            self.resync(board, presence);
        }
        Ok(())
    }

    /// Reads the board's viewers again into its roster; returns the new snapshot.
    async fn reload(&mut self, board: BoardId) -> Result<Arc<Listing>, DbError> {
        let view = self.presence.view(board, true).await?;
        let limit = self.presence.limit();
        let Some(entry) = self.boards.get_mut(&board) else {
            return Err(DbError::unavailable("the board left the hub"));
        };
        let was_crowd = entry.roster.tally().crowd;
        entry.roster = Roster::load(view, limit);
        let crowd = entry.roster.tally().crowd;
        if crowd != was_crowd {
            self.stats.crowd_changed(board, crowd);
        }
        entry.answer_waiters();
        Ok(entry.roster.snapshot())
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                board,
                id,
                tx,
                given,
                outbox,
                ready,
            } => {
                let member = Member {
                    id,
                    tx,
                    outbox,
                    given,
                    live: None,
                };
                let result = self.add(board, member).await;
                let _ = ready.send(result);
            }
            Command::GoLive {
                board,
                id,
                last_sent,
                received,
            } => {
                let member = self
                    .boards
                    .get_mut(&board)
                    .and_then(|entry| entry.member(id));
                if let Some(member) = member {
                    member.go_live(last_sent, received);
                }
            }
            Command::Unsubscribe { board, id } => {
                let Some(entry) = self.boards.get_mut(&board) else {
                    return;
                };
                if let Some(at) = entry.position(id) {
                    entry.streams.remove(at);
                }
                if entry.streams.is_empty() {
                    if entry.roster.tally().crowd {
                        self.stats.crowd_changed(board, false);
                    }
                    self.boards.remove(&board);
                    self.presence_batches.remove(&board);
                    self.counts_due.remove(&board);
                    if let Some(listener) = &self.listener
                        && let Err(e) = listener.unlisten(&[board]).await
                    {
                        log::warn!("UNLISTEN for board {board} failed: {e}");
                    }
                }
            }
            Command::Opening {
                board,
                version,
                reply,
            } => {
                // The stream subscribed before it joined, so its board is here; if it is
                // not (the stream is already gone), dropping `reply` answers.
                if let Some(entry) = self.boards.get_mut(&board) {
                    entry.waiters.push((version, reply));
                    entry.answer_waiters();
                }
            }
        }
    }

    async fn add(&mut self, board: BoardId, member: Member) -> Result<(), DbError> {
        let Some(listener) = &self.listener else {
            return Err(DbError::unavailable("the shared listener is reconnecting"));
        };
        if let Some(entry) = self.boards.get_mut(&board) {
            // In id order, so a stream's commands find it by binary search (ids are
            // taken before their commands are sent, so they may arrive out of order).
            let at = entry.streams.partition_point(|m| m.id < member.id);
            entry.streams.insert(at, member);
            return Ok(());
        }
        // LISTEN first, then read: every presence change after the read is announced to
        // this hub, and the versions say which announcements the read already reflects.
        listener.listen(&[board]).await?;
        let view = match self.presence.view(board, true).await {
            Ok(view) => view,
            Err(e) => {
                if let Some(listener) = &self.listener {
                    let _ = listener.unlisten(&[board]).await;
                }
                return Err(e);
            }
        };
        let roster = Roster::load(view, self.presence.limit());
        if roster.tally().crowd {
            self.stats.crowd_changed(board, true);
        }
        self.boards.insert(
            board,
            BoardEntry {
                streams: vec![member],
                roster,
                waiters: Vec::new(),
            },
        );
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
            Decoded::Presence(batch) => {
                self.on_presence(board, &batch).await;
                return;
            }
            Decoded::Signals { frames, count } => {
                self.signal_backlog.push((board, frames, count));
                return;
            }
            // Gone from the log (pruned or the board deleted) or unreadable for now: the
            // streams find the gap on the next event and catch up, or end.
            Decoded::Missing | Decoded::Unavailable | Decoded::Unreadable => return,
        };
        self.send_change(board, &event);
    }

    /// Applies a presence announcement to the board's roster. Per-viewer frames are held
    /// for the window (a crowd arriving costs one wake-up per stream per window rather than
    /// one per viewer); a crowd back at the list limit gets its list at once.
    async fn on_presence(&mut self, board: BoardId, batch: &Batch) {
        let Some(entry) = self.boards.get_mut(&board) else {
            return;
        };
        let was_crowd = entry.roster.tally().crowd;
        let (frames, relist) = match entry.roster.apply(board, batch) {
            roster::Applied::Stale => return,
            roster::Applied::Frames { frames, relist } => (frames, relist),
            roster::Applied::Gap => {
                log::warn!(
                    "presence of board {board}: announcement {} out of order; reloading",
                    batch.version
                );
                self.presence_batches.remove(&board);
                if let Ok(snapshot) = self.reload(board).await {
                    self.send(board, &Delivery::List(snapshot));
                }
                return;
            }
        };
        entry.answer_waiters();
        let tally = entry.roster.tally();
        if tally.crowd != was_crowd {
            self.stats.crowd_changed(board, tally.crowd);
        }
        if relist {
            // The list reflects every frame still waiting in the window.
            entry.roster.pacer.listed(tally.count);
            let snapshot = entry.roster.snapshot();
            self.presence_batches.remove(&board);
            self.counts_due.remove(&board);
            self.send(board, &Delivery::List(snapshot));
            return;
        }
        let count_due = entry.roster.pacer.due(tally);
        if !frames.is_empty() {
            self.presence_batches
                .entry(board)
                .or_default()
                .push((batch.version, frames));
            self.schedule(Instant::now() + PRESENCE_WINDOW);
        }
        if let Some(due) = count_due {
            self.counts_due.insert(board);
            self.schedule(due);
        }
    }

    /// Gives `event` (presence) to the task of every stream of `board`; a stream whose
    /// queue is full or closed leaves the fan-out (dropping its sender ends its
    /// subscription). Presence is not ordered with changes, so a live stream stays live.
    fn send(&mut self, board: BoardId, event: &Delivery) {
        let Some(entry) = self.boards.get_mut(&board) else {
            return;
        };
        entry
            .streams
            .retain_mut(|member| member.give(event.clone()));
        // An emptied board is UNLISTENed when its subscriptions' unsubscribes arrive.
    }

    /// After a listener outage: every stream goes back to its task, which catches up
    /// from the log.
    fn resync(&mut self, board: BoardId, presence: Arc<Listing>) {
        let Some(entry) = self.boards.get_mut(&board) else {
            return;
        };
        let event = Delivery::Resync { presence };
        entry
            .streams
            .retain_mut(|member| member.hand_back() && member.give(event.clone()));
    }

    /// Offers a change to every stream of `board`: straight into the outbox of each live
    /// stream it is the next event of, to the task of every other. Counts the deliveries
    /// put out here and their latency (commit → queued), read once per [`LATENCY_EVERY`]
    /// streams.
    fn send_change(&mut self, board: BoardId, event: &Delivery) {
        let Some(entry) = self.boards.get_mut(&board) else {
            return;
        };
        let at = match event {
            Delivery::Change { at, .. } => *at,
            _ => None,
        };
        let stats = &self.stats;
        let (mut put, mut unobserved) = (0, 0);
        let observe = |n: u64| {
            if let Some(at) = at {
                stats.observe_deliveries_since(at, n);
            }
        };
        entry
            .streams
            .retain_mut(|member| match member.offer_change(event) {
                Placed::InOutbox => {
                    put += 1;
                    unobserved += 1;
                    if unobserved == LATENCY_EVERY {
                        observe(unobserved);
                        unobserved = 0;
                    }
                    true
                }
                Placed::WithTask => true,
                Placed::Left => false,
            });
        if unobserved > 0 {
            observe(unobserved);
        }
        stats.delivered(put);
    }

    /// Queues a signal batch (encoded once, shared) on the body of every stream of
    /// `board`. It never waits and never ends a stream: a stream whose client is behind
    /// loses its oldest signals (`overload`), never a change.
    fn send_signals(&mut self, board: BoardId, frames: Bytes, count: u64) {
        let Some(entry) = self.boards.get(&board) else {
            return;
        };
        let (mut queued, mut dropped) = (0, 0);
        for member in &entry.streams {
            let offered = member.outbox.offer_signals(frames.clone(), count);
            queued += offered.queued;
            dropped += offered.dropped;
        }
        self.stats.signals_delivered(queued);
        if dropped > 0 {
            self.stats.signal_dropped(DropReason::Overload, dropped);
        }
    }
}

async fn next_signal(listener: &mut Option<Listener>) -> ListenerEvent {
    match listener {
        Some(listener) => listener.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribed() -> (Member, deliveries::Receiver<Delivery>, Arc<Outbox>) {
        let (tx, rx) = deliveries::channel(8);
        let outbox = Arc::new(Outbox::default());
        let member = Member {
            id: 1,
            tx,
            outbox: outbox.clone(),
            given: Arc::default(),
            live: None,
        };
        (member, rx, outbox)
    }

    fn change(seq: i64, kind: EventKind) -> Delivery {
        Delivery::Change {
            seq,
            kind,
            frame: Bytes::from(format!("id: {seq}\nevent: x\ndata: {{}}\n\n")),
            at: None,
        }
    }

    fn offer(member: &mut Member, seq: i64, kind: EventKind) -> Placed {
        member.offer_change(&change(seq, kind))
    }

    fn given(rx: &mut deliveries::Receiver<Delivery>) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(delivery) = rx.try_recv() {
            got.push(match delivery {
                Delivery::Change { seq, .. } => format!("change {seq}"),
                Delivery::Handback { last_sent } => format!("handback {last_sent}"),
                other => format!("{other:?}"),
            });
        }
        got
    }

    #[test]
    fn a_stream_goes_live_only_once_it_has_taken_everything_given() {
        let (mut member, mut rx, outbox) = subscribed();
        assert_eq!(
            offer(&mut member, 4, EventKind::NoteCreated),
            Placed::WithTask
        );
        // Asked before it took delivery 1: refused, the next change still goes to the task.
        member.go_live(3, 0);
        assert_eq!(
            offer(&mut member, 5, EventKind::NoteCreated),
            Placed::WithTask
        );
        assert_eq!(given(&mut rx), ["change 4", "change 5"]);
        member.go_live(5, 2);
        assert_eq!(member.live, Some(5));
        // Live: the next event goes to the outbox, and nothing to the task.
        assert_eq!(
            offer(&mut member, 6, EventKind::NoteUpdated),
            Placed::InOutbox
        );
        assert_eq!(
            offer(&mut member, 6, EventKind::NoteUpdated),
            Placed::WithTask
        );
        assert!(given(&mut rx).is_empty());
        assert_eq!(outbox.queued(), 1);
    }

    #[test]
    fn a_gap_or_a_deleted_board_hands_the_stream_back_to_its_task() {
        let (mut member, mut rx, outbox) = subscribed();
        member.go_live(10, 0);
        // 11 was missed (say, a reference the hub could not read): the task fills it.
        assert_eq!(
            offer(&mut member, 12, EventKind::NoteUpdated),
            Placed::WithTask
        );
        assert_eq!(given(&mut rx), ["handback 10", "change 12"]);
        assert_eq!(member.live, None);
        assert_eq!(outbox.queued(), 0);

        member.go_live(12, 2);
        assert_eq!(
            offer(&mut member, 13, EventKind::NoteDeleted),
            Placed::InOutbox
        );
        assert_eq!(
            offer(&mut member, 14, EventKind::BoardDeleted),
            Placed::WithTask
        );
        assert_eq!(given(&mut rx), ["handback 13", "change 14"]);
        assert_eq!(outbox.queued(), 1);
    }

    #[test]
    fn a_live_stream_whose_outbox_is_full_or_gone_leaves_the_fan_out() {
        let (mut member, _rx, outbox) = subscribed();
        member.go_live(0, 0);
        for seq in 1..=QUEUE_LIMIT as i64 {
            assert_eq!(
                offer(&mut member, seq, EventKind::NoteCreated),
                Placed::InOutbox
            );
        }
        assert_eq!(outbox.queued(), QUEUE_LIMIT as u64);
        assert_eq!(
            offer(&mut member, QUEUE_LIMIT as i64 + 1, EventKind::NoteCreated),
            Placed::Left
        );

        let (mut member, _rx, outbox) = subscribed();
        member.go_live(0, 0);
        drop(super::super::body::EventBody::new(outbox));
        assert_eq!(offer(&mut member, 1, EventKind::NoteCreated), Placed::Left);
    }
}
