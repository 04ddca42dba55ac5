//! One subscriber: a raw TCP client that sends the request line, decodes the chunked body
//! and picks the `id:` lines out of it, so that no SSE library sits between the socket and
//! the clock. The same client reads Nchan's EventSource stream (`Framing::Nchan`) for the
//! comparison in the same run.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ns;

/// What the coordinator can see of a subscriber while it runs.
#[derive(Default)]
pub struct Slot {
    pub ready: AtomicBool,
    pub ended: AtomicBool,
    pub last: AtomicI64,
    pub bytes: AtomicU64,
}

#[derive(Default)]
pub struct SubOutcome {
    pub status: Option<u16>,
    /// Why the stream ended before it was told to stop.
    pub ended: Option<String>,
    /// When the request went out, and when the snapshot event was complete (0: never).
    pub open_ns: u64,
    pub snapshot_ns: u64,
    /// Deliveries of each seq (index = seq).
    pub seen: Vec<u8>,
    /// Receive time of seqs 1..=track (index = seq; 0: not received).
    pub times: Vec<u64>,
    pub heartbeats: u32,
    /// `presence`, `presence.joined`, `presence.left` and `presence.count` events.
    pub presence: u64,
    /// The SSE text of those events (their lines and the blank line ending each).
    pub presence_bytes: u64,
    pub bytes: u64,
}

/// Whose EventSource stream a subscriber reads: where the seq of a delivery is, and when
/// the stream counts as open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// boardcast: `id: <seq>`; open once the first event with an id (the snapshot) is
    /// complete.
    Boardcast,
    /// Nchan: its `id:` is its own message id (`<time>:<tag>`), so the seq is read from the
    /// data, which is a note event as boardcast sends it (`data: {"seq":N,…`); open once
    /// its greeting (`: hi` and a blank line, sent when the subscriber is enqueued on the
    /// channel; Nchan's src/subscribers/eventsource.c) is complete.
    Nchan,
}

#[derive(Clone, Copy)]
pub enum Body {
    Head,
    Plain,
    ChunkSize,
    ChunkData(usize),
    ChunkEnd(u8),
    Done,
}

pub const PREFIX: usize = 24;

pub struct Sub {
    pub out: SubOutcome,
    pub slot: Arc<Slot>,
    pub permit: Option<OwnedSemaphorePermit>,
    pub track: usize,
    pub now: u64,
    pub body: Body,
    pub head: Vec<u8>,
    pub size_line: Vec<u8>,
    /// The start of the current line (all that matters: `id:`, `event:` or empty) and its
    /// full length so far.
    pub line: [u8; PREFIX],
    pub line_prefix: usize,
    pub line_len: usize,
    /// 0: no event with an id yet; 1: inside the first (the snapshot); 2: snapshot done.
    pub snapshot: u8,
    /// Inside a presence event: its lines count as presence bytes.
    pub in_presence: bool,
    pub framing: Framing,
}

impl Sub {
    pub fn new(slot: Arc<Slot>, permit: Option<OwnedSemaphorePermit>, track: usize) -> Sub {
        Sub {
            out: SubOutcome {
                times: vec![0; track + 1],
                ..SubOutcome::default()
            },
            slot,
            permit,
            track,
            now: 0,
            body: Body::Head,
            head: Vec::new(),
            size_line: Vec::new(),
            line: [0; PREFIX],
            line_prefix: 0,
            line_len: 0,
            snapshot: 0,
            in_presence: false,
            framing: Framing::Boardcast,
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        self.out.bytes += data.len() as u64;
        self.slot.bytes.fetch_add(data.len() as u64, Relaxed);
        if let Body::Head = self.body {
            self.head.extend_from_slice(data);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.head.len() > 65536 {
                    return Err("response head too long".into());
                }
                return Ok(());
            };
            let rest = self.head.split_off(end + 4);
            let head = String::from_utf8_lossy(&self.head).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            self.out.status = Some(status);
            if status != 200 {
                return Err(format!("status {status}"));
            }
            if self.framing == Framing::Nchan {
                // Nchan has no snapshot: the greeting's blank line completes the opening.
                self.snapshot = 1;
            }
            self.body = if head.contains("transfer-encoding: chunked") {
                Body::ChunkSize
            } else {
                Body::Plain
            };
            self.head = Vec::new();
            return self.body_bytes(&rest);
        }
        self.body_bytes(data)
    }

    pub fn body_bytes(&mut self, data: &[u8]) -> Result<(), String> {
        let mut i = 0;
        while i < data.len() {
            match self.body {
                Body::Head | Body::Done => return Ok(()),
                Body::Plain => {
                    self.sse(&data[i..]);
                    i = data.len();
                }
                Body::ChunkSize => match data[i..].iter().position(|&b| b == b'\n') {
                    None => {
                        self.size_line.extend_from_slice(&data[i..]);
                        i = data.len();
                    }
                    Some(p) => {
                        self.size_line.extend_from_slice(&data[i..i + p]);
                        i += p + 1;
                        let text = String::from_utf8_lossy(&self.size_line);
                        let hex = text.split(';').next().unwrap_or("").trim();
                        let size = usize::from_str_radix(hex, 16)
                            .map_err(|_| format!("bad chunk size {hex:?}"))?;
                        self.size_line.clear();
                        if size == 0 {
                            self.body = Body::Done;
                            return Err("end of body".into());
                        }
                        self.body = Body::ChunkData(size);
                    }
                },
                Body::ChunkData(left) => {
                    let take = left.min(data.len() - i);
                    self.sse(&data[i..i + take]);
                    i += take;
                    self.body = if take == left {
                        Body::ChunkEnd(2)
                    } else {
                        Body::ChunkData(left - take)
                    };
                }
                Body::ChunkEnd(left) => {
                    let take = (left as usize).min(data.len() - i);
                    i += take;
                    self.body = if take == left as usize {
                        Body::ChunkSize
                    } else {
                        Body::ChunkEnd(left - take as u8)
                    };
                }
            }
        }
        Ok(())
    }

