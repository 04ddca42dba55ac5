//! A stream's response body: what actix writes to the client, from two queues.
//!
//! Change, snapshot, presence and heartbeat frames come through the stream task's bounded
//! queue, in order. Signal frames wait beside it in a [`SignalQueue`] that the hub (shared
//! mode) or the stream task (per-stream mode) fills directly. The body takes from the
//! change queue first and only then the signals, all the signal batches waiting as one
//! chunk: a change written during a signal flood goes out ahead of the signal frames that
//! were waiting before it, and a flood of signals costs one write per stream per batch,
//! not one per signal. In shared mode a signal reaches the body with one wake-up (the hub
//! wakes the connection's task), without passing through the stream task.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, task::AtomicWaker};
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Bytes of signal frames one stream may hold while its client is not reading them:
/// about 200 cursor frames, ten windows of a busy board. Past it the oldest batches are
/// dropped (`overload`): signals are latest-wins, so the newest are the ones worth
/// keeping, and a client that reads this slowly is shown positions, not a history.
pub(crate) const SIGNAL_BYTES_LIMIT: usize = 32 * 1024;

/// Signal batches waiting for one stream's client, oldest first.
#[derive(Default)]
pub(crate) struct SignalQueue {
    pending: Mutex<Pending>,
    /// The body's task, woken when a batch arrives.
    waker: AtomicWaker,
}

#[derive(Default)]
struct Pending {
    batches: VecDeque<(Bytes, u64)>,
    bytes: usize,
    /// The body is gone: nothing more is queued.
    closed: bool,
}

/// What became of a batch offered to a stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Offered {
    /// Signals queued for the client (the batch's count, or 0 if the stream is gone).
    pub queued: u64,
    /// Signals dropped to make room (older batches, or this one if it alone is too big).
    pub dropped: u64,
}

impl SignalQueue {
    /// Queues a batch of `count` signal frames (shared, not copied) and wakes the body.
    pub fn offer(&self, frames: Bytes, count: u64) -> Offered {
        let mut dropped = 0;
        {
            let mut pending = self.pending.lock();
            if pending.closed {
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
            while pending.bytes + frames.len() > SIGNAL_BYTES_LIMIT {
                let Some((old, n)) = pending.batches.pop_front() else {
                    break;
                };
                pending.bytes -= old.len();
                dropped += n;
            }
            pending.bytes += frames.len();
            pending.batches.push_back((frames, count));
        }
        self.waker.wake();
        Offered {
            queued: count,
            dropped,
        }
    }

    /// Every waiting batch as one chunk (the batch itself when there is one), or `None`.
    fn take(&self) -> Option<Bytes> {
        let mut pending = self.pending.lock();
        match pending.batches.len() {
            0 => None,
            1 => {
                pending.bytes = 0;
                pending.batches.pop_front().map(|(frames, _)| frames)
            }
            _ => {
                let mut joined = BytesMut::with_capacity(pending.bytes);
                for (frames, _) in pending.batches.drain(..) {
                    joined.extend_from_slice(&frames);
                }
                pending.bytes = 0;
                Some(joined.freeze())
            }
        }
    }

    /// The body is gone: drop what waits and refuse what comes.
    fn close(&self) {
        let mut pending = self.pending.lock();
        pending.closed = true;
        pending.batches = VecDeque::new();
        pending.bytes = 0;
    }
}

/// The response body of a stream. Dropping it (the client went away) closes both queues;
/// the stream task notices at once.
pub(crate) struct EventBody {
    rx: mpsc::Receiver<Bytes>,
    signals: Arc<SignalQueue>,
    /// Set when the body is dropped with frames the client never took: the client had
    /// stopped reading (a zero window cut by TCP_USER_TIMEOUT), which is `slow`.
    abandoned: Arc<AtomicBool>,
}

impl EventBody {
    pub fn new(
        rx: mpsc::Receiver<Bytes>,
        signals: Arc<SignalQueue>,
        abandoned: Arc<AtomicBool>,
    ) -> EventBody {
        EventBody {
            rx,
            signals,
            abandoned,
        }
    }

    /// Drops a body whose client left before it was handed over: its stream task sees the
    /// channel close and ends as `client_gone` (not `slow`: the client never read at all).
    pub fn discard(mut self) {
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        self.signals.close();
        if !self.rx.is_empty() {
            self.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

impl Stream for EventBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Changes (and everything else the stream task sends) first; the stream ends when
        // its task does.
        if let Poll::Ready(frame) = self.rx.poll_recv(cx) {
            return Poll::Ready(frame.map(Ok));
        }
        // Register before looking, so a batch offered in between wakes us.
        self.signals.waker.register(cx.waker());
        match self.signals.take() {
            Some(frames) => Poll::Ready(Some(Ok(frames))),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn body(capacity: usize) -> (mpsc::Sender<Bytes>, Arc<SignalQueue>, EventBody) {
        let (tx, rx) = mpsc::channel(capacity);
        let signals = Arc::new(SignalQueue::default());
        let body = EventBody::new(rx, signals.clone(), Arc::default());
        (tx, signals, body)
    }

    async fn next(body: &mut EventBody) -> Bytes {
        body.next()
            .await
            .expect("the body goes on")
            .expect("infallible")
    }

    #[tokio::test]
    async fn a_change_queued_after_signals_is_written_before_them() {
        let (tx, signals, mut body) = body(8);
        for i in 0..3 {
            let frame = Bytes::from(format!("event: signal\ndata: {{\"x\":{i}}}\n\n"));
            assert_eq!(signals.offer(frame, 1).queued, 1);
        }
        tx.try_send(Bytes::from_static(
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
        assert!(signals.take().is_none());
    }

    #[tokio::test]
    async fn a_signal_offered_while_the_body_waits_wakes_it() {
        let (_tx, signals, mut body) = body(8);
        let waiting = tokio::spawn(async move { next(&mut body).await });
        tokio::task::yield_now().await;
        let frame = Bytes::from_static(b"event: signal\ndata: {}\n\n");
        signals.offer(frame.clone(), 1);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(got, frame);
    }

    #[test]
    fn the_oldest_signals_give_way_when_a_client_reads_too_slowly() {
        let signals = SignalQueue::default();
        let batch = Bytes::from(vec![b'x'; SIGNAL_BYTES_LIMIT / 4]);
        for _ in 0..4 {
            assert_eq!(signals.offer(batch.clone(), 3).dropped, 0);
        }
        let newest = Bytes::from(vec![b'y'; SIGNAL_BYTES_LIMIT / 4]);
        assert_eq!(
            signals.offer(newest, 3),
            Offered {
                queued: 3,
                dropped: 3
            }
        );
        let kept = signals.take().expect("batches");
        assert_eq!(kept.len(), SIGNAL_BYTES_LIMIT);
        assert!(kept.ends_with(b"yyy"));
        let huge = Bytes::from(vec![b'z'; SIGNAL_BYTES_LIMIT + 1]);
        assert_eq!(
            signals.offer(huge, 9),
            Offered {
                queued: 0,
                dropped: 9
            }
        );
    }

    #[test]
    fn a_closed_body_takes_no_more_signals() {
        let (tx, signals, body) = body(8);
        signals.offer(Bytes::from_static(b"event: signal\ndata: {}\n\n"), 1);
        drop(body);
        assert!(tx.is_closed());
        assert_eq!(
            signals.offer(Bytes::from_static(b"event: signal\ndata: {}\n\n"), 1),
            Offered {
                queued: 0,
                dropped: 0
            }
        );
        assert!(signals.take().is_none());
    }
}
