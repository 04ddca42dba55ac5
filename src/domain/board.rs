//! Boards: the parsed title and the board as clients see it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ValidationError, ids::BoardId, reject_nul};

pub const TITLE_MAX_CHARS: usize = 200;

/// A board title: trimmed, 1–200 characters, no U+0000.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardTitle(String);

impl BoardTitle {
    pub fn parse(raw: String) -> Result<BoardTitle, ValidationError> {
        reject_nul("title", &raw)?;
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > TITLE_MAX_CHARS {
            return Err(ValidationError(format!(
                "`title` must be 1 to {TITLE_MAX_CHARS} characters (got {chars})"
            )));
        }
        Ok(BoardTitle(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The body of `POST /api/boards` and `PATCH /api/boards/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BoardInput {
    /// Trimmed, then 1–200 characters; no U+0000 (else 422).
    #[schema(min_length = 1, max_length = 200, example = "Retro")]
    pub title: String,
}

/// A board as clients see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Board {
    pub id: BoardId,
    pub title: String,
    /// The id of the board's latest event; 0 for a new board.
    pub seq: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(
            BoardTitle::parse("  Plan  ".into()).expect("ok").as_str(),
            "Plan"
        );
        assert!(BoardTitle::parse("   ".into()).is_err());
        assert!(BoardTitle::parse("x".repeat(201)).is_err());
        assert!(BoardTitle::parse("é".repeat(200)).is_ok());
        assert!(BoardTitle::parse("a\0b".into()).is_err());
    }
}

/// Where the next page of `GET /api/boards` starts: after this board in newest-first order.
/// Sent to clients as an opaque string `<created_at in µs>_<id>`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoardCursor {
    pub created_at: DateTime<Utc>,
    pub id: BoardId,
}

impl BoardCursor {
    pub fn after(board: &Board) -> BoardCursor {
        BoardCursor {
            created_at: board.created_at,
            id: board.id,
        }
    }

    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at.timestamp_micros(), self.id)
    }

    pub fn parse(raw: &str) -> Result<BoardCursor, ValidationError> {
        let bad = || {
            ValidationError(
                "`cursor` is not one this server gave out (use `next` from a previous page)".into(),
            )
        };
        let (micros, id) = raw.split_once('_').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        let id = BoardId::parse(id).map_err(|_| bad())?;
        Ok(BoardCursor { created_at, id })
    }
}

#[cfg(test)]
mod cursor_tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = BoardCursor {
            created_at: DateTime::from_timestamp_micros(1_763_805_600_123_456).expect("time"),
            id: BoardId::new(),
        };
        assert_eq!(BoardCursor::parse(&c.encode()), Ok(c));
        assert!(BoardCursor::parse("junk").is_err());
        assert!(BoardCursor::parse("12_notauuid").is_err());
    }
}
