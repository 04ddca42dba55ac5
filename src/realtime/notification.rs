//! The one place a NOTIFY payload becomes a [`Delivery`], in both listener modes: parse
//! it, read a reference's event from the log, and encode the SSE frame once.
//!
//! In shared mode the hub decodes each notification once for every stream of the board;
//! in per-stream mode each stream decodes its own. Either way a stream handles the same
//! `Delivery`.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{roster::Listing, sse};
use crate::db::{Database, events};
use crate::domain::{event::EventKind, ids::BoardId, notification::Notification, presence::Batch};

/// What a stream is handed: frames encoded once, shared by every stream of the board.
#[derive(Clone, Debug)]
pub enum Delivery {
    Change {
        seq: i64,
        kind: EventKind,
        frame: Bytes,
        /// When the write happened, for the delivery latency.
        at: Option<DateTime<Utc>>,
    },
    /// Presence frames of one board gathered over a short window (shared mode), in
    /// order: every `presence.joined` / `presence.left` / `presence.count` frame joined
    /// into one `Bytes`, and `ends` gives, for each presence version the frames belong to,
    /// the offset where its frames end. A stream skips what its opening already reflected.
    Presence {
        ends: Arc<[(i64, usize)]>,
        frames: Bytes,
    },
    /// The board's viewers as of a version: a crowd shrank back to the list limit (or the
    /// roster was reloaded), so every stream gets a fresh `presence` event.
    List(Arc<Listing>),
    /// The listener was lost and is back: notifications may be missing, so catch up from
    /// the log; `presence` is the board's presence as it is now.
    Resync { presence: Arc<Listing> },
    /// The hub stops putting this stream's events in its outbox (see `hub`): `last_sent`
    /// is the last seq it put there, and what comes next goes through the stream's task.
    Handback { last_sent: i64 },
}

/// What one notification becomes.
pub(super) enum Decoded {
    Change(Delivery),
    /// A presence announcement: what it means depends on the board's state, so each
    /// listener (the hub's roster, or a per-stream task) turns it into frames itself.
    Presence(Batch),
    /// A reference whose event the log no longer holds (pruned, or the board deleted).
    Missing,
    /// A batch of signal frames, delivered as sent.
    Signals {
        frames: Bytes,
        count: u64,
    },
    /// A reference that could not be read: the database did not answer.
    Unavailable,
    /// Not a payload boardcast sends; logged and ignored.
    Unreadable,
}

/// Parses a NOTIFY payload, reads a reference's event from the log, and encodes the frame.
pub(super) async fn decode(db: &Database, board: BoardId, payload: &str) -> Decoded {
    if let Some((frames, count)) = super::signals::frames_of(payload) {
        return Decoded::Signals { frames, count };
    }
    match Notification::parse(payload) {
        Some(Notification::Change {
            seq,
            kind,
            reference,
            at,
        }) => {
            let data = if reference {
                let logged = match db.client().await {
                    Ok(client) => events::data_of(&client, board, seq).await,
                    Err(e) => Err(e),
                };
                match logged {
                    Ok(Some(data)) => data,
                    Ok(None) => return Decoded::Missing,
                    Err(e) => {
                        log::warn!("cannot read event {seq} of board {board} from the log: {e}");
                        return Decoded::Unavailable;
                    }
                }
            } else {
                payload.to_string()
            };
            Decoded::Change(Delivery::Change {
                seq,
                kind,
                frame: sse::sequenced(seq, kind.into(), data),
                at,
            })
        }
        Some(Notification::Presence(batch)) => Decoded::Presence(batch),
        None => {
            log::warn!("ignoring an unreadable notification on board {board}");
            Decoded::Unreadable
        }
    }
}
