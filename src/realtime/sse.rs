//! SSE frames, encoded once into `Bytes`.
//!
//! Encoding goes through `russe`, the encoder actix-web-lab's `sse` uses since 0.29.1: it
//! splits data on LF, CR and CRLF and prefixes every line, so user text can never add a
//! field or end an event early. Ids and event names only ever come from server values (a
//! number, an `EventName`), which russe would otherwise refuse.

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use chrono::{SecondsFormat, Utc};

use crate::domain::event::EventName;

fn encode(event: russe::Event) -> Bytes {
    match event.into_bytestring() {
        Ok(text) => text.into_bytes(),
        Err(e) => {
            // Unreachable with server-made ids and names; a comment keeps the stream valid.
            log::error!("SSE frame refused by the encoder: {e}");
            Bytes::from_static(b": dropped frame\n\n")
        }
    }
}

fn message(id: Option<ByteString>, name: EventName, data: impl Into<ByteString>) -> Bytes {
    encode(russe::Event::Message(russe::Message {
        data: data.into(),
        event: Some(ByteString::from_static(name.as_str())),
        id,
        retry: None,
    }))
}

/// A change or snapshot: `id: <seq>`, `event: <name>`, `data: <json>`.
pub fn sequenced(seq: i64, name: EventName, data: impl Into<ByteString>) -> Bytes {
    message(Some(ByteString::from(seq.to_string())), name, data)
}

/// A change or snapshot on a many-board stream, whose id is the stream's cursor (seqs and
/// commas, made by the server).
pub fn with_cursor(cursor: &str, name: EventName, data: impl Into<ByteString>) -> Bytes {
    message(Some(ByteString::from(cursor)), name, data)
}

/// A frame made by [`sequenced`] (encoded once for every stream of its board) with its
/// `id:` line swapped for a many-board stream's cursor; the rest is shared, not re-encoded.
pub fn recursored(frame: &Bytes, cursor: &str) -> Bytes {
    let rest = match frame.strip_prefix(b"id: ") {
        Some(after) => match after.iter().position(|b| *b == b'\n') {
            Some(end) => frame.slice(4 + end + 1..),
            None => frame.clone(),
        },
        None => frame.clone(),
    };
    let mut out = bytes::BytesMut::with_capacity(rest.len() + cursor.len() + 5);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(cursor.as_bytes());
    out.extend_from_slice(b"\n");
    out.extend_from_slice(&rest);
    out.freeze()
}

/// An event with no id (presence, heartbeat): never replayed.
pub fn unsequenced(name: EventName, data: impl Into<ByteString>) -> Bytes {
    message(None, name, data)
}

pub fn heartbeat() -> Bytes {
    let at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    unsequenced(EventName::Heartbeat, format!("{{\"at\":\"{at}\"}}"))
}

/// `retry: <ms>`: how long a client should wait before reconnecting.
pub fn retry(after: Duration) -> Bytes {
    encode(russe::Event::Retry(after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::EventKind;

    #[test]
    fn user_text_cannot_add_fields() {
        let hostile = "{\"text\":\"hi\revent: evil\r\ndata: x\n\nid: 999\"}";
        let frame = sequenced(5, EventKind::NoteCreated.into(), hostile.to_string());
        let text = std::str::from_utf8(&frame).expect("utf8");
        assert!(text.starts_with("id: 5\nevent: note.created\n"), "{text}");
        assert!(text.ends_with("\n\n"));
        // Exactly one blank line (the end of the event) and no line starting a field.
        assert_eq!(text.matches("\n\n").count(), 1, "{text}");
        for line in text.lines().skip(2) {
            assert!(
                line.starts_with("data: ") || line == "data:" || line.is_empty(),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_cursor_replaces_only_the_id_line() {
        let frame = sequenced(42, EventKind::NoteCreated.into(), "{\"seq\":42}");
        let moved = recursored(&frame, "42,,7");
        assert_eq!(
            &moved[..],
            b"id: 42,,7\nevent: note.created\ndata: {\"seq\":42}\n\n"
        );
        assert_eq!(
            moved,
            with_cursor("42,,7", EventKind::NoteCreated.into(), "{\"seq\":42}")
        );
    }

    #[test]
    fn heartbeats_have_no_id() {
        let text = String::from_utf8(heartbeat().to_vec()).expect("utf8");
        assert!(
            text.starts_with("event: heartbeat\ndata: {\"at\":\""),
            "{text}"
        );
        assert!(!text.contains("id:"));
    }

    #[test]
    fn retry_is_in_milliseconds() {
        assert_eq!(&retry(Duration::from_millis(2500))[..], b"retry: 2500\n\n");
    }
}