    /// SSE text: only the first bytes of each line are kept, carried across reads.
    pub fn sse(&mut self, mut data: &[u8]) {
        while let Some(p) = data.iter().position(|&b| b == b'\n') {
            self.line_part(&data[..p]);
            self.line_done();
            data = &data[p + 1..];
        }
        self.line_part(data);
    }

    pub fn line_part(&mut self, part: &[u8]) {
        let room = PREFIX - self.line_prefix;
        let take = room.min(part.len());
        self.line[self.line_prefix..self.line_prefix + take].copy_from_slice(&part[..take]);
        self.line_prefix += take;
        self.line_len += part.len();
    }

    pub fn line_done(&mut self) {
        let len = self.line_len;
        let prefix = self.line_prefix;
        self.line_len = 0;
        self.line_prefix = 0;
        if self.in_presence {
            self.out.presence_bytes += len as u64 + 1;
        }
        if len == 0 || (len == 1 && self.line[0] == b'\r') {
            self.in_presence = false;
            if self.snapshot == 1 {
                self.snapshot = 2;
                self.out.snapshot_ns = self.now;
                self.slot.ready.store(true, Relaxed);
                self.permit = None;
            }
            return;
        }
        let line = &self.line[..prefix];
        if self.framing == Framing::Nchan {
            // `data: {"seq":` is 14 bytes: the digits after it fit in PREFIX (24).
            if let Some(rest) = line.strip_prefix(b"data: {\"seq\":") {
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                if let Some(seq) = std::str::from_utf8(&rest[..digits])
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                {
                    self.delivered(seq);
                }
            }
            return;
        }
        if let Some(id) = line.strip_prefix(b"id:") {
            let seq = std::str::from_utf8(id)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .unwrap_or(-1);
            if self.snapshot == 0 {
                self.snapshot = 1;
            } else if seq >= 0 {
                self.delivered(seq as usize);
            }
        } else if line.starts_with(b"event: heartbeat") {
            self.out.heartbeats += 1;
        } else if line.starts_with(b"event: presence") {
            self.out.presence += 1;
            self.in_presence = true;
            self.out.presence_bytes += len as u64 + 1;
        }
    }

    pub fn delivered(&mut self, seq: usize) {
        if seq >= 50_000_000 {
            return;
        }
        if seq >= self.out.seen.len() {
            self.out.seen.resize(seq + 1, 0);
        }
        self.out.seen[seq] = self.out.seen[seq].saturating_add(1);
        if seq <= self.track && self.out.times[seq] == 0 {
            self.out.times[seq] = self.now;
        }
        if seq as i64 > self.slot.last.load(Relaxed) {
            self.slot.last.store(seq as i64, Relaxed);
        }
    }
}

pub async fn subscribe(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    slot: Arc<Slot>,
    gate: Option<Arc<Semaphore>>,
    stop: CancellationToken,
    give_up: CancellationToken,
    track: usize,
) -> SubOutcome {
    let to = Target {
        addr,
        request,
        framing: Framing::Boardcast,
    };
    subscribe_to(to, slot, gate, stop, give_up, track).await
}

/// Where a subscriber connects, what it sends, and how it reads the answer.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub request: Arc<Vec<u8>>,
    pub framing: Framing,
}

/// `subscribe` to any EventSource server: boardcast's or Nchan's.
pub async fn subscribe_to(
    to: Target,
    slot: Arc<Slot>,
    gate: Option<Arc<Semaphore>>,
    stop: CancellationToken,
    give_up: CancellationToken,
    track: usize,
) -> SubOutcome {
    let Target {
        addr,
        request,
        framing,
    } = to;
    let permit = match gate {
        Some(gate) => tokio::select! {
            p = gate.acquire_owned() => p.ok(),
            _ = stop.cancelled() => None,
            _ = give_up.cancelled() => None,
        },
        None => None,
    };
    if stop.is_cancelled() || give_up.is_cancelled() {
        slot.ended.store(true, Relaxed);
        return SubOutcome {
            ended: Some("never connected (gave up opening)".into()),
            ..SubOutcome::default()
        };
    }
    let mut sub = Sub::new(slot.clone(), permit, track);
    sub.framing = framing;
    sub.out.open_ns = now_ns();
    let run = async {
        let mut socket = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        socket
            .write_all(&request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = vec![0u8; 8192];
        loop {
            let opening = sub.snapshot < 2;
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                _ = give_up.cancelled(), if opening => {
                    return Err("gave up waiting for the snapshot".to_string());
                }
                read = socket.read(&mut buf) => {
                    let n = read.map_err(|e| format!("read: {e}"))?;
                    if n == 0 {
                        return Err("eof".to_string());
                    }
                    sub.now = now_ns();
                    sub.feed(&buf[..n])?;
                }
            }
        }
    };
    let result: Result<(), String> = run.await;
    if let Err(why) = result {
        sub.out.ended = Some(why);
    }
    slot.ended.store(true, Relaxed);
    sub.permit = None;
    sub.out
}
