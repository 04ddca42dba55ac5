//! Signals: what viewers broadcast to a board without storing it (cursors, a note being
//! dragged, typing), carried to every stream of the board on every instance.
//!
//! A signal is accepted from a viewer (a stream open on the board, on any instance), held
//! for at most [`WINDOW`] with the board's other signals on this instance, where a later
//! signal of the same viewer, kind and note replaces an earlier one (latest wins), and then
//! sent as the board's batch: already-encoded SSE frames in one NOTIFY on the board's own
//! channel (split when over PostgreSQL's 8,000-byte payload limit). Every listener — this
//! instance's included — hands the payload to its streams as is: a signal is encoded once
//! for the whole deployment, and the NOTIFYs for signals grow with boards × instances ×
//! windows, never with the number of senders.
//!
//! Signals never hold up change events: they wait for each client in a queue of their own
//! beside its change queue (`body`), which the body reads only once the change queue is
//! empty, and which drops its oldest batches (`reason="overload"`) rather than grow or push
//! a stream towards the slow-client bar. They are never written to the log, so no replay
//! holds one.

use std::{collections::HashMap, num::NonZeroU32, sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use parking_lot::Mutex;
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    backoff::Reconnect,
    sse,
    stats::{DropReason, Stats},
};
use crate::db::{Database, boards, events, presence};
use crate::domain::{
    event::{EventName, NOTIFY_PAYLOAD_LIMIT},
    ids::BoardId,
    signal::SignalBody,
};
use crate::error::ApiError;

/// How long a board's signals are gathered before they go out: the contract's "at most
/// 50 ms", which also caps the NOTIFYs for signals at 20 per second per board per instance.
pub const WINDOW: Duration = Duration::from_millis(50);
/// Boards' windows end at one of this many evenly spaced instants of each `WINDOW` (every
/// 5 ms), the instant chosen by the board's id. Were every board's window to end together,
/// each flush would wake every stream of every busy board at once (20 boards × 50 streams:
/// a thousand connection writes in one burst), and a change arriving then would queue
/// behind all of them; spread, a flush wakes a tenth of them (docs/PERFORMANCE.md).
const SLOTS: u32 = 10;
/// Signals waiting on this instance beyond which new ones are dropped (`overload`): the
/// database is not keeping up with the flushes. Latest-wins keeps the real number far below
/// (one per viewer, kind and note).
const PENDING_LIMIT: usize = 20_000;
/// How long a viewer looked up in PostgreSQL (its stream is on another instance) is trusted
/// before it is looked up again.
const REMOTE_TTL: Duration = Duration::from_secs(5);
/// Every signal NOTIFY payload starts with this: it is the first line of an SSE frame, which
/// no change or presence payload (JSON objects) can start with.
const FRAME_PREFIX: &str = "event: signal\n";

/// Who a signal is sent as: a stream's viewer.
#[derive(Clone, Debug)]
pub struct Sender {
    pub board: BoardId,
    pub name: String,
    /// The token subject the stream was opened with (auth on); `None` with auth off.
    pub sub: Option<String>,
}

type Key = (Uuid, String, Option<String>);

/// One board's signals in the current window: first-arrival order, latest content.
#[derive(Default)]
struct Batch {
    signals: Vec<(SignalBody, String, DateTime<Utc>)>,
    index: HashMap<Key, usize>,
}

/// The signals waiting on this instance: each board's batch in the slot its window ends
/// at (`slot_of`).
#[derive(Default)]
struct Pending {
    slots: [HashMap<BoardId, Batch>; SLOTS as usize],
    count: usize,
}

/// The slots whose windows end at the ticks `next..=now` (one when the flusher is on time),
/// each once: a flusher late by a whole window or more sends every slot.
fn due_slots(next: u64, now: u64) -> Vec<usize> {
    let from = next.max(now.saturating_sub(u64::from(SLOTS) - 1));
    (from..=now)
        .map(|t| (t % u64::from(SLOTS)) as usize)
        .collect()
}

/// The slots to send at tick `now`: those due (`due_slots`) that were last sent a whole
/// window ago or more, which `last` (each slot's last tick sent) then records. A late
/// flusher sends the slots it passed late; each one's next on-time tick then comes less
/// than a window after, and is skipped, so no board gets two NOTIFYs within one window
/// (the contract's 20 per second) and each slot keeps its place in the window. The window
/// after a late flush is thus up to two windows long, once.
fn plan(next: u64, now: u64, last: &mut [Option<u64>; SLOTS as usize]) -> Vec<usize> {
    let slots: Vec<usize> = due_slots(next, now)
        .into_iter()
        .filter(|&s| last[s].is_none_or(|at| now >= at + u64::from(SLOTS)))
        .collect();
    for &s in &slots {
        last[s] = Some(now);
    }
    slots
}

