//! One soak client: a browser-like SSE subscriber of one board that reconnects after the
//! server's `retry:` with `Last-Event-ID`, folds what it receives into the board's notes,
//! and keeps the evidence for the verdicts (every id it saw, across all its connections).
//!
//! It speaks HTTP/1.1 over a raw socket rather than through reqwest because the soak must
//! be able to drop a connection with a TCP RST (SO_LINGER 0), which no HTTP client library
//! exposes; the chunked decoding and the SSE fields it needs are a few lines each.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Notify,
    time::{sleep, timeout},
};

/// How the churn controller asks a client to leave and come back.
pub const STAY: u8 = 0;
/// Close with FIN, like a tab that navigates away.
pub const LEAVE: u8 = 1;
/// Close with RST (SO_LINGER 0), like a phone that loses its network.
pub const RESET: u8 = 2;
/// Stop reading for a while (a slow reader), then go on.
pub const STALL: u8 = 3;

/// Why a connection ended, for the report's reconnect causes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// The server ended the body (shutdown, slow, listener or database trouble)
    ServerClosed,
    /// The socket failed: reset, refused (instance down), timed out
    Network,
    /// 503 (capacity or database unavailable) with `Retry-After`
    Unavailable,
    /// Any other status; a verdict failure when it is a 5xx
    Status(u16),
    /// No byte (not even a heartbeat) for three heartbeat intervals
    Silent,
    /// The soak's churn: FIN
    Left,
    /// The soak's churn: RST
    Reset,
}

/// What the soak reads from a client while it runs and when it ends.
#[derive(Default)]
pub struct Shared {
    /// Last change-event id received (−1 before the first snapshot).
    pub last: AtomicI64,
    /// Set while a stream is open and past its first frame.
    pub live: AtomicBool,
    /// The churn order for this client: `STAY`, `LEAVE`, `RESET` or `STALL`.
    pub order: AtomicU8,
    /// Set while the client has stopped reading on the churn's order (a fault's catch-up
    /// time leaves such clients out: they are behind on purpose).
    pub stalled: AtomicBool,
    pub wake: Notify,
    pub state: Mutex<State>,
}

/// Folded notes and the verdict evidence.
#[derive(Default)]
pub struct State {
    /// note id → (version, text): the board as this client knows it.
    pub notes: HashMap<String, (i64, String)>,
    pub events: u64,
    pub duplicates: u64,
    pub gaps: u64,
    /// Snapshots received on a resume (with a last event id): allowed only when history
    /// is gone, which the soak never makes happen.
    pub resume_snapshots: u64,
    pub snapshots: u64,
    pub connects: u64,
    pub causes: HashMap<Cause, u64>,
    pub server_errors: Vec<String>,
    pub viewer: Option<String>,
    pub signals: u64,
}

pub struct Client {
    pub board: String,
    pub addr: SocketAddr,
    pub heartbeat: Duration,
    pub shared: Arc<Shared>,
}

enum End {
    Cause(Cause, Option<Duration>),
    Stop,
}

