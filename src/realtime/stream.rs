//! One stream's task: forwards its boards' events to the client's queue, exactly once and
//! in order per board, and decides when the stream ends. A board's own stream has one
//! lane; a many-board stream has one per board, on one connection, one source (one LISTEN
//! connection or the hub) and one heartbeat, with the cursor as its ids.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::StreamExt;
use parking_lot::Mutex;
use rand::Rng;
use tokio::{
    sync::OwnedSemaphorePermit,
    time::{Instant, MissedTickBehavior, interval_at, sleep_until},
};
use tokio_util::sync::CancellationToken;

use super::{
    backoff::Reconnect,
    body::{Outbox, Refused},
    hub::Subscription,
    listener::{self, Listener, ListenerEvent},
    notification::{self, Decoded, Delivery},
    presence::Presence,
    roster::{CountPacer, Listing, announcement_frames},
    signals, sse,
    stats::{CloseReason, DropReason, Stats},
};
use crate::db::{Database, DbError, boards, events};
use crate::domain::{
    event::{EventKind, EventName},
    ids::BoardId,
    presence::{Batch, Tally},
    viewer::Viewer,
};

/// Events read from the log per query during a replay or catch-up.
const PAGE: i64 = 256;
/// How long the listener may take to answer a ping before it counts as hung.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
const PING_EVERY_AT_LEAST: Duration = Duration::from_secs(5);

/// How a board of a stream begins.
pub(super) enum Opening {
    /// The whole board as of `seq`, as one `snapshot` event.
    Snapshot { seq: i64, data: String },
    /// Every event after `after`, up to `upto`, read from the log.
    Replay { after: i64, upto: i64 },
}