/// Which of the `SLOTS` instants of each window a board's window ends at: fixed per board,
/// spread over boards by their (random) ids.
fn slot_of(board: BoardId) -> usize {
    (board.uuid().as_u128() % u128::from(SLOTS)) as usize
}

/// The instance's signal machinery: who may send, how fast, and the gathering window.
pub struct Signals {
    db: Database,
    stats: Arc<Stats>,
    local: Mutex<HashMap<Uuid, Sender>>,
    remote: Mutex<HashMap<Uuid, (Sender, Instant)>>,
    limiter: Option<DefaultKeyedRateLimiter<Uuid>>,
    per_second: u32,
    pending: Mutex<Pending>,
    wake: Notify,
}

/// A stream's viewer, known to this instance as a signal sender until dropped.
pub struct Registration {
    signals: Arc<Signals>,
    viewer: Uuid,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.signals.local.lock().remove(&self.viewer);
    }
}

impl Signals {
    /// `per_second` is `SIGNAL_RATE_LIMIT` (0: no limit); each viewer may burst twice that.
    pub fn new(db: Database, stats: Arc<Stats>, per_second: u32) -> Arc<Signals> {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Arc::new(Signals {
            db,
            stats,
            local: Mutex::default(),
            remote: Mutex::default(),
            limiter,
            per_second,
            pending: Mutex::default(),
            wake: Notify::new(),
        })
    }

