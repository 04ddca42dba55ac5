//! Typed ids, parsed from path segments at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(Uuid::new_v4())
            }

            /// Parses the hyphenated UUID form; the error message is for clients.
            pub fn parse(raw: &str) -> Result<Self, String> {
                if raw.len() == 36
                    && let Ok(id) = Uuid::try_parse(raw)
                {
                    return Ok($name(id));
                }
                let shown: String = raw.chars().take(60).collect();
                Err(format!(
                    concat!(
                        "{:?} is not a ",
                        $what,
                        " id (a UUID such as 6f1c2a9e-3b1d-4c55-9a3e-0d2f4b7c8e91)"
                    ),
                    shown
                ))
            }

            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

id_type!(BoardId, "board");
id_type!(NoteId, "note");

impl BoardId {
    /// The NOTIFY channel of this board. Postgres folds unquoted identifiers to lower case
    /// but matches `pg_notify` channels exactly, so the id is always the lower-case
    /// hyphenated form and LISTEN quotes it.
    pub fn channel(self) -> String {
        format!("boards_{}", self.0.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hyphenated_uuids_only() {
        let id = BoardId::new();
        assert_eq!(BoardId::parse(&id.to_string()), Ok(id));
        assert!(BoardId::parse("nope").is_err());
        assert!(BoardId::parse(&id.0.simple().to_string()).is_err());
        assert!(BoardId::parse("").is_err());
    }

    #[test]
    fn channel_is_short_enough_for_postgres() {
        // NAMEDATALEN is 64: identifiers longer than 63 bytes are truncated or refused.
        assert!(BoardId::new().channel().len() <= 63);
    }
}
