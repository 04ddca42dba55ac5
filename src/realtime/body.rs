//! A stream's outbox and its response body: what actix writes to the client.
//!
//! The [`Outbox`] holds two queues. Change, snapshot, presence and heartbeat frames wait
//! in order, at most [`QUEUE_LIMIT`] of them (the contract's slow-client bar). They come
//! from the stream's task, and in shared mode, once the stream is live, straight from the
//! hub: a live event then reaches the socket with one wake-up, the connection's, without
//! passing through the stream's task (see `hub`). Signal frames wait beside them; the hub
//! (shared mode) or the stream task (per-stream mode) fills that queue.
//!
//! The body takes the ordered frames first and only then the signals, all the signal
//! batches waiting as one chunk: a change written during a signal flood goes out ahead of
//! the signal frames that were waiting before it, and a flood of signals costs one write
//! per stream per batch, not one per signal. Several frames ready at once cost one write
//! too: actix polls the body until it is pending (or its buffer is full) before it writes.
//!
//! Written by hand rather than with two `tokio::sync::mpsc` channels because the hub and
//! the stream task both fill the same ordered queue (a channel's sender cannot be handed
//! from one to the other without reordering what is in flight), the task's slow-client
//! check needs how many frames the client took, and an idle stream should hold no
//! preallocated blocks (a bounded channel allocates 32 slots up front).

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, task::AtomicWaker};
use parking_lot::Mutex;
use tokio::{sync::Notify, time::Instant};

/// A client more than this many events behind is closed as `slow` (the contract's number).
pub(crate) const QUEUE_LIMIT: usize = 1024;
/// Bytes of signal frames one stream may hold while its client is not reading them:
/// about 200 cursor frames, ten windows of a busy board. Past it the oldest batches are
/// dropped (`overload`): signals are latest-wins, so the newest are the ones worth
/// keeping, and a client that reads this slowly is shown positions, not a history.
pub(crate) const SIGNAL_BYTES_LIMIT: usize = 32 * 1024;

/// The most of a frame handed to actix at once. actix-http copies each piece into its
/// connection's write buffer, which starts at 8 KiB and is kept at whatever size it grew to
/// (up to 128 KiB, `WRITE_BUFFER_RETENTION_LIMIT` in actix-http 3.x `h1/dispatcher.rs`): one
/// opening of a snapshot and a 100-viewer list (10–20 KiB) used to grow it for the
/// stream's whole life. With pieces of at most this size and actix told to stop filling at
/// [`WRITE_BUFFER_FILL`], the buffer never passes its first 8 KiB.
pub(crate) const BODY_PIECE: usize = 2000;
/// `HttpServer::h1_write_buffer_size`: actix stops taking pieces from a body once its
/// write buffer holds this many bytes, and writes it out.
pub(crate) const WRITE_BUFFER_FILL: usize = 6 * 1024;
// The most actix holds before it stops taking pieces (WRITE_BUFFER_FILL - 1), plus one
// piece with its chunk header ("7D0\r\n") and CRLF, fits the 8 KiB it starts with
// (`HW_BUFFER_SIZE`).
const _: () = assert!(WRITE_BUFFER_FILL - 1 + 5 + BODY_PIECE + 2 <= 8 * 1024);

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// [`QUEUE_LIMIT`] frames wait already: the client is not keeping up.
    Full,
    /// The body is gone: the client left.
    Gone,
}

/// What became of a signal batch offered to a stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Offered {
    /// Signals queued for the client (the batch's count, or 0 if the stream is gone).
    pub queued: u64,
    /// Signals dropped to make room (older batches, or this one if it alone is too big).
    pub dropped: u64,
}

/// Everything one stream has for its client, shared by its task, the hub and its body.
#[derive(Default)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The body's task (actix's connection), woken when something is queued.
    waker: AtomicWaker,
    /// A history push waiting for room in a full queue.
    room: Notify,
    /// The stream's task, waiting to hear that the body is gone.
    gone: Notify,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// Frames queued and taken since the stream began: the task's check that the client
    /// is reading compares them.
    pushed: u64,
    taken: u64,
    signals: VecDeque<(Bytes, u64)>,
    signal_bytes: usize,
    /// The body is gone: nothing more is queued.
    closed: bool,
    /// The body went while holding frames the client never took: the client had stopped
    /// reading (a zero window cut by TCP_USER_TIMEOUT), which is `slow`.
    abandoned: bool,
    /// The stream's task has ended: the body ends once it has handed out the frames.
    ended: bool,
}

/// What the body takes next.
enum Next {
    Frame(Bytes),
    End,
    Nothing,
}