/// Releases a client's stream slot when its stream ends.
pub(super) struct ClientSlot {
    pub key: String,
    pub counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What a stream holds for its lifetime: its place in `MAX_STREAMS` and in
/// `MAX_STREAMS_PER_CLIENT`, once however many boards it carries.
pub(super) type Slots = (OwnedSemaphorePermit, ClientSlot);

/// Where a stream's notifications come from.
pub(super) enum Source {
    /// Its own LISTEN connection, on the channel of each of its boards
    /// (`LISTENER=per-stream`); `None` while it is re-opened.
    Dedicated(Option<Listener>),
    /// Its places in the instance's hub, one per board (`LISTENER=shared`).
    Shared(Subscriptions),
}

/// A stream's hub subscriptions, one per lane (`None` once its board is deleted), read in
/// turn so a busy board cannot starve the others.
pub(super) struct Subscriptions {
    lanes: Vec<Option<Subscription>>,
    next: usize,
    /// Deliveries taken from the (single) subscription, for `go_live`.
    received: u64,
    /// A `go_live` is on its way and nothing has arrived since: the hub may be feeding the
    /// outbox (see `hub`).
    asked: bool,
}

impl Subscriptions {
    pub fn new(lanes: Vec<Subscription>) -> Subscriptions {
        Subscriptions {
            lanes: lanes.into_iter().map(Some).collect(),
            next: 0,
            received: 0,
            asked: false,
        }
    }
}

/// One thing that arrived from the source, for the lane it names.
enum Incoming {
    /// A raw NOTIFY payload (per-stream mode): decoded here.
    Notification(usize, String),
    /// A notification decoded once by the hub for every stream of the board (shared mode).
    Delivery(usize, Delivery),
    /// The dedicated connection died.
    Lost(String),
    /// The hub dropped this stream: its queue was full.
    Dropped,
}

/// One board of a stream: a board's own stream has one lane, a many-board stream one per
/// listed board, in the order of `boards`.
pub(super) struct Lane {
    pub board: BoardId,
    pub viewer: Viewer,
    /// Where this board's presence is: announcements up to its version are already in
    /// what the stream was sent.
    pub seen: Seen,
    /// How the board begins; taken when it is sent.
    pub opening: Option<Opening>,
    /// The board's presence as of the viewer's join, sent once the opening is.
    pub listing: Option<Arc<Listing>>,
    /// The seq of the board's last event queued for the client (for a resumed board, from
    /// the start, the id it resumes after); meaningful once `opened`.
    pub last_sent: i64,
    /// Whether the board has a slot in the cursor: resumed, or its snapshot sent (an empty
    /// slot until then).
    pub opened: bool,
    /// Replay the log up to this seq before going live.
    pub replay_upto: Option<i64>,
    /// The board was deleted while a many-board stream went on for the others.
    pub deleted: bool,
    /// The viewer's right to send signals on this board.
    pub registration: Option<signals::Registration>,
}

pub(super) struct StreamTask {
    pub db: Database,
    pub lanes: Vec<Lane>,
    pub presence: Arc<Presence>,
    /// What the client gets (in shared mode the hub puts signals and, once the stream is
    /// live, its change events there too).
    pub outbox: Arc<Outbox>,
    pub source: Source,
    /// When the caller's token expires: the stream ends then, so a client must come back
    /// with a fresh token.
    pub expires_at: Option<Instant>,
    /// Per-stream mode: the stream keeps `boardcast_crowd_boards` for its boards itself (in
    /// shared mode the hub does, once per board).
    pub counts_crowds: bool,
    pub heartbeat: Duration,
    pub shutdown: CancellationToken,
    pub stats: Arc<Stats>,
    pub _slots: Slots,
}

/// The presence a stream has been told of, for one board.
pub(super) struct Seen {
    /// The board's presence version the stream's last presence frame reflects.
    pub version: i64,
    /// Per-stream mode: the board's count and crowd state, the `presence.count` pace, and
    /// when the next count is due. (In shared mode the hub's roster keeps these.)
    pub tally: Tally,
    pub pacer: CountPacer,
    pub count_due: Option<Instant>,
}

impl Seen {
    pub fn new(snapshot: &Listing) -> Seen {
        let mut pacer = CountPacer::default();
        pacer.listed(snapshot.tally.count);
        Seen {
            version: snapshot.version,
            tally: snapshot.tally,
            pacer,
            count_due: None,
        }
    }
}

/// Whether the client is reading: the queue is non-empty and nothing left it for two
/// heartbeat intervals means it stopped.
#[derive(Default)]
struct Progress {
    consumed_at_last_tick: u64,
    stalled_ticks: u32,
}

impl StreamTask {
    pub async fn run(mut self) {
        let started = Instant::now();
        let Err(reason) = self.serve().await;
        // The connection and the slot go first: they are what a flood of closes exhausts.
        self.drop_listener();
        self.source = Source::Dedicated(None);
        self.stats.stream_closed(reason);
        let live: Vec<&Lane> = self.lanes.iter().filter(|lane| !lane.deleted).collect();
        for lane in &live {
            if self.counts_crowds && lane.seen.tally.crowd {
                self.stats.crowd_changed(lane.board, false);
            }
        }
        // Then presence, before the body ends: at shutdown the worker may stop right after.
        // A viewer with a session is held for its next stream rather than announced gone.
        let leaves = live
            .iter()
            .map(|lane| self.presence.end(lane.board, lane.viewer.id));
        futures_util::future::join_all(leaves).await;
        if matches!(reason, CloseReason::Shutdown | CloseReason::TokenExpired) {
            // Spread the reconnects of every client over 1–5 s so the next instance is not
            // hit by all of them at once.
            let jitter = rand::rng().random_range(1000..=5000);
            let _ = self.outbox.push(sse::retry(Duration::from_millis(jitter)));
        }
        let level = if reason == CloseReason::Slow {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        for lane in &self.lanes {
            log::log!(
                level,
                "stream closed: board={} viewer={:?} ({}) duration={:.1}s reason={}",
                lane.board,
                lane.viewer.name,
                lane.viewer.id,
                started.elapsed().as_secs_f64(),
                reason.as_str()
            );
        }
    }

    /// Whether this stream's ids are cursors (many boards) rather than one board's seqs.
    fn many(&self) -> bool {
        self.lanes.len() > 1
    }

    /// The stream's cursor: each board's last seq sent, in the order of `boards`, an empty
    /// slot for a board whose opening has not been sent yet.
    fn cursor(&self) -> String {
        let slots: Vec<String> = self
            .lanes
            .iter()
            .map(|lane| {
                if lane.opened {
                    lane.last_sent.to_string()
                } else {
                    String::new()
                }
            })
            .collect();
        slots.join(",")
    }

    /// A frame of the lane's event `seq` (already its `last_sent`), made here: its id is the
    /// seq, or on a many-board stream the cursor.
    fn sequenced(&self, seq: i64, name: EventName, data: String) -> Bytes {
        if self.many() {
            sse::with_cursor(&self.cursor(), name, data)
        } else {
            sse::sequenced(seq, name, data)
        }
    }

    /// Sends each board's opening: a board's own stream sends its snapshot, its presence,
    /// then its replay (presence first, as it always has); a many-board stream sends every
    /// board's snapshot or replay in the order listed, then every board's presence.
    async fn open_lanes(&mut self) -> Result<(), CloseReason> {
        if !self.many() {
            self.open_lane(0).await?;
            self.send_listing(0).await?;
            return self.replay(0).await;
        }
        for lane in 0..self.lanes.len() {
            self.open_lane(lane).await?;
            self.replay(lane).await?;
        }
        for lane in 0..self.lanes.len() {
            self.send_listing(lane).await?;
        }
        Ok(())
    }

    async fn open_lane(&mut self, lane: usize) -> Result<(), CloseReason> {
        match self.lanes[lane].opening.take() {
            Some(Opening::Snapshot { seq, data }) => {
                self.lanes[lane].last_sent = seq;
                self.lanes[lane].opened = true;
                let frame = self.sequenced(seq, EventName::Snapshot, data);
                self.push_waiting(frame).await?;
                self.stats.snapshot_sent();
            }
            Some(Opening::Replay { after, upto }) => {
                self.lanes[lane].last_sent = after;
                self.lanes[lane].opened = true;
                self.lanes[lane].replay_upto = Some(upto);
            }
            None => {}
        }
        Ok(())
    }

    async fn send_listing(&mut self, lane: usize) -> Result<(), CloseReason> {
        if let Some(listing) = self.lanes[lane].listing.take() {
            let frame = listing.frame(self.lanes[lane].board, &self.lanes[lane].viewer);
            self.push_waiting(frame).await?;
        }
        Ok(())
    }

    async fn replay(&mut self, lane: usize) -> Result<(), CloseReason> {
        if let Some(upto) = self.lanes[lane].replay_upto.take() {
            let replayed = Box::pin(self.catch_up(lane, Some(upto))).await?;
            self.stats.replayed(replayed);
        }
        Ok(())
    }

    /// Shared mode, a board's own stream: once it has sent everything the hub gave it,
    /// asks the hub to put the next events in the outbox itself (see `hub`).
    fn ask_to_go_live(&mut self) {
        let Source::Shared(subscriptions) = &mut self.source else {
            return;
        };
        if self.lanes.len() != 1 || self.lanes[0].deleted || subscriptions.asked {
            return;
        }
        let Some(subscription) = &subscriptions.lanes[0] else {
            return;
        };
        if subscription.all_taken(subscriptions.received) {
            subscription.go_live(self.lanes[0].last_sent, subscriptions.received);
            subscriptions.asked = true;
        }
    }

    /// Runs until the stream must end; the error is why.
    async fn serve(&mut self) -> Result<Infallible, CloseReason> {
        // Boxed here and below: the rare paths' futures (database reads, the opening)
        // would otherwise be part of every idle stream's task, sized for the largest.
        Box::pin(self.open_lanes()).await?;
        self.ask_to_go_live();
        let mut progress = Progress::default();
        let mut ticker = interval_at(Instant::now() + self.heartbeat, self.heartbeat);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let ping_every = self.heartbeat.max(PING_EVERY_AT_LEAST);
        let mut last_ping = Instant::now();
        let mut reconnect_at: Option<Instant> = None;
        let mut reconnect = Reconnect::default();
        let expires_at = self.expires_at;
        if self.counts_crowds {
            for lane in &self.lanes {
                if lane.seen.tally.crowd {
                    self.stats.crowd_changed(lane.board, true);
                }
            }
        }

        loop {
            let count_due = self
                .lanes
                .iter()
                .filter(|lane| !lane.deleted)
                .filter_map(|lane| lane.seen.count_due)
                .min();
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(CloseReason::Shutdown),
                // A client whose queue had stopped draining was not reading: the kernel
                // (TCP_USER_TIMEOUT covers zero-window probes) cut it, and that is `slow`.
                _ = self.outbox.closed() => {
                    let stalled = self.outbox.abandoned();
                    return Err(if stalled { CloseReason::Slow } else { progress.close_reason() });
                }
                _ = sleep_until(expires_at.unwrap_or_else(Instant::now)), if expires_at.is_some() => {
                    return Err(CloseReason::TokenExpired);
                }
                incoming = next_incoming(&mut self.source, &self.lanes) => match incoming {
                    Incoming::Notification(lane, payload) => {
                        if !self.lanes[lane].deleted {
                            Box::pin(self.on_notification(lane, &payload)).await?;
                        }
                    }
                    Incoming::Delivery(lane, delivery) => {
                        if !self.lanes[lane].deleted {
                            Box::pin(self.on_delivery(lane, delivery)).await?;
                        }
                        self.ask_to_go_live();
                    }
                    Incoming::Dropped => return Err(CloseReason::Slow),
                    Incoming::Lost(why) => {
                        log::warn!("listener for boards {} lost ({why}); re-listening", self.boards_text());
                        self.drop_listener();
                        reconnect_at = Some(reconnect.next_attempt());
                    }
                },
                _ = sleep_until(reconnect_at.unwrap_or_else(Instant::now)), if reconnect_at.is_some() => {
                    let boards = self.live_boards();
                    match Box::pin(Listener::open(&self.db, &boards)).await {
                        Ok(listener) => {
                            self.stats.listener_opened();
                            self.stats.listener_reconnected();
                            self.source = Source::Dedicated(Some(listener));
                            reconnect_at = None;
                            reconnect.connected();
                            // Notifications sent while no one listened are lost: the log has them.
                            for lane in 0..self.lanes.len() {
                                if self.lanes[lane].deleted {
                                    continue;
                                }
                                let presence = Box::pin(self.current_presence(lane)).await?;
                                Box::pin(self.resync(lane, &presence)).await?;
                            }
                        }
                        Err(e) => {
                            log::warn!("re-listening for boards {} failed: {e}", self.boards_text());
                            reconnect_at = Some(reconnect.next_attempt());
                        }
                    }
                }
                _ = sleep_until(count_due.unwrap_or_else(Instant::now)), if count_due.is_some() => {
                    let now = Instant::now();
                    for lane in 0..self.lanes.len() {
                        if self.lanes[lane].seen.count_due.is_some_and(|due| due <= now) {
                            self.lanes[lane].seen.count_due = None;
                            self.pace_count(lane)?;
                        }
                    }
                }
                _ = ticker.tick() => {
                    progress.check(&self.outbox)?;
                    self.push(sse::heartbeat())?;
                    if last_ping.elapsed() >= ping_every {
                        last_ping = Instant::now();
                        if let Source::Dedicated(Some(listener)) = &self.source
                            && !Box::pin(listener.ping(PING_TIMEOUT)).await
                        {
                            log::warn!("listener for boards {} did not answer a ping; re-listening", self.boards_text());
                            self.drop_listener();
                            reconnect_at = Some(reconnect.next_attempt());
                        }
                    }
                }
            }
        }
    }

