//! One stream's task: forwards its board's events to the client's queue, exactly once and
//! in order, and decides when the stream ends.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::{
    sync::mpsc::{self, error::TrySendError},
    time::{Instant, MissedTickBehavior, interval_at, sleep_until, timeout},
};
use tokio_util::sync::CancellationToken;

use super::{
    Slots,
    backoff::Reconnect,
    hub::Subscription,
    listener::{Listener, ListenerEvent},
    notification::{self, Decoded, Delivery},
    presence::Presence,
    roster::{CountPacer, Listing, announcement_frames},
    signals, sse,
    stats::{CloseReason, DropReason, Stats},
};
use crate::db::{Database, DbError, boards, events};
use crate::domain::{
    event::EventKind,
    ids::BoardId,
    presence::{Batch, Tally},
    viewer::Viewer,
};

/// Events read from the log per query during a replay or catch-up.
const PAGE: i64 = 256;
/// How long the listener may take to answer a ping before it counts as hung.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
const PING_EVERY_AT_LEAST: Duration = Duration::from_secs(5);

/// Where a stream's notifications come from.
pub(super) enum Source {
    /// Its own LISTEN connection (`LISTENER=per-stream`); `None` while it is re-opened.
    Dedicated(Option<Listener>),
    /// Its place in the instance's hub (`LISTENER=shared`).
    Shared(Subscription),
}

/// One thing that arrived from the source.
enum Incoming {
    /// A raw NOTIFY payload (per-stream mode): decoded here.
    Notification(String),
    /// A notification decoded once by the hub for every stream of the board (shared mode).
    Delivery(Delivery),
    /// The dedicated connection died.
    Lost(String),
    /// The hub dropped this stream: its queue was full.
    Dropped,
}

pub(super) struct StreamTask {
    pub db: Database,
    pub board: BoardId,
    pub viewer: Viewer,
    pub presence: Arc<Presence>,
    /// Where this stream's presence is: announcements up to its version are already in
    /// what it was sent.
    pub seen: Seen,
    pub tx: mpsc::Sender<Bytes>,
    pub source: Source,
    /// The seq of the last event queued for the client.
    pub last_sent: i64,
    /// Replay the log up to this seq before going live.
    pub replay_upto: Option<i64>,
    /// Set by the body if it was dropped holding undelivered frames.
    pub abandoned: Arc<AtomicBool>,
    /// When the caller's token expires: the stream ends then, so a client must come back
    /// with a fresh token.
    pub expires_at: Option<Instant>,
    pub heartbeat: Duration,
    pub shutdown: CancellationToken,
    pub stats: Arc<Stats>,
    pub _slots: Slots,
}

/// The presence a stream has been told of.
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
    sent: u64,
    consumed_at_last_tick: u64,
    stalled_ticks: u32,
}

impl StreamTask {
    pub async fn run(mut self) {
        let started = Instant::now();
        let mut progress = Progress {
            sent: (self.tx.max_capacity() - self.tx.capacity()) as u64,
            ..Progress::default()
        };
        let Err(reason) = self.serve(&mut progress).await;
        // The connection and the slot go first: they are what a flood of closes exhausts.
        self.drop_listener();
        self.source = Source::Dedicated(None);
        self.stats.stream_closed(reason);
        if self.counts_crowds() && self.seen.tally.crowd {
            self.stats.crowd_changed(self.board, false);
        }
        // Then presence, before the body ends: at shutdown the worker may stop right after.
        self.presence.leave(self.board, self.viewer.id).await;
        if matches!(reason, CloseReason::Shutdown | CloseReason::TokenExpired) {
            // Spread the reconnects of every client over 1–5 s so the next instance is not
            // hit by all of them at once.
            let jitter = rand::rng().random_range(1000..=5000);
            let _ = self.tx.try_send(sse::retry(Duration::from_millis(jitter)));
        }
        let level = if reason == CloseReason::Slow {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "stream closed: board={} viewer={:?} ({}) duration={:.1}s reason={}",
            self.board,
            self.viewer.name,
            self.viewer.id,
            started.elapsed().as_secs_f64(),
            reason.as_str()
        );
    }

