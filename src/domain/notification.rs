//! What a NOTIFY payload on a board's channel says, parsed before anyone acts on it: a
//! change event (whole, or a reference into the log) or a batch of presence changes.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::event::EventKind;
use super::presence::{Batch, PRESENCE_TYPE};

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
    Presence(Batch),
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
            PRESENCE_TYPE => Batch::parse(payload).map(Notification::Presence),
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
