//! Board events: the JSON line a write logs and announces, and the NOTIFY payload.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    board::Board,
    ids::{BoardId, NoteId},
    note::Note,
};

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

/// What a write changed; it becomes one event.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    BoardUpdated(&'a Board),
    BoardDeleted(BoardId),
    NoteCreated(&'a Note),
    NoteUpdated(&'a Note),
    NoteDeleted(NoteId),
}

/// The `board` or `note` member of an event: the full new state, or just the id.
#[derive(Serialize)]
#[serde(untagged)]
enum Subject<'a> {
    Board(&'a Board),
    Note(&'a Note),
    Id { id: String },
}

#[derive(Serialize)]
struct Wire<'a> {
    seq: i64,
    #[serde(rename = "type")]
    kind: EventKind,
    board_id: BoardId,
    at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    board: Option<Subject<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<Subject<'a>>,
}

impl Change<'_> {
    pub fn kind(&self) -> EventKind {
        match self {
            Change::BoardUpdated(_) => EventKind::BoardUpdated,
            Change::BoardDeleted(_) => EventKind::BoardDeleted,
            Change::NoteCreated(_) => EventKind::NoteCreated,
            Change::NoteUpdated(_) => EventKind::NoteUpdated,
            Change::NoteDeleted(_) => EventKind::NoteDeleted,
        }
    }

    /// The event's `data` line: `{"seq","type","board_id","at", board|note}`.
    pub fn encode(&self, seq: i64, board_id: BoardId, at: DateTime<Utc>) -> String {
        let (board, note) = match *self {
            Change::BoardUpdated(b) => (Some(Subject::Board(b)), None),
            Change::BoardDeleted(id) => (Some(Subject::Id { id: id.to_string() }), None),
            Change::NoteCreated(n) | Change::NoteUpdated(n) => (None, Some(Subject::Note(n))),
            Change::NoteDeleted(id) => (None, Some(Subject::Id { id: id.to_string() })),
        };
        let wire = Wire {
            seq,
            kind: self.kind(),
            board_id,
            at,
            board,
            note,
        };
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
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

/// The NOTIFY payload for an event: the event itself when it fits under PostgreSQL's
/// limit, else a reference (board id and seq) that listeners resolve from the log.
pub fn notify_payload(data: &str, seq: i64, kind: EventKind, board_id: BoardId) -> String {
    if data.len() < NOTIFY_PAYLOAD_LIMIT {
        data.to_string()
    } else {
        format!(
            "{{\"seq\":{seq},\"type\":\"{}\",\"board_id\":\"{board_id}\",\"ref\":true}}",
            kind.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(text: &str) -> Note {
        let now = Utc::now();
        Note {
            id: NoteId::new(),
            board_id: BoardId::new(),
            text: text.into(),
            x: 1.0,
            y: 2.0,
            color: "#ffffff".into(),
            width: 100.0,
            height: 100.0,
            version: 1,
            author: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn events_are_one_json_line_with_the_contract_fields() {
        let n = note("two\nlines \"quoted\"");
        let line = Change::NoteCreated(&n).encode(7, n.board_id, Utc::now());
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["type"], "note.created");
        assert_eq!(v["note"]["text"], "two\nlines \"quoted\"");
        assert!(line.starts_with("{\"seq\":7,"));
    }

    #[test]
    fn deletions_carry_only_the_id() {
        let id = NoteId::new();
        let line = Change::NoteDeleted(id).encode(3, BoardId::new(), Utc::now());
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["note"], serde_json::json!({ "id": id.to_string() }));
        let b = BoardId::new();
        let line = Change::BoardDeleted(b).encode(4, b, Utc::now());
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["board"], serde_json::json!({ "id": b.to_string() }));
    }

    #[test]
    fn large_events_are_announced_by_reference() {
        let n = note(&"x".repeat(10_000));
        let line = Change::NoteUpdated(&n).encode(9, n.board_id, Utc::now());
        let payload = notify_payload(&line, 9, EventKind::NoteUpdated, n.board_id);
        assert!(payload.len() < NOTIFY_PAYLOAD_LIMIT);
        let expected = Notification::Change {
            seq: 9,
            kind: EventKind::NoteUpdated,
            reference: true,
            at: None,
        };
        assert_eq!(Notification::parse(&payload), Some(expected));
        let at = Utc::now();
        let small = Change::NoteUpdated(&note("hi")).encode(10, n.board_id, at);
        assert_eq!(
            notify_payload(&small, 10, EventKind::NoteUpdated, n.board_id),
            small
        );
        let expected = Notification::Change {
            seq: 10,
            kind: EventKind::NoteUpdated,
            reference: false,
            at: Some(at),
        };
        assert_eq!(Notification::parse(&small), Some(expected));
    }

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