    /// The boards still streamed (a many-board stream goes on after one is deleted).
    fn live_boards(&self) -> Vec<BoardId> {
        self.lanes
            .iter()
            .filter(|lane| !lane.deleted)
            .map(|lane| lane.board)
            .collect()
    }

    fn boards_text(&self) -> String {
        let boards: Vec<String> = self.lanes.iter().map(|l| l.board.to_string()).collect();
        boards.join(",")
    }

    fn drop_listener(&mut self) {
        if let Source::Dedicated(listener) = &mut self.source
            && listener.take().is_some()
        {
            self.stats.listener_closed();
        }
    }

    /// The board's presence read from the database (per-stream mode, which has no roster).
    async fn current_presence(&self, lane: usize) -> Result<Listing, CloseReason> {
        let view = self
            .presence
            .view(self.lanes[lane].board, false)
            .await
            .map_err(|_| CloseReason::DatabaseUnavailable)?;
        Ok(Listing::from_view(&view))
    }

    /// After the listener was lost: the events it missed come from the log, and the
    /// presence list is sent whole, since presence notifications were lost too. Events
    /// pruned from the log meanwhile were lost with the listener: `listener_lost`.
    async fn resync(&mut self, lane: usize, presence: &Listing) -> Result<(), CloseReason> {
        let caught_up = match Box::pin(self.catch_up(lane, None)).await {
            Ok(caught_up) => caught_up,
            Err(CloseReason::BoardDeleted) => return self.deleted_unheard(lane).await,
            Err(CloseReason::HistoryGone) => return Err(CloseReason::ListenerLost),
            Err(other) => return Err(other),
        };
        self.stats.replayed(caught_up);
        self.relist(lane, presence)
    }

