//! The one place a NOTIFY payload becomes a [`Delivery`], in both listener modes: parse
//! it, read a reference's event from the log, and encode the SSE frame once.
//!
//! In shared mode the hub decodes each notification once for every stream of the board;
//! in per-stream mode each stream decodes its own. Either way a stream handles the same
//! `Delivery`.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sse;
use crate::db::{Database, events};
use crate::domain::{
    event::{EventKind, Notification},
    ids::BoardId,
};

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
    /// Presence changes of one board in order: `frames` is every `presence.joined` /
    /// `presence.left` frame joined into one `Bytes`, and `viewers` names each frame's
    /// viewer with the offset where its frame ends. Shared mode gathers them over a short
    /// window; per-stream mode hands each on alone.
    Presence {
        viewers: Arc<[(Uuid, usize)]>,
        frames: Bytes,
    },
    /// The listener was lost and is back: notifications may be missing, so catch up from
    /// the log; `presence` is the board's viewer list as it is now.
    Resync { presence: Bytes },
}

impl Delivery {
    /// One presence change on its own.
    pub fn presence(viewer: Uuid, frame: Bytes) -> Delivery {
        Delivery::Presence {
            viewers: [(viewer, frame.len())].into(),
            frames: frame,
        }
    }
}

/// What one notification becomes.
pub(super) enum Decoded {
    Change(Delivery),
    /// Kept apart from changes so that shared mode can gather a board's presence changes.
    Presence {
        viewer: Uuid,
        frame: Bytes,
    },
    /// A reference whose event the log no longer holds (pruned, or the board deleted).
    Missing,
    /// A reference that could not be read: the database did not answer.
    Unavailable,
    /// Not a payload boardcast sends; logged and ignored.
    Unreadable,
}

/// Parses a NOTIFY payload, reads a reference's event from the log, and encodes the frame.
pub(super) async fn decode(db: &Database, board: BoardId, payload: &str) -> Decoded {
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
                frame: sse::sequenced(seq, kind.as_str(), data),
                at,
            })
        }
        Some(Notification::Presence { joined, viewer }) => {
            let name = if joined {
                "presence.joined"
            } else {
                "presence.left"
            };
            Decoded::Presence {
                viewer,
                frame: sse::unsequenced(name, payload.to_string()),
            }
        }
        None => {
            log::warn!("ignoring an unreadable notification on board {board}");
            Decoded::Unreadable
        }
    }
}
