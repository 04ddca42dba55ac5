//! Board events: their kinds and SSE names (what a NOTIFY payload says is `notification`).
//! The event's `data` line is
//! written (and logged, and NOTIFYed, by reference when too large) by the write functions
//! of `sql/0004_write_functions.sql`, in the writing statement itself.

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
