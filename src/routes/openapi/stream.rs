//! The `data` of each event on a board's stream, as documented schemas.
//!
//! OpenAPI 3.2's `itemSchema` would say what each Server-Sent Event carries, but the
//! validators and renderers in use do not read 3.2 yet. In 3.1 the stream's `schema`
//! describes one event as parsed (`event`, `id`, `data`), one branch per event name, and
//! `data`'s JSON through `contentSchema`; the description links the same schemas. The streams build their JSON elsewhere (`domain::event`,
//! `realtime`); [`check`] reads a real event into these types with unknown fields denied,
//! so a test fails when the two part ways.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{board::Board, event::EventKind, ids::BoardId, note::Note, viewer::Viewer};

/// `snapshot`: the whole board and its notes as of `seq` (the event's `id`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotEvent {
    pub seq: i64,
    pub board: Board,
    pub notes: Vec<Note>,
}

/// `presence`: who is viewing the board, sent when the stream opens (and again to every
/// stream when a crowd shrinks back to a list). No `id`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceEvent {
    /// The board this presence is of (a many-board stream carries several).
    pub board_id: BoardId,
    /// This stream's own viewer: what its signals are sent as.
    pub you: Viewer,
    /// Oldest first, the new viewer included; at most `PRESENCE_LIST_LIMIT` (100).
    pub viewers: Vec<Viewer>,
    /// How many viewers there are in all.
    #[schema(minimum = 0)]
    pub count: u64,
}

/// `presence.joined` / `presence.left`: one viewer arrived or went, while the board has at
/// most `PRESENCE_LIST_LIMIT` viewers. No `id`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceChangeEvent {
    /// `presence.joined` or `presence.left`, as the event name.
    #[serde(rename = "type")]
    #[schema(pattern = "^presence\\.(joined|left)$")]
    pub kind: String,
    pub board_id: BoardId,
    pub viewer: Viewer,
    /// How many viewers there are after this change.
    #[schema(minimum = 0)]
    pub count: u64,
}

/// `presence.count`: above `PRESENCE_LIST_LIMIT` viewers (a crowd), the count instead of
/// per-viewer announcements, at most once a second while it changes. No `id`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceCountEvent {
    /// `presence.count`.
    #[serde(rename = "type")]
    #[schema(pattern = "^presence\\.count$")]
    pub kind: String,
    pub board_id: BoardId,
    #[schema(minimum = 0)]
    pub count: u64,
}

/// `heartbeat`: sent every `HEARTBEAT_INTERVAL` (15 s by default). No `id`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatEvent {
    pub at: DateTime<Utc>,
}

/// What a `*.deleted` event says of the thing it deleted.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deleted {
    pub id: Uuid,
}

/// A change: `board.updated`, `board.deleted`, `note.created`, `note.updated` or
/// `note.deleted`. Its SSE `id` is `seq`; the ids of one board's events grow by one.
/// `board` holds the board's new state (`board.updated`) or its id (`board.deleted`);
/// `note` the note's new state (`note.created`, `note.updated`) or its id (`note.deleted`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeEvent {
    pub seq: i64,
    /// The event name, repeated.
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub board_id: BoardId,
    /// When the change committed.
    pub at: DateTime<Utc>,
    #[serde(default)]
    #[schema(nullable = false)]
    pub board: Option<BoardOrId>,
    #[serde(default)]
    #[schema(nullable = false)]
    pub note: Option<NoteOrId>,
}

/// The board's new state, or just `{"id"}` when it was deleted.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BoardOrId {
    Board(Board),
    Deleted(Deleted),
}

/// The note's new state, or just `{"id"}` when it was deleted.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum NoteOrId {
    Note(Note),
    Deleted(Deleted),
}

/// Every event a board's stream sends: its name, what its SSE `id` is, and the schema of
/// its `data`. The stream's description and schema are built from this list.
pub const EVENTS: &[(&str, &str, &str)] = &[
    ("snapshot", "the board's `seq`", "SnapshotEvent"),
    ("presence", "none", "PresenceEvent"),
    ("presence.joined", "none", "PresenceChangeEvent"),
    ("presence.left", "none", "PresenceChangeEvent"),
    ("presence.count", "none", "PresenceCountEvent"),
    ("board.updated", "`seq`", "ChangeEvent"),
    ("board.deleted", "`seq`", "ChangeEvent"),
    ("note.created", "`seq`", "ChangeEvent"),
    ("note.updated", "`seq`", "ChangeEvent"),
    ("note.deleted", "`seq`", "ChangeEvent"),
    ("heartbeat", "none", "HeartbeatEvent"),
];