    /// Runs the flusher until `shutdown`. Time is cut into ticks of `WINDOW / SLOTS`; at
    /// each tick the boards of that tick's slot send their gathered signals (the boards of
    /// one slot in one database round trip). A board's window thus ends at most `WINDOW`
    /// after its first signal, and at most once per `WINDOW`. A late tick (a busy machine)
    /// also sends the slots it passed, so no window outlasts its end by more than the delay.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let tick = (WINDOW / SLOTS).as_nanos() as u64;
            let epoch = Instant::now();
            // Ticks since the epoch: u64 nanoseconds last 584 years.
            let ticks_at = |at: Instant| (at - epoch).as_nanos() as u64 / tick;
            let mut pruned = Instant::now();
            let mut last = [None; SLOTS as usize];
            let mut retry = Reconnect::default();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = this.wake.notified() => {}
                }
                // The next tick after the first signal; then every tick until all is sent.
                let mut next = ticks_at(Instant::now()) + 1;
                while this.pending.lock().count > 0 {
                    let at = epoch + Duration::from_nanos(next * tick);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep_until(at) => {}
                    }
                    let now = ticks_at(Instant::now());
                    if this.flush(plan(next, now, &mut last)).await {
                        retry.connected();
                    } else {
                        // The database refused: wait as a lost listener does (jittered,
                        // doubling to seconds) rather than knock on every tick.
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep_until(retry.next_attempt()) => {}
                        }
                    }
                    next = now + 1;
                }
                if pruned.elapsed() > Duration::from_secs(60) {
                    pruned = Instant::now();
                    this.prune();
                }
            }
        });
    }

    /// Makes `viewer` a sender for as long as the registration lives (its stream's life).
    pub fn register(self: &Arc<Self>, viewer: Uuid, sender: Sender) -> Registration {
        self.local.lock().insert(viewer, sender);
        Registration {
            signals: self.clone(),
            viewer,
        }
    }

    /// The viewer a caller sends as: a stream open on `board` (on any instance) and, with
    /// auth on, opened with the caller's `sub`. 404 when the board does not exist, 403 when
    /// the viewer is not the caller's stream on it.
    pub async fn sender(
        &self,
        board: BoardId,
        viewer: Uuid,
        sub: Option<&str>,
    ) -> Result<Sender, ApiError> {
        let known = self.local.lock().get(&viewer).cloned().or_else(|| {
            self.remote
                .lock()
                .get(&viewer)
                .filter(|(_, at)| at.elapsed() < REMOTE_TTL)
                .map(|(sender, _)| sender.clone())
        });
        let sender = match known.filter(|s| s.board == board) {
            Some(sender) => Some(sender),
            None => self.look_up(board, viewer).await?,
        };
        match sender {
            Some(sender) if sub.is_none() || sender.sub.as_deref() == sub => Ok(sender),
            _ => Err(ApiError::Forbidden(format!(
                "viewer {viewer} is not a stream you have open on board {board}: send as the `you.id` of your own stream"
            ))),
        }
    }

    /// Reads a viewer of another instance from PostgreSQL; 404 if the board is gone.
    async fn look_up(&self, board: BoardId, viewer: Uuid) -> Result<Option<Sender>, ApiError> {
        let client = self.db.client().await?;
        match presence::find(&client, board, viewer).await? {
            Some((name, sub)) => {
                let sender = Sender { board, name, sub };
                self.remote
                    .lock()
                    .insert(viewer, (sender.clone(), Instant::now()));
                Ok(Some(sender))
            }
            None if boards::find(&client, board).await?.is_none() => {
                Err(ApiError::board_not_found(board))
            }
            None => Ok(None),
        }
    }

    /// Takes one signal from the viewer's allowance, or answers 429 with how long to wait.
    pub fn check_rate(&self, viewer: Uuid) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&viewer).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                message: format!(
                    "too many signals from viewer {viewer}: at most {} per second (bursts of {}); send the latest position only",
                    self.per_second,
                    self.per_second.saturating_mul(2)
                ),
                retry_after_secs: wait.as_secs() + 1,
            }
        })
    }

    /// Adds a signal to its board's window, replacing the same viewer's earlier signal of
    /// the same kind (and note) if one is still waiting.
    pub fn push(&self, board: BoardId, signal: SignalBody, sender: &Sender) {
        self.stats.signal_received();
        let mut guard = self.pending.lock();
        let pending = &mut *guard;
        let first = pending.count == 0;
        let key = signal.key();
        let batch = pending.slots[slot_of(board)].entry(board).or_default();
        let entry = (signal, sender.name.clone(), Utc::now());
        if let Some(&at) = batch.index.get(&key) {
            batch.signals[at] = entry;
            self.stats.signal_dropped(DropReason::Coalesced, 1);
            return;
        }
        if pending.count >= PENDING_LIMIT {
            self.stats.signal_dropped(DropReason::Overload, 1);
            return;
        }
        batch.index.insert(key, batch.signals.len());
        batch.signals.push(entry);
        pending.count += 1;
        drop(guard);
        if first {
            self.wake.notify_one();
        }
    }

    /// Sends the windows of the boards in `slots`: one NOTIFY per board (more only past
    /// 8,000 bytes), all in one statement. False when the database refused them (they are
    /// dropped, `reason="unavailable"`).
    async fn flush(&self, slots: Vec<usize>) -> bool {
        let mut taken = Vec::new();
        let mut count = 0;
        {
            let mut pending = self.pending.lock();
            for slot in slots {
                let boards = std::mem::take(&mut pending.slots[slot]);
                count += boards.values().map(|b| b.signals.len()).sum::<usize>();
                taken.push(boards);
            }
            pending.count -= count;
        }
        if count == 0 {
            return true;
        }
        let mut channels = Vec::new();
        let mut payloads = Vec::new();
        for (board, batch) in taken.into_iter().flatten() {
            let frames = batch
                .signals
                .iter()
                .map(|(signal, name, at)| frame(board, signal, name, *at));
            for payload in pack(frames) {
                channels.push(board.channel());
                payloads.push(payload);
            }
        }
        let sent = match self.db.client().await {
            Ok(client) => events::notify_many(&client, &channels, &payloads).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            log::warn!("{count} signals not sent: {e}");
            self.stats
                .signal_dropped(DropReason::Unavailable, count as u64);
            self.stats.signal_flush_failed();
            return false;
        }
        true
    }

    fn prune(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.remote
            .lock()
            .retain(|_, (_, at)| at.elapsed() < REMOTE_TTL);
    }
}

