//! Board events: their names and what a NOTIFY payload says. The event's `data` line is
//! written (and logged, and NOTIFYed, by reference when too large) by the write functions
//! of `sql/0004_write_functions.sql`, in the writing statement itself.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more ("payload string too long").
pub const NOTIFY_PAYLOAD_LIMIT: usize = 8000;

/// The fixed set of change event names; SSE `event:` fields only ever come from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventKind {
    #[serde(rename = "board.updated")]
    BoardUpdated,
    #[serde(rename = "board.deleted")]
    BoardDeleted,
    #[serde(rename = "note.created")]
    NoteCreated,
    #[serde(rename = "note.updated")]
    NoteUpdated,
    #[serde(rename = "note.deleted")]
    NoteDeleted,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::BoardUpdated,
        EventKind::BoardDeleted,
        EventKind::NoteCreated,
        EventKind::NoteUpdated,
        EventKind::NoteDeleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BoardUpdated => "board.updated",
            EventKind::BoardDeleted => "board.deleted",
            EventKind::NoteCreated => "note.created",
            EventKind::NoteUpdated => "note.updated",
            EventKind::NoteDeleted => "note.deleted",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// The name of an event a board's stream sends (the SSE `event:` field). Every frame's name
/// is one of these, so [`EventName::ALL`] is every event the server can send; docs/API.md
/// lists the same names (`routes::openapi`'s docs/API.md test compares them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventName {
    Snapshot,
    Presence,
    PresenceJoined,
    PresenceLeft,
    PresenceCount,
    Signal,
    Heartbeat,
    /// A board change, named by its kind.
    Change(EventKind),
}

impl EventName {
    /// Every name, the changes last, for the test that compares them with docs/API.md. A
    /// new variant goes here too (that test stops compiling until it is handled).
    #[cfg(test)]
    pub const ALL: [EventName; 12] = [
        EventName::Snapshot,
        EventName::Presence,
        EventName::PresenceJoined,
        EventName::PresenceLeft,
        EventName::PresenceCount,
        EventName::Signal,
        EventName::Heartbeat,
        EventName::Change(EventKind::BoardUpdated),
        EventName::Change(EventKind::BoardDeleted),
        EventName::Change(EventKind::NoteCreated),
        EventName::Change(EventKind::NoteUpdated),
        EventName::Change(EventKind::NoteDeleted),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventName::Snapshot => "snapshot",
            EventName::Presence => "presence",
            EventName::PresenceJoined => "presence.joined",
            EventName::PresenceLeft => "presence.left",
            EventName::PresenceCount => "presence.count",
            EventName::Signal => "signal",
            EventName::Heartbeat => "heartbeat",
            EventName::Change(kind) => kind.as_str(),
        }
    }
}

impl From<EventKind> for EventName {
    fn from(kind: EventKind) -> EventName {
        EventName::Change(kind)
    }
}

/// What a listener reads from a NOTIFY payload before deciding what to do with it.
#[derive(Debug, PartialEq)]
pub enum Notification {
    /// A change event; when `reference` is set the payload is only a pointer into the log.
    Change {
        seq: i64,
        kind: EventKind,
        reference: bool,
        /// When the write happened, for the delivery latency.
        at: Option<DateTime<Utc>>,
    },
    /// Viewers joined or left: one versioned batch of a board's presence changes.
    Presence(super::presence::Batch),
}

#[derive(Deserialize)]
struct RawNotification {
    #[serde(rename = "type")]
    kind: String,
    seq: Option<i64>,
    #[serde(default, rename = "ref")]
    reference: bool,
    at: Option<DateTime<Utc>>,
}

impl Notification {
    pub fn parse(payload: &str) -> Option<Notification> {
        let raw: RawNotification = serde_json::from_str(payload).ok()?;
        match raw.kind.as_str() {
            super::presence::PRESENCE_TYPE => {
                super::presence::Batch::parse(payload).map(Notification::Presence)
            }
            name => Some(Notification::Change {
                seq: raw.seq?,
                kind: EventKind::parse(name)?,
                reference: raw.reference,
                at: raw.at,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_notices_carry_their_batch() {
        let viewer = crate::domain::viewer::Viewer {
            id: uuid::Uuid::new_v4(),
            name: "Ana".into(),
            since: Utc::now(),
        };
        let before = crate::domain::presence::Tally::default();
        let (payloads, _) =
            crate::domain::presence::payloads(1, before, 100, std::slice::from_ref(&viewer), &[]);
        let Some(Notification::Presence(batch)) = Notification::parse(&payloads[0]) else {
            panic!("a presence notice");
        };
        assert_eq!(batch.joined, [viewer]);
        assert_eq!(batch.version, 1);
        assert_eq!(Notification::parse("{\"type\":\"note.created\"}"), None);
        assert_eq!(Notification::parse("not json"), None);
    }
}
