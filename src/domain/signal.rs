//! Signals: live motion a viewer broadcasts to a board without storing it (cursors, a note
//! being dragged, typing). Parsed here; gathered and carried by `realtime::signals`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{ValidationError, ids::BoardId};

/// The longest `kind` (the contract's 32 characters).
pub const KIND_MAX_CHARS: usize = 32;
/// The largest `data`, as compact JSON (the contract's 1 KiB).
pub const DATA_MAX_BYTES: usize = 1024;

/// The body of `POST /api/boards/{id}/signals`, as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalInput {
    /// The `you.id` of a stream this caller has open on the board.
    pub viewer: Uuid,
    /// What it is: `cursor`, `note.moving`, `note.typing`, `idle`, or any other.
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9._-]+$")]
    pub kind: String,
    /// Any JSON object of at most 1 KiB; `note_id` (when a string) keeps signals about
    /// different notes from coalescing.
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
}

/// A signal that keeps the contract's limits: `kind` is 1–32 characters of `[a-z0-9._-]`
/// and `data`, re-encoded as compact JSON, is at most 1 KiB.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalBody {
    pub viewer: Uuid,
    pub kind: String,
    /// `data` as compact JSON, ready to be spliced into the event.
    pub data: String,
    /// `data.note_id` when it is a string: signals about different notes never coalesce.
    pub note_id: Option<String>,
}

impl SignalBody {
    pub fn parse(input: SignalInput) -> Result<SignalBody, ValidationError> {
        let chars = input.kind.chars().count();
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
        if chars == 0 || chars > KIND_MAX_CHARS || !input.kind.chars().all(allowed) {
            return Err(ValidationError(format!(
                "`kind` must be 1–{KIND_MAX_CHARS} characters of a-z, 0-9, '.', '_' and '-' (got {:?})",
                input.kind
            )));
        }
        let note_id = match input.data.get("note_id") {
            Some(Value::String(id)) => Some(id.clone()),
            _ => None,
        };
        // A map of JSON values always serializes.
        let data = serde_json::to_string(&input.data).unwrap_or_default();
        if data.len() > DATA_MAX_BYTES {
            return Err(ValidationError(format!(
                "`data` must be at most {DATA_MAX_BYTES} bytes of JSON (got {})",
                data.len()
            )));
        }
        Ok(SignalBody {
            viewer: input.viewer,
            kind: input.kind,
            data,
            note_id,
        })
    }

    /// What coalesces: one viewer's latest signal of one kind (and one note) wins.
    pub fn key(&self) -> (Uuid, String, Option<String>) {
        (self.viewer, self.kind.clone(), self.note_id.clone())
    }

    /// The `data` line of the `signal` event on `board`:
    /// `{"kind","board_id","viewer":{"id","name"},"data","at"}`.
    pub fn encode(&self, board: BoardId, name: &str, at: DateTime<Utc>) -> String {
        #[derive(Serialize)]
        struct Sender<'a> {
            id: Uuid,
            name: &'a str,
        }
        #[derive(Serialize)]
        struct Wire<'a> {
            kind: &'a str,
            board_id: BoardId,
            viewer: Sender<'a>,
            data: &'a serde_json::value::RawValue,
            at: String,
        }
        // `data` was serialized from a JSON map in `parse`, so it is valid JSON.
        let Ok(data) = serde_json::value::RawValue::from_string(self.data.clone()) else {
            return String::new();
        };
        let wire = Wire {
            kind: &self.kind,
            board_id: board,
            viewer: Sender {
                id: self.viewer,
                name,
            },
            data: &data,
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: &str, data: Value) -> SignalInput {
        serde_json::from_value(serde_json::json!({
            "viewer": Uuid::new_v4(), "kind": kind, "data": data
        }))
        .expect("well-formed")
    }

    #[test]
    fn kinds_are_short_lowercase_words() {
        for good in ["cursor", "note.moving", "a-b_c.9", &"k".repeat(32)] {
            assert!(
                SignalBody::parse(input(good, serde_json::json!({}))).is_ok(),
                "{good}"
            );
        }
        for bad in ["", "Cursor", "a b", "ü", "x/y", &"k".repeat(33)] {
            assert!(
                SignalBody::parse(input(bad, serde_json::json!({}))).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn data_is_at_most_one_kibibyte() {
        // {"s":"…"} is 8 bytes around the string.
        let fits = serde_json::json!({ "s": "x".repeat(DATA_MAX_BYTES - 8) });
        assert!(SignalBody::parse(input("cursor", fits)).is_ok());
        let over = serde_json::json!({ "s": "x".repeat(DATA_MAX_BYTES - 7) });
        assert!(SignalBody::parse(input("cursor", over)).is_err());
    }

    #[test]
    fn note_ids_split_the_coalescing_key() {
        let a = SignalBody::parse(input("note.moving", serde_json::json!({"note_id": "a"})))
            .expect("valid");
        assert_eq!(a.note_id.as_deref(), Some("a"));
        let b = SignalBody::parse(input("cursor", serde_json::json!({"x": 1})));
        assert_eq!(b.expect("valid").note_id, None);
    }

    #[test]
    fn the_event_names_its_sender_and_is_one_line() {
        let body = SignalBody::parse(input("cursor", serde_json::json!({"x": 1.5, "y": -2})))
            .expect("valid");
        let line = body.encode(BoardId::new(), "Ana \"A\"\nB", Utc::now());
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["kind"], "cursor");
        assert_eq!(v["viewer"]["id"], body.viewer.to_string());
        assert_eq!(v["viewer"]["name"], "Ana \"A\"\nB");
        assert_eq!(v["data"], serde_json::json!({"x": 1.5, "y": -2}));
        assert!(v["at"].as_str().is_some_and(|at| at.ends_with('Z')));
    }
}