/// One `signal` event, encoded as it will reach every client.
fn frame(board: BoardId, signal: &SignalBody, name: &str, at: DateTime<Utc>) -> String {
    let bytes = sse::unsequenced(EventName::Signal, signal.encode(board, name, at));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Joins frames into NOTIFY payloads, each under PostgreSQL's limit. A frame is at most
/// about 2 KiB (1 KiB of data, a 100-character name), so it always fits one payload.
fn pack(frames: impl Iterator<Item = String>) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = String::new();
    for frame in frames {
        if !current.is_empty() && current.len() + frame.len() >= NOTIFY_PAYLOAD_LIMIT {
            payloads.push(std::mem::take(&mut current));
        }
        current.push_str(&frame);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

/// The frames a signal NOTIFY carries and how many signals they are; `None` for any other
/// notification.
pub fn frames_of(payload: &str) -> Option<(Bytes, u64)> {
    if !payload.starts_with(FRAME_PREFIX) {
        return None;
    }
    let count = payload.matches("\n\n").count() as u64;
    Some((Bytes::copy_from_slice(payload.as_bytes()), count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: &str, data: serde_json::Value) -> SignalBody {
        SignalBody::parse(
            serde_json::from_value(serde_json::json!({
                "viewer": Uuid::nil(), "kind": kind, "data": data
            }))
            .expect("input"),
        )
        .expect("valid")
    }

    #[test]
    fn a_late_flusher_sends_each_passed_slot_once() {
        assert_eq!(due_slots(7, 7), vec![7]);
        assert_eq!(due_slots(8, 11), vec![8, 9, 0, 1]);
        let mut all = due_slots(3, 40);
        assert_eq!(all.len(), SLOTS as usize);
        all.sort_unstable();
        assert_eq!(all, (0..SLOTS as usize).collect::<Vec<_>>());
    }

    /// Ticks 0..400 with the flusher stalled twice (ticks 31–46 and 120–155 pass unseen):
    /// every slot is sent at most once per window, at its own place again after a stall,
    /// and never waits more than two windows beyond a stall.
    #[test]
    fn after_a_stall_no_slot_is_sent_twice_within_a_window() {
        let window = u64::from(SLOTS);
        let mut last = [None; SLOTS as usize];
        let mut sent: Vec<Vec<u64>> = vec![Vec::new(); SLOTS as usize];
        let mut next = 0;
        let mut now = 0;
        while now < 400 {
            for s in plan(next, now, &mut last) {
                sent[s].push(now);
            }
            next = now + 1;
            now = match now {
                30 => 47,
                119 => 156,
                t => t + 1,
            };
        }
        for (slot, ticks) in sent.iter().enumerate() {
            for pair in ticks.windows(2) {
                let gap = pair[1] - pair[0];
                assert!(
                    gap >= window,
                    "slot {slot} sent twice in a window: {ticks:?}"
                );
                // At most the stall (36 ticks) plus two windows.
                assert!(gap <= 36 + 2 * window, "slot {slot} starved: {ticks:?}");
            }
            let tail: Vec<u64> = ticks.iter().copied().filter(|&t| t > 200).collect();
            assert!(!tail.is_empty());
            assert!(
                tail.iter().all(|t| t % window == slot as u64),
                "slot {slot} back at its place: {tail:?}"
            );
        }
    }

    #[test]
    fn boards_spread_over_the_slots() {
        let mut used = [0u32; SLOTS as usize];
        for _ in 0..1_000 {
            used[slot_of(BoardId::new())] += 1;
        }
        // 100 expected per slot; random ids fall within 40–160 all but never.
        assert!(used.iter().all(|&n| (40..=160).contains(&n)), "{used:?}");
    }

    #[test]
    fn batches_are_split_under_the_notify_limit() {
        let big = body("cursor", serde_json::json!({ "s": "x".repeat(1000) }));
        let frames: Vec<String> = (0..30)
            .map(|_| frame(BoardId::new(), &big, "Ana", Utc::now()))
            .collect();
        let total: usize = frames.iter().map(String::len).sum();
        let payloads = pack(frames.into_iter());
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() < NOTIFY_PAYLOAD_LIMIT));
        assert_eq!(payloads.iter().map(String::len).sum::<usize>(), total);
        let count: u64 = payloads
            .iter()
            .map(|p| frames_of(p).expect("a signal payload").1)
            .sum();
        assert_eq!(count, 30);
    }

    #[test]
    fn only_signal_payloads_are_taken_as_frames() {
        let payload = pack(std::iter::once(frame(
            BoardId::new(),
            &body("cursor", serde_json::json!({"x": 1})),
            "Ana",
            Utc::now(),
        )));
        let (bytes, count) = frames_of(&payload[0]).expect("frames");
        assert_eq!(count, 1);
        assert!(bytes.starts_with(b"event: signal\ndata: {\"kind\":\"cursor\""));
        let text = std::str::from_utf8(&bytes).expect("utf8");
        assert!(!text.lines().any(|l| l.starts_with("id")), "no id: {text}");
        assert!(frames_of("{\"seq\":1,\"type\":\"note.created\"}").is_none());
    }
}
