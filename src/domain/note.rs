//! Sticky notes: what a client may send, the limits it must keep, and the note it gets back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use super::{
    ValidationError,
    ids::{BoardId, NoteId},
    reject_nul,
};

pub const TEXT_MAX_CHARS: usize = 10_000;
pub const COORD_LIMIT: f64 = 1_000_000.0;
pub const SIZE_MIN: f64 = 20.0;
pub const SIZE_MAX: f64 = 2_000.0;
pub const DEFAULT_COLOR: &str = "#fde68a";
pub const DEFAULT_WIDTH: f64 = 200.0;
pub const DEFAULT_HEIGHT: f64 = 160.0;

/// A sticky note as clients see it; its answers carry `ETag: "<version>"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Note {
    pub id: NoteId,
    pub board_id: BoardId,
    pub text: String,
    /// Board coordinates of the top-left corner.
    pub x: f64,
    pub y: f64,
    /// `#rrggbb`, lower case.
    #[schema(pattern = "^#[0-9a-f]{6}$", example = "#fde68a")]
    pub color: String,
    pub width: f64,
    pub height: f64,
    /// 1 for a new note, one more on every update; what `If-Match` names.
    #[schema(minimum = 1)]
    pub version: i64,
    /// The writer's display name (the token's `name`, else its `sub`; with auth off the
    /// `X-Display-Name` header), or null.
    pub author: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Note {
    /// The `ETag` of a note answer: its version, quoted.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// The body of `POST /api/boards/{id}/notes`, as sent. Values outside the limits are 422.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteInput {
    /// 0–10,000 characters; no U+0000.
    #[schema(max_length = 10000)]
    pub text: String,
    #[schema(minimum = -1000000, maximum = 1000000)]
    pub x: f64,
    #[schema(minimum = -1000000, maximum = 1000000)]
    pub y: f64,
    /// `#rrggbb`; default `#fde68a`.
    #[serde(default, deserialize_with = "present")]
    #[schema(pattern = "^#[0-9A-Fa-f]{6}$", nullable = false)]
    pub color: Option<String>,
    /// Default 200.
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = 20, maximum = 2000, nullable = false)]
    pub width: Option<f64>,
    /// Default 160.
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = 20, maximum = 2000, nullable = false)]
    pub height: Option<f64>,
}

/// The body of `PATCH …/notes/{note_id}`: any subset of the fields. `null` is refused
/// rather than read as "unchanged", so a client bug cannot pass silently.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct NotePatchInput {
    #[serde(default, deserialize_with = "present")]
    #[schema(max_length = 10000, nullable = false)]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = -1000000, maximum = 1000000, nullable = false)]
    pub x: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = -1000000, maximum = 1000000, nullable = false)]
    pub y: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    #[schema(pattern = "^#[0-9A-Fa-f]{6}$", nullable = false)]
    pub color: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = 20, maximum = 2000, nullable = false)]
    pub width: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = 20, maximum = 2000, nullable = false)]
    pub height: Option<f64>,
}

/// Deserializes a field that may be absent (then `None` via `default`) but not `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A note ready to insert: every value within the contract's limits.
#[derive(Clone, Debug, PartialEq)]
pub struct NewNote {
    pub text: String,
    pub x: f64,
    pub y: f64,
    pub color: String,
    pub width: f64,
    pub height: f64,
}

/// A validated partial update.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NotePatch {
    pub text: Option<String>,
    pub x: Option<f64>,
    pub y: Option<f64>,
    pub color: Option<String>,
    pub width: Option<f64>,
    pub height: Option<f64>,
}

impl NewNote {
    pub fn parse(input: NoteInput) -> Result<NewNote, ValidationError> {
        Ok(NewNote {
            text: text(input.text)?,
            x: coordinate("x", input.x)?,
            y: coordinate("y", input.y)?,
            color: match input.color {
                Some(c) => color(c)?,
                None => DEFAULT_COLOR.to_string(),
            },
            width: size("width", input.width.unwrap_or(DEFAULT_WIDTH))?,
            height: size("height", input.height.unwrap_or(DEFAULT_HEIGHT))?,
        })
    }
}

impl NotePatch {
    pub fn parse(input: NotePatchInput) -> Result<NotePatch, ValidationError> {
        let patch = NotePatch {
            text: input.text.map(text).transpose()?,
            x: input.x.map(|v| coordinate("x", v)).transpose()?,
            y: input.y.map(|v| coordinate("y", v)).transpose()?,
            color: input.color.map(color).transpose()?,
            width: input.width.map(|v| size("width", v)).transpose()?,
            height: input.height.map(|v| size("height", v)).transpose()?,
        };
        if patch == NotePatch::default() {
            return Err(ValidationError(
                "the body names no field to change (text, x, y, color, width, height)".into(),
            ));
        }
        Ok(patch)
    }
}