/// Reads one event's `data` into the schema documented for its name. Err says what does
/// not match, or that the event is not documented at all (and where to add it).
pub fn check(event: &str, data: &str) -> Result<(), String> {
    fn read<'a, T: Deserialize<'a>>(data: &'a str) -> Result<(), String> {
        serde_json::from_str::<T>(data)
            .map(drop)
            .map_err(|e| e.to_string())
    }
    let schema = EVENTS
        .iter()
        .find(|(name, _, _)| *name == event)
        .map(|(_, _, schema)| *schema)
        .ok_or_else(|| {
            format!(
                "event `{event}` is not in the OpenAPI document: add its data schema to \
                 src/routes/openapi/stream.rs (EVENTS and a ToSchema type), then run \
                 `cargo run -- openapi > docs/openapi.json`"
            )
        })?;
    let result = match schema {
        "SnapshotEvent" => read::<SnapshotEvent>(data),
        "PresenceEvent" => read::<PresenceEvent>(data),
        "PresenceChangeEvent" => read::<PresenceChangeEvent>(data),
        "PresenceCountEvent" => read::<PresenceCountEvent>(data),
        "ChangeEvent" => read::<ChangeEvent>(data).and_then(|()| check_change(event, data)),
        "HeartbeatEvent" => read::<HeartbeatEvent>(data),
        other => Err(format!("no reader for schema {other}")),
    };
    let result = result.and_then(|()| {
        // Where `data` repeats the event name, it must be this one.
        let value: serde_json::Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
        match value.get("type").and_then(|t| t.as_str()) {
            Some(kind) if kind != event => Err(format!("`type` is {kind}")),
            _ => Ok(()),
        }
    });
    result.map_err(|e| format!("`{event}` data does not match {schema}: {e}: {data}"))
}

/// The parts of a change event a struct cannot say: which member it has, and its form.
fn check_change(event: &str, data: &str) -> Result<(), String> {
    let change: ChangeEvent = serde_json::from_str(data).map_err(|e| e.to_string())?;
    let ok = matches!(
        (event, &change.board, &change.note),
        ("board.updated", Some(BoardOrId::Board(_)), None)
            | ("board.deleted", Some(BoardOrId::Deleted(_)), None)
            | (
                "note.created" | "note.updated",
                None,
                Some(NoteOrId::Note(_))
            )
            | ("note.deleted", None, Some(NoteOrId::Deleted(_)))
    );
    if !ok {
        return Err("the `board` and `note` members do not fit the event".into());
    }
    Ok(())
}

/// The path of the many-board stream, whose ids are cursors.
pub const MANY_BOARDS_PATH: &str = "/api/events";

/// The markdown of a stream's 200 answer: the frames, and a link to each event's schema.
/// `many`: the many-board stream, whose events carry the cursor as their id.
pub fn description(many: bool) -> String {
    let mut text = String::from(if many {
        "A `text/event-stream` that stays open. It begins with `retry: 2000`, then each \
         board's `snapshot` (or, given a cursor, every event after that board's slot) in \
         the order of `boards`, then each board's `presence`, then each change as it \
         commits, and a `heartbeat` every `HEARTBEAT_INTERVAL`. Every `data` names its \
         `board_id`; every event that has an SSE `id` carries the whole cursor (each \
         board's latest seq, comma-separated in the order of `boards`). After a \
         `board.deleted` the stream goes on for the other boards.\n\n\
         Each event's `data` is one line of JSON (the response schema says the same per \
         event name):\n\n\
         | event | SSE `id` | `data` |\n|---|---|---|\n"
    } else {
        "A `text/event-stream` that stays open. It begins with `retry: 2000`, then a \
         `snapshot` (or, given a last event id, every event after it), then one `presence`, \
         then each change as it commits, and a `heartbeat` every `HEARTBEAT_INTERVAL`. After \
         `board.deleted` the server ends the stream.\n\n\
         Each event's `data` is one line of JSON (the response schema says the same per \
         event name):\n\n\
         | event | SSE `id` | `data` |\n|---|---|---|\n"
    });
    for (name, id, schema) in EVENTS {
        let id = if many && *id != "none" {
            "the cursor"
        } else {
            id
        };
        text.push_str(&format!(
            "| `{name}` | {id} | [{schema}](#/components/schemas/{schema}) |\n"
        ));
    }
    text
}

/// One event as an SSE parser reads it, `data`'s JSON described per event name.
pub fn event_schema() -> serde_json::Value {
    let mut by_schema: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, _, schema) in EVENTS {
        match by_schema.iter_mut().find(|(s, _)| s == schema) {
            Some((_, names)) => names.push(name),
            None => by_schema.push((schema, vec![name])),
        }
    }
    let branches: Vec<serde_json::Value> = by_schema
        .into_iter()
        .map(|(schema, names)| {
            serde_json::json!({
                "type": "object",
                "properties": {
                    "event": { "type": "string", "enum": names },
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": { "$ref": format!("#/components/schemas/{schema}") },
                    },
                },
            })
        })
        .collect();
    serde_json::json!({
        "allOf": [
            {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": { "type": "string" },
                    "id": { "type": "string" },
                    "data": { "type": "string" },
                },
            },
            { "oneOf": branches },
        ],
        "description": "One event: its name, its id (the board's seq, where it has one) and its \
            data, one line of JSON whose schema depends on the name.",
    })
}
