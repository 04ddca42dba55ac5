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