    /// Sends the board's full presence (this stream's `you` included) and takes its
    /// version as what the stream has seen.
    fn relist(&mut self, lane: usize, presence: &Listing) -> Result<(), CloseReason> {
        self.push(presence.frame(self.lanes[lane].board, &self.lanes[lane].viewer))?;
        let seen = &mut self.lanes[lane].seen;
        seen.version = presence.version;
        seen.pacer.listed(presence.tally.count);
        seen.count_due = None;
        self.set_tally(lane, presence.tally);
        Ok(())
    }

    fn set_tally(&mut self, lane: usize, tally: Tally) {
        let lane = &mut self.lanes[lane];
        if self.counts_crowds && tally.crowd != lane.seen.tally.crowd {
            self.stats.crowd_changed(lane.board, tally.crowd);
        }
        lane.seen.tally = tally;
    }

    /// Per-stream mode: turns a presence announcement into this stream's frames, as the
    /// hub's roster does in shared mode.
    async fn on_presence(&mut self, lane: usize, batch: &Batch) -> Result<(), CloseReason> {
        let seen_version = self.lanes[lane].seen.version;
        if batch.version <= seen_version {
            return Ok(());
        }
        let outcome = batch.outcome(self.presence.limit());
        if batch.version != seen_version + 1 || outcome.relist {
            // A crowd back at the list limit (or, defensively, a version missing in
            // between): the list comes from the table, capped at the limit.
            let current = self.current_presence(lane).await?;
            return self.relist(lane, &current);
        }
        let frames = announcement_frames(self.lanes[lane].board, &outcome);
        if !frames.is_empty() {
            self.push(frames)?;
        }
        self.lanes[lane].seen.version = batch.version;
        self.set_tally(lane, outcome.after);
        self.pace_count(lane)
    }