    /// Runs until the stream must end; the error is why.
    async fn serve(&mut self, progress: &mut Progress) -> Result<Infallible, CloseReason> {
        if let Some(upto) = self.replay_upto.take() {
            let replayed = Box::pin(self.catch_up(Some(upto), progress)).await?;
            self.stats.replayed(replayed);
        }
        let mut ticker = interval_at(Instant::now() + self.heartbeat, self.heartbeat);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let ping_every = self.heartbeat.max(PING_EVERY_AT_LEAST);
        let mut last_ping = Instant::now();
        let mut reconnect_at: Option<Instant> = None;
        let mut reconnect = Reconnect::default();
        let expires_at = self.expires_at;
        if self.counts_crowds() && self.seen.tally.crowd {
            self.stats.crowd_changed(self.board, true);
        }

        loop {
            let count_due = self.seen.count_due;
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(CloseReason::Shutdown),
                // A client whose queue had stopped draining was not reading: the kernel
                // (TCP_USER_TIMEOUT covers zero-window probes) cut it, and that is `slow`.
                _ = self.tx.closed() => {
                    let stalled = self.abandoned.load(Ordering::Relaxed);
                    return Err(if stalled { CloseReason::Slow } else { progress.close_reason() });
                }
                _ = sleep_until(expires_at.unwrap_or_else(Instant::now)), if expires_at.is_some() => {
                    return Err(CloseReason::TokenExpired);
                }
                incoming = next_incoming(&mut self.source) => match incoming {
                    Incoming::Notification(payload) => self.on_notification(&payload, progress).await?,
                    Incoming::Delivery(delivery) => self.on_delivery(delivery, progress).await?,
                    Incoming::Dropped => return Err(CloseReason::Slow),
                    Incoming::Lost(why) => {
                        log::warn!("listener for board {} lost ({why}); re-listening", self.board);
                        self.drop_listener();
                        reconnect_at = Some(reconnect.next_attempt());
                    }
                },
                _ = sleep_until(reconnect_at.unwrap_or_else(Instant::now)), if reconnect_at.is_some() => {
                    match Box::pin(Listener::open(&self.db, self.board)).await {
                        Ok(listener) => {
                            self.stats.listener_opened();
                            self.stats.listener_reconnected();
                            self.source = Source::Dedicated(Some(listener));
                            reconnect_at = None;
                            reconnect.connected();
                            // Notifications sent while no one listened are lost: the log has them.
                            let presence = self.current_presence().await?;
                            self.resync(&presence, progress).await?;
                        }
                        Err(e) => {
                            log::warn!("re-listening for board {} failed: {e}", self.board);
                            reconnect_at = Some(reconnect.next_attempt());
                        }
                    }
                }
                _ = sleep_until(count_due.unwrap_or_else(Instant::now)), if count_due.is_some() => {
                    self.seen.count_due = None;
                    self.pace_count(progress)?;
                }
                _ = ticker.tick() => {
                    progress.check(&self.tx)?;
                    self.push(sse::heartbeat(), progress)?;
                    if last_ping.elapsed() >= ping_every {
                        last_ping = Instant::now();
                        if let Source::Dedicated(Some(listener)) = &self.source
                            && !listener.ping(PING_TIMEOUT).await
                        {
                            log::warn!("listener for board {} did not answer a ping; re-listening", self.board);
                            self.drop_listener();
                            reconnect_at = Some(reconnect.next_attempt());
                        }
                    }
                }
            }
        }
    }

    fn drop_listener(&mut self) {
        if let Source::Dedicated(listener) = &mut self.source
            && listener.take().is_some()
        {
            self.stats.listener_closed();
        }
    }

    /// Whether this stream keeps `boardcast_crowd_boards` itself (per-stream mode; in
    /// shared mode the hub does, once per board).
    fn counts_crowds(&self) -> bool {
        matches!(self.source, Source::Dedicated(_))
    }

    /// The board's presence read from the database (per-stream mode, which has no roster).
    async fn current_presence(&self) -> Result<Listing, CloseReason> {
        let view = self
            .presence
            .view(self.board, false)
            .await
            .map_err(|_| CloseReason::DatabaseUnavailable)?;
        Ok(Listing::from_view(&view))
    }

    /// After the listener was lost: the events it missed come from the log, and the
    /// presence list is sent whole, since presence notifications were lost too. Events
    /// pruned from the log meanwhile were lost with the listener: `listener_lost`.
    async fn resync(
        &mut self,
        presence: &Listing,
        progress: &mut Progress,
    ) -> Result<(), CloseReason> {
        let caught_up =
            Box::pin(self.catch_up(None, progress))
                .await
                .map_err(|reason| match reason {
                    CloseReason::HistoryGone => CloseReason::ListenerLost,
                    other => other,
                })?;
        self.stats.replayed(caught_up);
        self.relist(presence, progress)
    }

    /// Sends the board's full presence (this stream's `you` included) and takes its
    /// version as what the stream has seen.
    fn relist(&mut self, presence: &Listing, progress: &mut Progress) -> Result<(), CloseReason> {
        self.push(presence.frame(&self.viewer), progress)?;
        self.seen.version = presence.version;
        self.seen.pacer.listed(presence.tally.count);
        self.seen.count_due = None;
        self.set_tally(presence.tally);
        Ok(())
    }

    fn set_tally(&mut self, tally: Tally) {
        if self.counts_crowds() && tally.crowd != self.seen.tally.crowd {
            self.stats.crowd_changed(self.board, tally.crowd);
        }
        self.seen.tally = tally;
    }

    /// Per-stream mode: turns a presence announcement into this stream's frames, as the
    /// hub's roster does in shared mode.
    async fn on_presence(
        &mut self,
        batch: &Batch,
        progress: &mut Progress,
    ) -> Result<(), CloseReason> {
        if batch.version <= self.seen.version {
            return Ok(());
        }
        let outcome = batch.outcome(self.presence.limit());
        if batch.version != self.seen.version + 1 || outcome.relist {
            // A crowd back at the list limit (or, defensively, a version missing in
            // between): the list comes from the table, capped at the limit.
            let current = self.current_presence().await?;
            return self.relist(&current, progress);
        }
        let frames = announcement_frames(&outcome);
        if !frames.is_empty() {
            self.push(frames, progress)?;
        }
        self.seen.version = batch.version;
        self.set_tally(outcome.after);
        self.pace_count(progress)
    }

    /// Sends the crowd's count if its second has come, or notes when it will.
    fn pace_count(&mut self, progress: &mut Progress) -> Result<(), CloseReason> {
        let tally = self.seen.tally;
        if let Some(frame) = self.seen.pacer.take(tally) {
            self.push(frame, progress)?;
        }
        self.seen.count_due = self.seen.pacer.due(tally);
        Ok(())
    }

    /// A raw notification (per-stream mode): decoded as the hub does, then delivered. A
    /// reference the log no longer holds, or cannot be read now, cannot be delivered: the
    /// stream ends and the client resumes from its last id.
    async fn on_notification(
        &mut self,
        payload: &str,
        progress: &mut Progress,
    ) -> Result<(), CloseReason> {
        let delivery = match notification::decode(&self.db, self.board, payload).await {
            Decoded::Change(delivery) => delivery,
            Decoded::Signals { frames, count } => Delivery::Signals { frames, count },
            Decoded::Presence(batch) => return self.on_presence(&batch, progress).await,
            Decoded::Missing => return Err(CloseReason::HistoryGone),
            Decoded::Unavailable => return Err(CloseReason::DatabaseUnavailable),
            Decoded::Unreadable => return Ok(()),
        };
        self.on_delivery(delivery, progress).await
    }

    /// A notification decoded once: by the hub (shared mode) or by `on_notification`.
    async fn on_delivery(
        &mut self,
        delivery: Delivery,
        progress: &mut Progress,
    ) -> Result<(), CloseReason> {
        match delivery {
            Delivery::Change {
                seq,
                kind,
                frame,
                at,
            } => {
                if seq <= self.last_sent {
                    return Ok(());
                }
                self.fill_gap(seq, progress).await?;
                self.deliver(seq, kind, frame, at, progress)
            }
            Delivery::Presence { ends, frames } => {
                // Frames of versions this stream's presence already reflects are skipped.
                let seen = self.seen.version;
                let start = ends
                    .iter()
                    .take_while(|(version, _)| *version <= seen)
                    .last()
                    .map_or(0, |(_, end)| *end);
                if let Some((last, _)) = ends.last() {
                    self.seen.version = self.seen.version.max(*last);
                }
                if start < frames.len() {
                    self.push(frames.slice(start..), progress)?;
                }
                Ok(())
            }
            Delivery::List(presence) => {
                if presence.version > self.seen.version {
                    self.relist(&presence, progress)?;
                }
                Ok(())
            }
            Delivery::Resync { presence } => self.resync(&presence, progress).await,
            Delivery::Signals { frames, count } => {
                self.push_signals(frames, count, progress);
                Ok(())
            }
        }
    }

    /// Queues a signal batch if the queue is at most half full; otherwise drops it, so
    /// signals can never make a stream slow or hold up its change events.
    fn push_signals(&self, frames: Bytes, count: u64, progress: &mut Progress) {
        if signals::has_room(self.tx.capacity()) && self.tx.try_send(frames).is_ok() {
            progress.sent += 1;
            self.stats.signals_delivered(count);
        } else if !self.tx.is_closed() {
            self.stats.signal_dropped(DropReason::Overload, count);
        }
    }

    /// An event newer than the next one expected means some were missed: read them first.
    async fn fill_gap(&mut self, seq: i64, progress: &mut Progress) -> Result<(), CloseReason> {
        if seq > self.last_sent + 1 {
            let filled = Box::pin(self.catch_up(Some(seq - 1), progress)).await?;
            self.stats.replayed(filled);
        }
        Ok(())
    }

    /// Queues a live event; its latency (commit → queued on the stream) is recorded.
    fn deliver(
        &mut self,
        seq: i64,
        kind: EventKind,
        frame: Bytes,
        at: Option<DateTime<Utc>>,
        progress: &mut Progress,
    ) -> Result<(), CloseReason> {
        self.push(frame, progress)?;
        if let Some(at) = at {
            self.stats.observe_delivery_since(at);
        }
        self.last_sent = seq;
        self.stats.delivered(1);
        if kind == EventKind::BoardDeleted {
            return Err(CloseReason::BoardDeleted);
        }
        Ok(())
    }

    /// Sends every logged event after `last_sent` (up to `upto`, or all), waiting for the
    /// client to take them. A gap in the log (pruned past retention, or the board deleted)
    /// ends the stream as `history_gone`, so the client reconnects and gets a fresh
    /// snapshot or a 404; a database that does not answer ends it as
    /// `database_unavailable`.
    async fn catch_up(
        &mut self,
        upto: Option<i64>,
        progress: &mut Progress,
    ) -> Result<u64, CloseReason> {
        let limit = upto.unwrap_or(i64::MAX);
        let mut count = 0;
        loop {
            let page = {
                let unavailable = |e: DbError| {
                    log::warn!("catching up board {} failed: {e}", self.board);
                    CloseReason::DatabaseUnavailable
                };
                let client = self.db.client().await.map_err(unavailable)?;
                if upto.is_none()
                    && boards::find(&client, self.board)
                        .await
                        .map_err(unavailable)?
                        .is_none()
                {
                    return Err(CloseReason::BoardDeleted);
                }
                events::range(&client, self.board, self.last_sent, limit, PAGE)
                    .await
                    .map_err(unavailable)?
            };
            let full_page = page.len() as i64 == PAGE;
            for event in page {
                if event.seq != self.last_sent + 1 {
                    return Err(CloseReason::HistoryGone);
                }
                let frame = sse::sequenced(event.seq, event.kind.into(), event.data);
                self.push_waiting(frame, progress).await?;
                self.last_sent = event.seq;
                count += 1;
            }
            if !full_page {
                break;
            }
        }
        if upto.is_some_and(|upto| self.last_sent < upto) {
            return Err(CloseReason::HistoryGone);
        }
        self.stats.delivered(count);
        Ok(count)
    }

    /// Queues a frame without waiting: a full queue means the client is more than
    /// `QUEUE_LIMIT` events behind.
    fn push(&self, frame: Bytes, progress: &mut Progress) -> Result<(), CloseReason> {
        match self.tx.try_send(frame) {
            Ok(()) => {
                progress.sent += 1;
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(CloseReason::Slow),
            Err(TrySendError::Closed(_)) => Err(CloseReason::ClientGone),
        }
    }

    /// Queues a frame of history, waiting up to two heartbeat intervals for room: a replay
    /// may be longer than the queue, but a client that takes nothing is slow.
    async fn push_waiting(&self, frame: Bytes, progress: &mut Progress) -> Result<(), CloseReason> {
        match timeout(self.heartbeat * 2, self.tx.send(frame)).await {
            Ok(Ok(())) => {
                progress.sent += 1;
                Ok(())
            }
            Ok(Err(_)) => Err(CloseReason::ClientGone),
            Err(_) => Err(CloseReason::Slow),
        }
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

    fn check(&mut self, tx: &mpsc::Sender<Bytes>) -> Result<(), CloseReason> {
        let queued = (tx.max_capacity() - tx.capacity()) as u64;
        let consumed = self.sent.saturating_sub(queued);
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

async fn next_incoming(source: &mut Source) -> Incoming {
    match source {
        Source::Dedicated(Some(listener)) => match listener.recv().await {
            ListenerEvent::Notification { payload, .. } => Incoming::Notification(payload),
            ListenerEvent::Lost(why) => Incoming::Lost(why),
        },
        Source::Dedicated(None) => std::future::pending().await,
        Source::Shared(subscription) => match subscription.events.recv().await {
            Some(delivery) => Incoming::Delivery(delivery),
            None => Incoming::Dropped,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_that_stops_draining_for_two_ticks_is_slow() {
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        let mut progress = Progress::default();
        for _ in 0..3 {
            tx.try_send(Bytes::from_static(b"x")).expect("room");
            progress.sent += 1;
        }
        assert_eq!(progress.check(&tx), Ok(()));
        assert_eq!(progress.close_reason(), CloseReason::Slow);
        assert_eq!(progress.check(&tx), Err(CloseReason::Slow));

        // Draining resets the count.
        let mut progress = Progress {
            sent: 3,
            ..Progress::default()
        };
        assert_eq!(progress.check(&tx), Ok(()));
        let _ = rx.try_recv();
        assert_eq!(progress.check(&tx), Ok(()));
        assert_eq!(progress.close_reason(), CloseReason::ClientGone);
    }

    #[test]
    fn an_empty_queue_is_never_slow() {
        let (tx, _rx) = mpsc::channel::<Bytes>(8);
        let mut progress = Progress::default();
        for _ in 0..5 {
            assert_eq!(progress.check(&tx), Ok(()));
        }
        assert_eq!(progress.close_reason(), CloseReason::ClientGone);
    }
}