fn text(raw: String) -> Result<String, ValidationError> {
    reject_nul("text", &raw)?;
    let chars = raw.chars().count();
    if chars > TEXT_MAX_CHARS {
        return Err(ValidationError(format!(
            "`text` must be at most {TEXT_MAX_CHARS} characters (got {chars})"
        )));
    }
    Ok(raw)
}

fn coordinate(field: &str, v: f64) -> Result<f64, ValidationError> {
    if v.is_finite() && v.abs() <= COORD_LIMIT {
        Ok(v)
    } else {
        Err(ValidationError(format!(
            "`{field}` must be a finite number within ±{COORD_LIMIT}"
        )))
    }
}

fn size(field: &str, v: f64) -> Result<f64, ValidationError> {
    if v.is_finite() && (SIZE_MIN..=SIZE_MAX).contains(&v) {
        Ok(v)
    } else {
        Err(ValidationError(format!(
            "`{field}` must be between {SIZE_MIN} and {SIZE_MAX}"
        )))
    }
}

/// `#rrggbb`, stored in lower case.
fn color(raw: String) -> Result<String, ValidationError> {
    let ok =
        raw.len() == 7 && raw.starts_with('#') && raw[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        let shown: String = raw.chars().take(20).collect();
        return Err(ValidationError(format!(
            "`color` must look like #rrggbb (got {shown:?})"
        )));
    }
    Ok(raw.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> Result<NoteInput, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn defaults_fill_optional_fields() {
        let n =
            NewNote::parse(input(r#"{"text":"hi","x":1,"y":2}"#).expect("json")).expect("valid");
        assert_eq!(n.color, DEFAULT_COLOR);
        assert_eq!((n.width, n.height), (DEFAULT_WIDTH, DEFAULT_HEIGHT));
    }

    #[test]
    fn limits_are_enforced() {
        for body in [
            r#"{"text":"a","x":1000001,"y":0}"#,
            r#"{"text":"a","x":0,"y":-1000001}"#,
            r#"{"text":"a","x":0,"y":0,"width":19}"#,
            r#"{"text":"a","x":0,"y":0,"height":2001}"#,
            r##"{"text":"a","x":0,"y":0,"color":"red"}"##,
            r##"{"text":"a","x":0,"y":0,"color":"#12345g"}"##,
            r#"{"text":"a\u0000b","x":0,"y":0}"#,
        ] {
            assert!(
                NewNote::parse(input(body).expect("json")).is_err(),
                "{body}"
            );
        }
        let long = format!(r#"{{"text":"{}","x":0,"y":0}}"#, "é".repeat(10_001));
        assert!(NewNote::parse(input(&long).expect("json")).is_err());
        let max = format!(r#"{{"text":"{}","x":0,"y":0}}"#, "é".repeat(10_000));
        assert!(NewNote::parse(input(&max).expect("json")).is_ok());
    }

    #[test]
    fn shape_errors_name_the_field() {
        let e = input(r##"{"text":"a","x":0,"y":0,"colour":"#000000"}"##).expect_err("unknown");
        assert!(e.to_string().contains("colour"), "{e}");
        let e = input(r#"{"x":0,"y":0}"#).expect_err("missing");
        assert!(e.to_string().contains("text"), "{e}");
        let e = serde_json::from_str::<NotePatchInput>(r#"{"x":null}"#).expect_err("null");
        assert!(e.to_string().contains("null"), "{e}");
    }

    #[test]
    fn an_empty_patch_is_refused() {
        assert!(NotePatch::parse(NotePatchInput::default()).is_err());
    }

    #[test]
    fn colors_are_lower_cased() {
        let n =
            NewNote::parse(input(r##"{"text":"","x":0,"y":0,"color":"#ABCDEF"}"##).expect("json"))
                .expect("ok");
        assert_eq!(n.color, "#abcdef");
    }
}

/// An `If-Match` header, read as RFC 9110 §13.1.1 says: `*`, or a list of entity tags
/// compared with the strong comparison (a note's tag is `"<version>"`, compared as opaque
/// text: `"01"` and `"+1"` are not `"1"`, and a weak tag `W/"1"` never matches).
#[derive(Clone, Debug, PartialEq)]
pub enum Precondition {
    /// `If-Match: *`: the note must exist.
    Any,
    /// The strong entity tags listed (their text between the quotes). A value that is not
    /// a list of entity tags (`3`, `banana`) lists none, and so can never match.
    Tags(Vec<String>),
}

impl Precondition {
    pub fn parse(header: &str) -> Precondition {
        if header.trim() == "*" {
            return Precondition::Any;
        }
        Precondition::Tags(entity_tags(header).unwrap_or_default())
    }

    /// The versions this precondition admits, for the write functions: `None` when any
    /// version may be changed (`*`). A tag is a version only in its canonical decimal form
    /// (`"1"`, never `"01"` or `"+1"`), which is what makes the comparison exact text.
    pub fn versions(&self) -> Option<Vec<i64>> {
        match self {
            Precondition::Any => None,
            Precondition::Tags(tags) => Some(
                tags.iter()
                    .filter_map(|tag| tag.parse::<i64>().ok().filter(|v| v.to_string() == *tag))
                    .collect(),
            ),
        }
    }

    /// RFC 9110's comparison as text, for the tests: what [`Self::versions`] must agree
    /// with (the write functions compare versions in SQL).
    #[cfg(test)]
    pub fn admits(&self, version: i64) -> bool {
        match self {
            Precondition::Any => true,
            Precondition::Tags(tags) => {
                let current = version.to_string();
                tags.contains(&current)
            }
        }
    }
}

/// The strong tags of `#entity-tag` (`entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE`, list
/// items separated by commas with optional whitespace, empty items allowed); weak tags are
/// read and dropped, since the strong comparison never matches them. `None` when the value
/// is not such a list.
fn entity_tags(header: &str) -> Option<Vec<String>> {
    let mut tags = Vec::new();
    let mut rest = header.trim_matches([' ', '\t']);
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start_matches([' ', '\t']);
            continue;
        }
        let (weak, quoted) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let body = quoted.strip_prefix('"')?;
        let close = body.find('"')?;
        let tag = &body[..close];
        // etagc = %x21 / %x23-7E / obs-text: no space, no quote, no control.
        if !tag
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        {
            return None;
        }
        if !weak {
            tags.push(tag.to_string());
        }
        rest = body[close + 1..].trim_start_matches([' ', '\t']);
        if !rest.is_empty() && !rest.starts_with(',') {
            return None;
        }
    }
    Some(tags)
}

#[cfg(test)]
mod precondition_tests {
    use super::Precondition;

    #[test]
    fn if_match_forms() {
        assert!(Precondition::parse("\"3\"").admits(3));
        assert!(Precondition::parse(" \"3\" ").admits(3));
        assert!(Precondition::parse("\"2\", \"3\"").admits(3));
        assert!(Precondition::parse("\"2\",\"3\"").admits(3));
        assert!(Precondition::parse(", \"3\",,").admits(3));
        assert!(Precondition::parse("W/\"2\", \"3\"").admits(3));
        assert!(Precondition::parse("*").admits(99));
        assert!(Precondition::parse("\"12\"").admits(12));
    }

    #[test]
    fn the_versions_admitted_are_exactly_the_tags_that_match() {
        assert_eq!(Precondition::parse("*").versions(), None);
        assert_eq!(
            Precondition::parse("\"3\", \"03\", \"+4\", W/\"5\", \"x\", \"6\"").versions(),
            Some(vec![3, 6])
        );
        assert_eq!(Precondition::parse("3").versions(), Some(vec![]));
        for version in [0, 1, 9, 10, 123_456_789, i64::MAX] {
            let tag = format!("\"{version}\"");
            let parsed = Precondition::parse(&tag);
            assert_eq!(parsed.versions(), Some(vec![version]));
            assert!(parsed.admits(version));
        }
    }

    #[test]
    fn entity_tags_are_opaque_text_compared_strongly() {
        for (header, version) in [
            ("\"01\"", 1),
            ("\"+2\"", 2),
            ("\" 2\"", 2),
            ("\"2.0\"", 2),
            ("\"2\"", 3),
            ("W/\"3\"", 3),
            ("3", 3),
            ("banana", 3),
            ("\"3", 3),
            ("\"3\" \"4\"", 3),
            ("\"3\"x", 3),
            ("\"0x3\"", 3),
            ("", 3),
            ("**", 3),
        ] {
            assert!(
                !Precondition::parse(header).admits(version),
                "If-Match: {header} must not match version {version}"
            );
        }
    }
}