    /// Sends the crowd's count if its second has come, or notes when it will.
    fn pace_count(&mut self, lane: usize) -> Result<(), CloseReason> {
        let tally = self.lanes[lane].seen.tally;
        let board = self.lanes[lane].board;
        if let Some(frame) = self.lanes[lane].seen.pacer.take(board, tally) {
            self.push(frame)?;
        }
        let seen = &mut self.lanes[lane].seen;
        seen.count_due = seen.pacer.due(tally);
        Ok(())
    }

    /// A raw notification (per-stream mode): decoded as the hub does, then delivered. A
    /// reference the log no longer holds, or cannot be read now, cannot be delivered: the
    /// stream ends and the client resumes from its last id.
    async fn on_notification(&mut self, lane: usize, payload: &str) -> Result<(), CloseReason> {
        let board = self.lanes[lane].board;
        let delivery = match notification::decode(&self.db, board, payload).await {
            Decoded::Change(delivery) => delivery,
            Decoded::Signals { frames, count } => {
                self.offer_signals(frames, count);
                return Ok(());
            }
            Decoded::Presence(batch) => return self.on_presence(lane, &batch).await,
            // Gone from the log: in practice its board was deleted right after it, and
            // `board.deleted` is the next notification (it needs no gap filled). Were it
            // pruned instead, the next event's gap ends the stream as `history_gone`. The
            // hub does the same.
            Decoded::Missing => return Ok(()),
            Decoded::Unavailable => return Err(CloseReason::DatabaseUnavailable),
            Decoded::Unreadable => return Ok(()),
        };
        self.on_delivery(lane, delivery).await
    }