impl Outbox {
    /// Queues a frame (shared, not copied) and wakes the body; never waits.
    pub fn push(&self, frame: Bytes) -> Result<(), Refused> {
        {
            let mut state = self.state.lock();
            if state.closed {
                return Err(Refused::Gone);
            }
            if state.frames.len() >= QUEUE_LIMIT {
                return Err(Refused::Full);
            }
            state.frames.push_back(frame);
            state.pushed += 1;
        }
        self.waker.wake();
        Ok(())
    }

    /// Queues a frame of history, waiting up to `within` for room in a full queue: a
    /// replay may be longer than the queue, but a client that takes nothing is slow.
    pub async fn push_waiting(&self, frame: Bytes, within: Duration) -> Result<(), Refused> {
        let deadline = Instant::now() + within;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before trying, so room made in between is not missed.
            room.as_mut().enable();
            match self.push(frame.clone()) {
                Err(Refused::Full) => {}
                done => return done,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(Refused::Full);
            }
        }
    }

    /// Frames queued and not yet taken by the body.
    pub fn queued(&self) -> u64 {
        let state = self.state.lock();
        state.pushed - state.taken
    }

    /// Frames the body has taken since the stream began.
    pub fn taken(&self) -> u64 {
        self.state.lock().taken
    }

    /// Whether the body went while holding frames (see `State::abandoned`).
    pub fn abandoned(&self) -> bool {
        self.state.lock().abandoned
    }

    /// Resolves once the body is gone.
    pub async fn closed(&self) {
        loop {
            let gone = self.gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.state.lock().closed {
                return;
            }
            gone.await;
        }
    }

    /// The stream's task has ended: the body writes what is queued, then ends.
    pub fn end(&self) {
        self.state.lock().ended = true;
        self.waker.wake();
    }

    /// Queues a batch of `count` signal frames (shared, not copied) and wakes the body.
    pub fn offer_signals(&self, frames: Bytes, count: u64) -> Offered {
        let mut dropped = 0;
        {
            let mut state = self.state.lock();
            if state.closed {
                return Offered {
                    queued: 0,
                    dropped: 0,
                };
            }
            if frames.len() > SIGNAL_BYTES_LIMIT {
                return Offered {
                    queued: 0,
                    dropped: count,
                };
            }
            while state.signal_bytes + frames.len() > SIGNAL_BYTES_LIMIT {
                let Some((old, n)) = state.signals.pop_front() else {
                    break;
                };
                state.signal_bytes -= old.len();
                dropped += n;
            }
            state.signal_bytes += frames.len();
            state.signals.push_back((frames, count));
        }
        self.waker.wake();
        Offered {
            queued: count,
            dropped,
        }
    }

    /// The next ordered frame; else every waiting signal batch as one chunk (the batch
    /// itself when there is one); else the end, once the task has ended.
    fn next(&self) -> Next {
        let mut state = self.state.lock();
        if let Some(frame) = state.frames.pop_front() {
            state.taken += 1;
            let was_full = state.frames.len() + 1 == QUEUE_LIMIT;
            drop(state);
            if was_full {
                self.room.notify_one();
            }
            return Next::Frame(frame);
        }
        let signals = match state.signals.len() {
            0 => None,
            1 => state.signals.pop_front().map(|(frames, _)| frames),
            _ => {
                let mut joined = BytesMut::with_capacity(state.signal_bytes);
                for (frames, _) in state.signals.drain(..) {
                    joined.extend_from_slice(&frames);
                }
                Some(joined.freeze())
            }
        };
        if let Some(frames) = signals {
            state.signal_bytes = 0;
            // A queue that grew for a flood gives its memory back once drained.
            state.signals.shrink_to(4);
            return Next::Frame(frames);
        }
        if state.ended {
            return Next::End;
        }
        if state.frames.capacity() > 16 {
            // Nothing waits: what a long replay or a burst made the queue grow to goes back.
            state.frames.shrink_to(4);
        }
        Next::Nothing
    }

    /// The body is gone: drop what waits, refuse what comes, tell the task.
    fn close(&self, closing: Closing) {
        {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            state.closed = true;
            state.abandoned = match closing {
                Closing::Discarded => false,
                Closing::Dropped { holding_a_piece } => holding_a_piece || !state.frames.is_empty(),
            };
            state.frames = VecDeque::new();
            state.signals = VecDeque::new();
            state.signal_bytes = 0;
        }
        self.gone.notify_waiters();
        // A history push waiting for room learns that there will be none.
        self.room.notify_waiters();
    }
}

