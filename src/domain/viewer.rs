//! Viewers: one open stream each, named by its token or `?name=`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The name of a viewer who gave none.
pub const ANONYMOUS: &str = "anonymous";

/// Someone viewing a board: one open stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Viewer {
    pub id: Uuid,
    /// The display name; `anonymous` when none was given.
    pub name: String,
    /// When the stream opened.
    pub since: DateTime<Utc>,
}