    /// A notification decoded once: by the hub (shared mode) or by `on_notification`.
    async fn on_delivery(&mut self, lane: usize, delivery: Delivery) -> Result<(), CloseReason> {
        match delivery {
            Delivery::Change {
                seq,
                kind,
                frame,
                at,
            } => {
                if seq <= self.lanes[lane].last_sent {
                    return Ok(());
                }
                // The events before a `board.deleted` that this stream missed went with the
                // board: there is nothing left to read, and the board is gone anyway.
                if kind != EventKind::BoardDeleted {
                    self.fill_gap(lane, seq).await?;
                }
                self.deliver(lane, seq, frame, at)?;
                if kind == EventKind::BoardDeleted {
                    return self.board_deleted(lane).await;
                }
                Ok(())
            }
            Delivery::Presence { ends, frames } => {
                // Frames of versions this stream's presence already reflects are skipped.
                let seen = &mut self.lanes[lane].seen;
                let start = ends
                    .iter()
                    .take_while(|(version, _)| *version <= seen.version)
                    .last()
                    .map_or(0, |(_, end)| *end);
                if let Some((last, _)) = ends.last() {
                    seen.version = seen.version.max(*last);
                }
                if start < frames.len() {
                    self.push(frames.slice(start..))?;
                }
                Ok(())
            }
            Delivery::List(presence) => {
                if presence.version > self.lanes[lane].seen.version {
                    self.relist(lane, &presence)?;
                }
                Ok(())
            }
            Delivery::Resync { presence } => self.resync(lane, &presence).await,
            Delivery::Handback { last_sent } => {
                let lane = &mut self.lanes[lane];
                lane.last_sent = lane.last_sent.max(last_sent);
                Ok(())
            }
        }
    }

    /// The board was deleted while nobody listened: its `board.deleted` notification is
    /// lost and its log went with it. The client still gets a `board.deleted`, made here
    /// with the next seq after the last one it was sent (the events it missed, and their
    /// seqs, are gone with the board; a resume answers 404), then the board ends as if
    /// it had been heard.
    async fn deleted_unheard(&mut self, lane: usize) -> Result<(), CloseReason> {
        let board = self.lanes[lane].board;
        let seq = self.lanes[lane].last_sent + 1;
        let data = serde_json::json!({
            "seq": seq,
            "type": EventKind::BoardDeleted.as_str(),
            "board_id": board,
            "at": Utc::now().trunc_subsecs(6),
            "board": { "id": board },
        })
        .to_string();
        self.lanes[lane].last_sent = seq;
        self.push(self.sequenced(seq, EventKind::BoardDeleted.into(), data))?;
        log::info!("board {board} was deleted while the listener was away; told the stream");
        self.board_deleted(lane).await
    }

    /// After `board.deleted`: a board's own stream ends; a many-board stream lets the board
    /// go (its viewer, its channel, its signals) and goes on for the others, keeping the
    /// board's last seq in its cursor.
    async fn board_deleted(&mut self, lane: usize) -> Result<(), CloseReason> {
        let others = self
            .lanes
            .iter()
            .enumerate()
            .any(|(i, other)| i != lane && !other.deleted);
        if !others {
            return Err(CloseReason::BoardDeleted);
        }
        let board = self.lanes[lane].board;
        if self.counts_crowds && self.lanes[lane].seen.tally.crowd {
            self.stats.crowd_changed(board, false);
        }
        self.lanes[lane].deleted = true;
        self.lanes[lane].registration = None;
        match &mut self.source {
            Source::Dedicated(Some(listener)) => {
                if let Err(e) = listener.unlisten(&[board]).await {
                    log::warn!("UNLISTEN for deleted board {board} failed: {e}");
                }
            }
            Source::Dedicated(None) => {}
            Source::Shared(subscriptions) => subscriptions.lanes[lane] = None,
        }
        self.presence.leave(board, self.lanes[lane].viewer.id).await;
        log::info!("board {board} deleted; its stream goes on for the other boards");
        Ok(())
    }

