//! Viewers: one open stream each, named by its token or `?name=`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The name of a viewer who gave none.
pub const ANONYMOUS: &str = "anonymous";

/// The longest display name kept (a note's `author`, a viewer's name, a token's `name`);
/// a longer one is refused rather than cut silently.
pub const NAME_MAX_CHARS: usize = 100;

/// Why a display name is refused; the caller says which field it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error("must be at most {NAME_MAX_CHARS} characters (got {0})")]
    TooLong(usize),
}

/// The one rule for display names, wherever they come from (`X-Display-Name`, `?name=`,
/// a token's `name`): trimmed, at most [`NAME_MAX_CHARS`] characters, no control
/// characters. Empty (or only spaces) means no name: `None`.
pub fn display_name(raw: &str) -> Result<Option<String>, NameError> {
    let name = raw.trim();
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    let chars = name.chars().count();
    if chars > NAME_MAX_CHARS {
        return Err(NameError::TooLong(chars));
    }
    Ok((!name.is_empty()).then(|| name.to_string()))
}

/// Someone viewing a board: one open stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Viewer {
    pub id: Uuid,
    /// The display name; `anonymous` when none was given.
    pub name: String,
    /// When the stream opened.
    pub since: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(display_name("  Ana "), Ok(Some("Ana".into())));
        assert_eq!(display_name("   "), Ok(None));
        assert_eq!(display_name("a\u{7}b"), Err(NameError::ControlCharacter));
        assert_eq!(display_name(&"é".repeat(100)), Ok(Some("é".repeat(100))));
        assert_eq!(display_name(&"é".repeat(101)), Err(NameError::TooLong(101)));
        assert_eq!(
            NameError::TooLong(101).to_string(),
            "must be at most 100 characters (got 101)"
        );
    }
}