impl Client {
    /// Runs until `stop` is set: connect, read, reconnect after the server's `retry:`
    /// (or `Retry-After` on a 503), always resuming from the last id received.
    pub async fn run(self, stop: Arc<AtomicBool>) {
        let mut retry = Duration::from_millis(2000);
        self.shared.last.store(-1, Ordering::SeqCst);
        while !stop.load(Ordering::SeqCst) {
            let end = self.connection(&stop, &mut retry).await;
            self.shared.live.store(false, Ordering::SeqCst);
            let wait = match end {
                End::Stop => break,
                End::Cause(cause, after) => {
                    *self
                        .shared
                        .state
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .causes
                        .entry(cause)
                        .or_default() += 1;
                    after.unwrap_or(retry)
                }
            };
            // Like EventSource: wait `retry` (the server jitters it at shutdown), checking
            // for the end of the run meanwhile.
            let deadline = tokio::time::Instant::now() + wait;
            while tokio::time::Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn connection(&self, stop: &AtomicBool, retry: &mut Duration) -> End {
        let mut socket = match timeout(Duration::from_secs(5), TcpStream::connect(self.addr)).await
        {
            Ok(Ok(s)) => s,
            _ => return End::Cause(Cause::Network, Some(Duration::from_millis(500))),
        };
        let last = self.shared.last.load(Ordering::SeqCst);
        let resume = if last >= 0 {
            format!("Last-Event-ID: {last}\r\n")
        } else {
            String::new()
        };
        let request = format!(
            "GET /api/boards/{}/events?name=soak HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{resume}\r\n",
            self.board, self.addr
        );
        if socket.write_all(request.as_bytes()).await.is_err() {
            return End::Cause(Cause::Network, Some(Duration::from_millis(500)));
        }
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .connects += 1;
        let mut reader = Reader::default();
        let silent = self.heartbeat * 3;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.shared.order.swap(STAY, Ordering::SeqCst) {
                LEAVE => return End::Cause(Cause::Left, Some(Duration::from_millis(200))),
                RESET => {
                    let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
                    drop(socket);
                    return End::Cause(Cause::Reset, Some(Duration::from_millis(200)));
                }
                STALL => {
                    self.shared.stalled.store(true, Ordering::SeqCst);
                    sleep(self.heartbeat * 2).await;
                    self.shared.stalled.store(false, Ordering::SeqCst);
                }
                _ => {}
            }
            if stop.load(Ordering::SeqCst) {
                return End::Stop;
            }
            let n = tokio::select! {
                r = timeout(silent, socket.read(&mut buf)) => match r {
                    Ok(Ok(0)) => return End::Cause(Cause::ServerClosed, None),
                    Ok(Ok(n)) => n,
                    Ok(Err(_)) => return End::Cause(Cause::Network, None),
                    Err(_) => return End::Cause(Cause::Silent, Some(Duration::from_millis(200))),
                },
                () = self.shared.wake.notified() => continue,
            };
            if let Err(e) = reader.feed(&buf[..n]) {
                self.shared
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .server_errors
                    .push(e);
                return End::Cause(Cause::Status(0), Some(Duration::from_secs(1)));
            }
            if let Some(status) = reader.status
                && status != 200
            {
                let after = reader
                    .retry_after
                    .map(|s| Duration::from_secs(s.max(1)))
                    .unwrap_or(Duration::from_secs(1));
                let cause = if status == 503 {
                    Cause::Unavailable
                } else {
                    if status >= 500 {
                        self.shared
                            .state
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .server_errors
                            .push(format!("stream open answered {status}"));
                    }
                    Cause::Status(status)
                };
                return End::Cause(cause, Some(after));
            }
            for frame in reader.frames.drain(..) {
                if let Some(ms) = frame.retry {
                    *retry = Duration::from_millis(ms);
                }
                self.fold(frame, last >= 0);
            }
            if reader.ended {
                return End::Cause(Cause::ServerClosed, None);
            }
        }
    }

    /// Folds one frame; checks ids for gaps and repeats.
    fn fold(&self, frame: Frame, resumed: bool) {
        let Some(event) = frame.event.as_deref() else {
            return;
        };
        self.shared.live.store(true, Ordering::SeqCst);
        let data: Value = serde_json::from_str(&frame.data).unwrap_or(Value::Null);
        let mut st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match event {
            "snapshot" => {
                st.snapshots += 1;
                if resumed && self.shared.last.load(Ordering::SeqCst) >= 0 {
                    st.resume_snapshots += 1;
                }
                st.notes = data["notes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(note_entry)
                    .collect();
                if let Some(id) = frame.id {
                    self.shared.last.store(id, Ordering::SeqCst);
                }
            }
            "presence" => {
                st.viewer = data["you"]["id"].as_str().map(str::to_string);
            }
            "signal" => st.signals += 1,
            "note.created" | "note.updated" | "note.deleted" | "board.updated" => {
                let Some(id) = frame.id else {
                    st.server_errors.push(format!("{event} without an id"));
                    return;
                };
                let last = self.shared.last.load(Ordering::SeqCst);
                if id <= last {
                    st.duplicates += 1;
                    return;
                }
                if last >= 0 && id > last + 1 {
                    st.gaps += (id - last - 1) as u64;
                }
                self.shared.last.store(id, Ordering::SeqCst);
                st.events += 1;
                match event {
                    "note.deleted" => {
                        if let Some(nid) = data["note"]["id"].as_str() {
                            st.notes.remove(nid);
                        }
                    }
                    "board.updated" => {}
                    _ => {
                        if let Some((k, v)) = note_entry(&data["note"]) {
                            st.notes.insert(k, v);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// `(id, (version, text))` of a note as the API shows it.
pub fn note_entry(note: &Value) -> Option<(String, (i64, String))> {
    Some((
        note["id"].as_str()?.to_string(),
        (
            note["version"].as_i64()?,
            note["text"].as_str()?.to_string(),
        ),
    ))
}

/// One SSE event: its fields as received.
#[derive(Default, Debug)]
pub struct Frame {
    pub id: Option<i64>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

/// Incremental HTTP/1.1 response reader: head, chunked body, SSE frames.
#[derive(Default)]
struct Reader {
    head: Vec<u8>,
    status: Option<u16>,
    retry_after: Option<u64>,
    chunked: bool,
    in_body: bool,
    /// Bytes left in the current chunk; `None` while reading a size line.
    chunk_left: Option<usize>,
    size_line: Vec<u8>,
    /// Skipping the CRLF after a chunk's data.
    crlf_left: usize,
    line: Vec<u8>,
    frame: Frame,
    frames: Vec<Frame>,
    ended: bool,
}

impl Reader {
    fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        if !self.in_body {
            self.head.extend_from_slice(data);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.head.len() > 64 * 1024 {
                    return Err("response head over 64 KiB".into());
                }
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.head[..end]).to_string();
            let rest = self.head[end + 4..].to_vec();
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            self.status = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok());
            if self.status.is_none() {
                return Err(format!("bad status line {status_line:?}"));
            }
            for l in lines {
                let Some((k, v)) = l.split_once(':') else {
                    continue;
                };
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    self.chunked = true;
                }
                if k == "retry-after" {
                    self.retry_after = v.parse().ok();
                }
            }
            self.in_body = true;
            self.head.clear();
            if self.status != Some(200) {
                return Ok(());
            }
            return self.body(&rest);
        }
        if self.status != Some(200) {
            return Ok(());
        }
        self.body(std::mem::take(&mut data))
    }

    fn body(&mut self, mut data: &[u8]) -> Result<(), String> {
        // After the last chunk only the trailer section's CRLF can follow.
        if self.ended {
            return Ok(());
        }
        if !self.chunked {
            self.sse(data);
            return Ok(());
        }
        while !data.is_empty() {
            if self.crlf_left > 0 {
                let n = self.crlf_left.min(data.len());
                self.crlf_left -= n;
                data = &data[n..];
                continue;
            }
            match self.chunk_left {
                None => {
                    let Some(i) = data.iter().position(|&b| b == b'\n') else {
                        self.size_line.extend_from_slice(data);
                        return Ok(());
                    };
                    self.size_line.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    let text = String::from_utf8_lossy(&self.size_line).to_string();
                    self.size_line.clear();
                    let hex = text.trim().split(';').next().unwrap_or_default();
                    let size = usize::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad chunk size {text:?}"))?;
                    if size == 0 {
                        self.ended = true;
                        return Ok(());
                    }
                    self.chunk_left = Some(size);
                }
                Some(left) => {
                    let n = left.min(data.len());
                    let (now, rest) = data.split_at(n);
                    self.sse(now);
                    data = rest;
                    if left == n {
                        self.chunk_left = None;
                        self.crlf_left = 2;
                    } else {
                        self.chunk_left = Some(left - n);
                    }
                }
            }
        }
        Ok(())
    }

    fn sse(&mut self, data: &[u8]) {
        for &b in data {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&self.line).to_string();
            self.line.clear();
            if line.is_empty() {
                let frame = std::mem::take(&mut self.frame);
                if frame.event.is_some() || frame.retry.is_some() || !frame.data.is_empty() {
                    self.frames.push(frame);
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.frame.id = value.parse().ok(),
                "event" => self.frame.event = Some(value.to_string()),
                "data" => {
                    if !self.frame.data.is_empty() {
                        self.frame.data.push('\n');
                    }
                    self.frame.data.push_str(value);
                }
                "retry" => {
                    // A `retry:` alone is dispatched as a frame of its own by this reader
                    // (browsers apply it at once, too).
                    self.frame.retry = value.parse().ok();
                    let frame = std::mem::take(&mut self.frame);
                    self.frames.push(frame);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_sse_split_anywhere() {
        let body = "retry: 2000\n\nid: 4\nevent: snapshot\ndata: {\"seq\":4,\"notes\":[]}\n\nevent: heartbeat\ndata: {}\n\n";
        let mut wire = String::from("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        for part in [&body[..10], &body[10..40], &body[40..]] {
            wire.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
        }
        wire.push_str("0\r\n\r\n");
        for step in [1, 3, 7, 1000] {
            let mut r = Reader::default();
            for piece in wire.as_bytes().chunks(step) {
                r.feed(piece).unwrap();
            }
            let events: Vec<_> = r.frames.iter().map(|f| f.event.clone()).collect();
            assert_eq!(
                events,
                vec![None, Some("snapshot".into()), Some("heartbeat".into())],
                "step {step}"
            );
            assert_eq!(r.frames[0].retry, Some(2000));
            assert_eq!(r.frames[1].id, Some(4));
            assert!(r.ended);
        }
    }

    #[test]
    fn refusal_keeps_retry_after() {
        let mut r = Reader::default();
        r.feed(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\ncontent-length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!((r.status, r.retry_after), (Some(503), Some(3)));
        assert!(r.frames.is_empty());
    }
}
