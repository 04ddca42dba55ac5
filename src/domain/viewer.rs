//! Viewers: one open stream each, named by its token or `?name=`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The name of a viewer who gave none.
pub const ANONYMOUS: &str = "anonymous";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Viewer {
    pub id: Uuid,
    pub name: String,
    pub since: DateTime<Utc>,
}

/// The NOTIFY payload (and SSE `data`) of `presence.joined` / `presence.left`.
pub fn presence_payload(joined: bool, viewer: &Viewer) -> String {
    let kind = if joined {
        "presence.joined"
    } else {
        "presence.left"
    };
    serde_json::json!({ "type": kind, "viewer": viewer }).to_string()
}