/// How a body went.
enum Closing {
    /// Before it was handed to actix: the client never read at all.
    Discarded,
    /// Dropped by actix, the client gone; maybe in the middle of a frame.
    Dropped { holding_a_piece: bool },
}

/// The response body of a stream. Dropping it (the client went away) closes the outbox;
/// the stream task notices at once.
pub(crate) struct EventBody {
    outbox: Arc<Outbox>,
    /// What is left of a frame larger than [`BODY_PIECE`], handed out piece by piece.
    rest: Bytes,
}

impl EventBody {
    pub fn new(outbox: Arc<Outbox>) -> EventBody {
        EventBody {
            outbox,
            rest: Bytes::new(),
        }
    }

    /// Drops a body whose client left before it was handed over: its stream task ends as
    /// `client_gone` (not `slow`: the client never read at all).
    pub fn discard(mut self) {
        self.rest = Bytes::new();
        self.outbox.close(Closing::Discarded);
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        self.outbox.close(Closing::Dropped {
            holding_a_piece: !self.rest.is_empty(),
        });
    }
}

impl Stream for EventBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.rest.is_empty() {
            // Register before looking, so a frame queued in between wakes us.
            self.outbox.waker.register(cx.waker());
            match self.outbox.next() {
                Next::Frame(frame) => self.rest = frame,
                Next::End => return Poll::Ready(None),
                Next::Nothing => return Poll::Pending,
            }
        }
        let take = self.rest.len().min(BODY_PIECE);
        Poll::Ready(Some(Ok(self.rest.split_to(take))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn opened() -> (Arc<Outbox>, EventBody) {
        let outbox = Arc::new(Outbox::default());
        (outbox.clone(), EventBody::new(outbox))
    }

    async fn next(body: &mut EventBody) -> Bytes {
        body.next()
            .await
            .expect("the body goes on")
            .expect("infallible")
    }

    #[tokio::test]
    async fn a_change_queued_after_signals_is_written_before_them() {
        let (outbox, mut body) = opened();
        for i in 0..3 {
            let frame = Bytes::from(format!("event: signal\ndata: {{\"x\":{i}}}\n\n"));
            assert_eq!(outbox.offer_signals(frame, 1).queued, 1);
        }
        outbox
            .push(Bytes::from_static(
                b"id: 7\nevent: note.updated\ndata: {}\n\n",
            ))
            .expect("room");
        assert_eq!(
            &next(&mut body).await[..],
            b"id: 7\nevent: note.updated\ndata: {}\n\n"
        );
        // The three waiting batches come after it, in order, as one chunk (one write).
        assert_eq!(
            &next(&mut body).await[..],
            &b"event: signal\ndata: {\"x\":0}\n\nevent: signal\ndata: {\"x\":1}\n\nevent: signal\ndata: {\"x\":2}\n\n"[..]
        );
        assert!(matches!(outbox.next(), Next::Nothing));
    }

    #[tokio::test]
    async fn a_frame_queued_while_the_body_waits_wakes_it() {
        let (outbox, mut body) = opened();
        let waiting = tokio::spawn(async move { (next(&mut body).await, next(&mut body).await) });
        tokio::task::yield_now().await;
        let signal = Bytes::from_static(b"event: signal\ndata: {}\n\n");
        outbox.offer_signals(signal.clone(), 1);
        tokio::task::yield_now().await;
        let change = Bytes::from_static(b"id: 1\nevent: note.created\ndata: {}\n\n");
        outbox.push(change.clone()).expect("room");
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(got, (signal, change));
    }

    #[test]
    fn the_oldest_signals_give_way_when_a_client_reads_too_slowly() {
        let outbox = Outbox::default();
        let batch = Bytes::from(vec![b'x'; SIGNAL_BYTES_LIMIT / 4]);
        for _ in 0..4 {
            assert_eq!(outbox.offer_signals(batch.clone(), 3).dropped, 0);
        }
        let newest = Bytes::from(vec![b'y'; SIGNAL_BYTES_LIMIT / 4]);
        assert_eq!(
            outbox.offer_signals(newest, 3),
            Offered {
                queued: 3,
                dropped: 3
            }
        );
        let Next::Frame(kept) = outbox.next() else {
            panic!("batches wait");
        };
        assert_eq!(kept.len(), SIGNAL_BYTES_LIMIT);
        assert!(kept.ends_with(b"yyy"));
        let huge = Bytes::from(vec![b'z'; SIGNAL_BYTES_LIMIT + 1]);
        assert_eq!(
            outbox.offer_signals(huge, 9),
            Offered {
                queued: 0,
                dropped: 9
            }
        );
    }

    #[tokio::test]
    async fn a_dropped_body_refuses_frames_and_tells_the_task() {
        let (outbox, body) = opened();
        outbox.offer_signals(Bytes::from_static(b"event: signal\ndata: {}\n\n"), 1);
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.closed().await }
        });
        tokio::task::yield_now().await;
        drop(body);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the task hears it")
            .expect("task");
        assert_eq!(outbox.push(Bytes::from_static(b"x")), Err(Refused::Gone));
        assert_eq!(
            outbox.offer_signals(Bytes::from_static(b"event: signal\ndata: {}\n\n"), 1),
            Offered {
                queued: 0,
                dropped: 0
            }
        );
        assert!(matches!(outbox.next(), Next::Nothing));
        // It held no change frame, so the client was not behind.
        assert!(!outbox.abandoned());
    }

    #[test]
    fn a_body_dropped_holding_frames_was_abandoned_but_a_discarded_one_was_not() {
        let (outbox, body) = opened();
        outbox
            .push(Bytes::from_static(b"retry: 2000\n\n"))
            .expect("room");
        drop(body);
        assert!(outbox.abandoned());

        let (outbox, body) = opened();
        outbox
            .push(Bytes::from_static(b"retry: 2000\n\n"))
            .expect("room");
        body.discard();
        assert!(!outbox.abandoned());
    }

    #[tokio::test]
    async fn the_queue_refuses_past_its_limit_and_a_history_push_waits_for_room() {
        let (outbox, mut body) = opened();
        for i in 0..QUEUE_LIMIT {
            outbox.push(Bytes::from(format!("{i}\n"))).expect("room");
        }
        assert_eq!(outbox.push(Bytes::from_static(b"late")), Err(Refused::Full));
        assert_eq!(outbox.queued(), QUEUE_LIMIT as u64);
        // Nobody reads: a history push gives up after its time.
        let frame = Bytes::from_static(b"history\n");
        assert_eq!(
            outbox
                .push_waiting(frame.clone(), Duration::from_millis(50))
                .await,
            Err(Refused::Full)
        );
        // The client reads one frame: the waiting push gets its room.
        let pushing = tokio::spawn({
            let outbox = outbox.clone();
            let frame = frame.clone();
            async move { outbox.push_waiting(frame, Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(&next(&mut body).await[..], b"0\n");
        assert_eq!(pushing.await.expect("task"), Ok(()));
        assert_eq!(outbox.taken(), 1);
        assert_eq!(outbox.queued(), QUEUE_LIMIT as u64);
    }

    #[tokio::test]
    async fn the_body_ends_after_the_last_frame_once_the_task_ends() {
        let (outbox, mut body) = opened();
        outbox
            .push(Bytes::from_static(b"retry: 3000\n\n"))
            .expect("room");
        outbox.end();
        assert_eq!(&next(&mut body).await[..], b"retry: 3000\n\n");
        assert!(body.next().await.is_none());
    }

    #[test]
    fn a_burst_is_handed_out_without_a_pause_so_actix_writes_it_at_once() {
        // actix polls a body until it is pending (or its buffer holds WRITE_BUFFER_FILL)
        // and only then writes: frames that are all ready go out in one `send`.
        let (outbox, mut body) = opened();
        for seq in 1..=20 {
            let frame = format!("id: {seq}\nevent: note.updated\ndata: {{}}\n\n");
            outbox.push(Bytes::from(frame)).expect("room");
        }
        outbox.offer_signals(Bytes::from_static(b"event: signal\ndata: {}\n\n"), 1);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut ready = 0;
        while let Poll::Ready(Some(Ok(_))) = Pin::new(&mut body).poll_next(&mut cx) {
            ready += 1;
        }
        assert_eq!(ready, 21, "20 changes, then the signals as one chunk");
    }

    #[tokio::test]
    async fn a_large_frame_leaves_the_body_in_pieces_that_keep_actix_buffer_at_8_kib() {
        let (outbox, mut body) = opened();
        let big = Bytes::from(vec![b'x'; 4500]);
        outbox.push(big.clone()).expect("room");
        outbox.push(Bytes::from_static(b"small")).expect("room");
        outbox.end();
        let mut pieces = Vec::new();
        while let Some(Ok(piece)) = body.next().await {
            pieces.push(piece);
        }
        let sizes: Vec<usize> = pieces.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [2000, 2000, 500, 5]);
        assert_eq!(pieces[..3].concat(), big.to_vec());
    }
}