    /// Per-stream mode: queues a signal batch beside the change queue, where it can
    /// neither hold up a change nor make the stream slow (see `body`).
    fn offer_signals(&self, frames: Bytes, count: u64) {
        let offered = self.outbox.offer_signals(frames, count);
        self.stats.signals_delivered(offered.queued);
        if offered.dropped > 0 {
            self.stats
                .signal_dropped(DropReason::Overload, offered.dropped);
        }
    }

    /// An event newer than the next one expected means some were missed: read them first.
    async fn fill_gap(&mut self, lane: usize, seq: i64) -> Result<(), CloseReason> {
        if seq > self.lanes[lane].last_sent + 1 {
            let filled = Box::pin(self.catch_up(lane, Some(seq - 1))).await?;
            self.stats.replayed(filled);
        }
        Ok(())
    }

    /// Queues a live event; its latency (commit → queued on the stream) is recorded. On a
    /// many-board stream the frame, encoded once with the seq as its id, gets the cursor.
    fn deliver(
        &mut self,
        lane: usize,
        seq: i64,
        frame: Bytes,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), CloseReason> {
        self.lanes[lane].last_sent = seq;
        let frame = if self.many() {
            sse::recursored(&frame, &self.cursor())
        } else {
            frame
        };
        self.push(frame)?;
        if let Some(at) = at {
            self.stats.observe_delivery_since(at);
        }
        self.stats.delivered(1);
        Ok(())
    }

    /// Sends every logged event of the lane's board after its `last_sent` (up to `upto`,
    /// or all), waiting for the client to take them. A gap in the log (pruned past
    /// retention, or the board deleted) ends the stream as `history_gone`, so the client
    /// reconnects and gets a fresh snapshot or a 404; so does, when catching up to the end
    /// (after a lost listener), a board whose seq is behind what the stream sent. A
    /// database that does not answer ends it as `database_unavailable`.
    async fn catch_up(&mut self, lane: usize, upto: Option<i64>) -> Result<u64, CloseReason> {
        let board = self.lanes[lane].board;
        let limit = upto.unwrap_or(i64::MAX);
        let mut count = 0;
        loop {
            let page = {
                let unavailable = |e: DbError| {
                    log::warn!("catching up board {board} failed: {e}");
                    CloseReason::DatabaseUnavailable
                };
                let client = self.db.client().await.map_err(unavailable)?;
                if upto.is_none() {
                    let Some(current) = boards::find(&client, board).await.map_err(unavailable)?
                    else {
                        return Err(CloseReason::BoardDeleted);
                    };
                    if current.seq < self.lanes[lane].last_sent {
                        // The database lost commits this stream had already sent (a crash
                        // with `synchronous_commit=off`, a failover to an asynchronous
                        // standby): their seqs will be handed out again, to other events.
                        // The client must start over; its resume, past the board's seq,
                        // gets a snapshot.
                        log::warn!(
                            "board {board} is at seq {} but this stream sent {}: the database lost commits; ending the stream",
                            current.seq,
                            self.lanes[lane].last_sent
                        );
                        return Err(CloseReason::HistoryGone);
                    }
                }
                events::range(&client, board, self.lanes[lane].last_sent, limit, PAGE)
                    .await
                    .map_err(unavailable)?
            };
            let full_page = page.len() as i64 == PAGE;
            for event in page {
                if event.seq != self.lanes[lane].last_sent + 1 {
                    return Err(CloseReason::HistoryGone);
                }
                self.lanes[lane].last_sent = event.seq;
                let frame = self.sequenced(event.seq, event.kind.into(), event.data);
                self.push_waiting(frame).await?;
                count += 1;
            }
            if !full_page {
                break;
            }
        }
        if upto.is_some_and(|upto| self.lanes[lane].last_sent < upto) {
            return Err(CloseReason::HistoryGone);
        }
        self.stats.delivered(count);
        Ok(count)
    }

    /// Queues a frame without waiting: a full queue means the client is more than
    /// `QUEUE_LIMIT` events behind.
    fn push(&self, frame: Bytes) -> Result<(), CloseReason> {
        self.outbox.push(frame).map_err(closed_as)
    }

    /// Queues a frame of history, waiting up to two heartbeat intervals for room: a replay
    /// may be longer than the queue, but a client that takes nothing is slow.
    async fn push_waiting(&self, frame: Bytes) -> Result<(), CloseReason> {
        self.outbox
            .push_waiting(frame, self.heartbeat * 2)
            .await
            .map_err(closed_as)
    }
}

/// Why a stream ends when its outbox refuses a frame.
fn closed_as(refused: Refused) -> CloseReason {
    match refused {
        Refused::Full => CloseReason::Slow,
        Refused::Gone => CloseReason::ClientGone,
    }
}

impl Drop for StreamTask {
    /// The body ends once it has written what is queued: the stream is over.
    fn drop(&mut self) {
        self.outbox.end();
    }
}

impl Progress {
    fn close_reason(&self) -> CloseReason {
        if self.stalled_ticks > 0 {
            CloseReason::Slow
        } else {
            CloseReason::ClientGone
        }
    }

    fn check(&mut self, outbox: &Outbox) -> Result<(), CloseReason> {
        let queued = outbox.queued();
        let consumed = outbox.taken();
        if queued > 0 && consumed == self.consumed_at_last_tick {
            self.stalled_ticks += 1;
        } else {
            self.stalled_ticks = 0;
        }
        self.consumed_at_last_tick = consumed;
        if self.stalled_ticks >= 2 {
            return Err(CloseReason::Slow);
        }
        Ok(())
    }
}

async fn next_incoming(source: &mut Source, lanes: &[Lane]) -> Incoming {
    match source {
        Source::Dedicated(Some(listener)) => loop {
            match listener.recv().await {
                ListenerEvent::Notification { channel, payload } => {
                    let board = listener::board_of(&channel);
                    if let Some(lane) = lanes.iter().position(|l| Some(l.board) == board) {
                        return Incoming::Notification(lane, payload);
                    }
                }
                ListenerEvent::Lost(why) => return Incoming::Lost(why),
            }
        },
        Source::Dedicated(None) => std::future::pending().await,
        Source::Shared(subscriptions) => {
            std::future::poll_fn(|cx| {
                let count = subscriptions.lanes.len();
                for turn in 0..count {
                    let lane = (subscriptions.next + turn) % count;
                    let Some(subscription) = &mut subscriptions.lanes[lane] else {
                        continue;
                    };
                    if let std::task::Poll::Ready(delivery) =
                        subscription.events.poll_next_unpin(cx)
                    {
                        subscriptions.next = (lane + 1) % count;
                        subscriptions.received += 1;
                        subscriptions.asked = false;
                        return std::task::Poll::Ready(match delivery {
                            Some(delivery) => Incoming::Delivery(lane, delivery),
                            None => Incoming::Dropped,
                        });
                    }
                }
                std::task::Poll::Pending
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::body::EventBody;
    use futures_util::{FutureExt, StreamExt};

    #[test]
    fn a_queue_that_stops_draining_for_two_ticks_is_slow() {
        let outbox = Arc::new(Outbox::default());
        let mut body = EventBody::new(outbox.clone());
        let mut progress = Progress::default();
        for _ in 0..3 {
            outbox.push(Bytes::from_static(b"x")).expect("room");
        }
        assert_eq!(progress.check(&outbox), Ok(()));
        assert_eq!(progress.close_reason(), CloseReason::Slow);
        assert_eq!(progress.check(&outbox), Err(CloseReason::Slow));

        // Draining resets the count.
        let mut progress = Progress::default();
        assert_eq!(progress.check(&outbox), Ok(()));
        assert!(body.next().now_or_never().is_some());
        assert_eq!(progress.check(&outbox), Ok(()));
        assert_eq!(progress.close_reason(), CloseReason::ClientGone);
    }

    #[test]
    fn an_empty_queue_is_never_slow() {
        let outbox = Outbox::default();
        let mut progress = Progress::default();
        for _ in 0..5 {
            assert_eq!(progress.check(&outbox), Ok(()));
        }
        assert_eq!(progress.close_reason(), CloseReason::ClientGone);
    }
}
