//! Note statements. Each write is one call of a SQL function (a create:
//! `boardcast_note_add`, `sql/0010_lean_note_writes.sql`; an update or delete:
//! `sql/0004_write_functions.sql`):
//! it takes the board's next seq (locking the board row), changes the note and publishes
//! its event, in one statement and so one transaction and one round trip.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use tokio_postgres::Row;

use super::DbError;
use crate::domain::{
    event::NOTIFY_PAYLOAD_LIMIT,
    ids::{BoardId, NoteId},
    note::{NewNote, Note, NotePatch, Precondition},
};

const COLUMNS: &str =
    "id, board_id, text, x, y, color, width, height, version, author, created_at, updated_at";

/// By column name: x, y, width and height are all `f64`, so a reordered column list read
/// by position would swap coordinates without an error.
fn note_from(row: &Row) -> Result<Note, DbError> {
    Ok(Note {
        id: NoteId(row.try_get("id")?),
        board_id: BoardId(row.try_get("board_id")?),
        text: row.try_get("text")?,
        x: row.try_get("x")?,
        y: row.try_get("y")?,
        color: row.try_get("color")?,
        width: row.try_get("width")?,
        height: row.try_get("height")?,
        version: row.try_get("version")?,
        author: row.try_get("author")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// PostgreSQL's NOTIFY payload limit, as the write functions take it.
pub(crate) const NOTIFY_LIMIT: i32 = NOTIFY_PAYLOAD_LIMIT as i32;

/// How a note write ended, short of a database failure.
#[derive(Debug)]
pub enum Outcome<T> {
    Done(T),
    NoBoard,
    NoNote,
    /// `If-Match` did not admit the note's version; the note as it is now.
    Stale(Note),
}

/// The board's notes, oldest first.
pub async fn list(client: &impl GenericClient, board_id: BoardId) -> Result<Vec<Note>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM notes WHERE board_id = $1 ORDER BY created_at, id"
        ))
        .await?;
    client
        .query(&stmt, &[&board_id.uuid()])
        .await?
        .iter()
        .map(note_from)
        .collect()
}

/// How a write function of `sql/0004_write_functions.sql` ended, with the note it returned.
fn settle(row: &Row) -> Result<Outcome<Note>, DbError> {
    let outcome: &str = row.try_get("outcome")?;
    let note = || note_from(row);
    Ok(match outcome {
        "done" => Outcome::Done(note()?),
        "stale" => Outcome::Stale(note()?),
        "no_board" => Outcome::NoBoard,
        "no_note" => Outcome::NoNote,
        other => {
            return Err(DbError::query(format!(
                "a write function answered the unknown outcome {other:?}"
            )));
        }
    })
}

/// The columns a note write function's answer is read by: its outcome, then the note.
const OUTCOME_COLUMNS: &str = "o.outcome, (o.note).*";

/// The members of `Note` before its two times, in `Note`'s order and with its types, so
/// that serde writes them as it writes the start of the API's answer (a test below holds
/// the two together).
#[derive(Serialize)]
struct NoteHead<'a> {
    id: NoteId,
    board_id: BoardId,
    text: &'a str,
    x: f64,
    y: f64,
    color: &'a str,
    width: f64,
    height: f64,
    version: i64,
    author: Option<&'a str>,
}

impl NoteHead<'_> {
    /// The JSON of the note up to `author`, without the closing brace: the note create
    /// function appends `,"created_at":…,"updated_at":…}`, the values only PostgreSQL
    /// knows. Written here rather than in SQL because serde writes it exactly as the API
    /// answers and PostgreSQL's text escaping and float formatting cost more per write than
    /// anything else it did for a create (docs/PERFORMANCE.md, issue 13).
    fn json_without_times(&self) -> Result<String, DbError> {
        let mut json = serde_json::to_string(self)
            .map_err(|e| DbError::query(format!("a note's JSON: {e}")))?;
        json.pop();
        Ok(json)
    }
}

/// Creates a note and announces `note.created`: one statement, one round trip (the function
/// takes the board's next seq under its row lock, logs the event and NOTIFYs, all in the
/// statement's transaction). `NoBoard` when there is no such board.
///
/// The function answers only the note's creation time: every other column is what was
/// sent (`version` starts at 1), and a one-value answer costs PostgreSQL much less than the
/// note's 12 columns (`sql/0010_lean_note_writes.sql`).
pub async fn insert(
    client: &impl GenericClient,
    board_id: BoardId,
    new: &NewNote,
    author: Option<&str>,
    retention: i64,
) -> Result<Outcome<Note>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT boardcast_note_add($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 AS created_at",
        )
        .await?;
    let id = NoteId::new();
    let head = NoteHead {
        id,
        board_id,
        text: &new.text,
        x: new.x,
        y: new.y,
        color: &new.color,
        width: new.width,
        height: new.height,
        version: NEW_VERSION,
        author,
    }
    .json_without_times()?;
    let row = client
        .query_one(
            &stmt,
            &[
                &board_id.uuid(),
                &id.uuid(),
                &new.text,
                &new.x,
                &new.y,
                &new.color,
                &new.width,
                &new.height,
                &author,
                &head,
                &board_id.channel(),
                &retention,
                &NOTIFY_LIMIT,
            ],
        )
        .await?;
    let Some(created_at) = row.try_get::<_, Option<DateTime<Utc>>>("created_at")? else {
        return Ok(Outcome::NoBoard);
    };
    Ok(Outcome::Done(Note {
        id,
        board_id,
        text: new.text.clone(),
        x: new.x,
        y: new.y,
        color: new.color.clone(),
        width: new.width,
        height: new.height,
        version: NEW_VERSION,
        author: author.map(str::to_string),
        created_at,
        updated_at: created_at,
    }))
}

/// A new note's `version` (the column's default).
const NEW_VERSION: i64 = 1;

/// Changes a note and announces `note.updated`, in one round trip. Refused (no board, no
/// note, `If-Match` stale) before a seq is taken: nothing changes and no event is logged.
pub async fn update(
    client: &impl GenericClient,
    board_id: BoardId,
    note_id: NoteId,
    patch: &NotePatch,
    precondition: Option<&Precondition>,
    retention: i64,
) -> Result<Outcome<Note>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {OUTCOME_COLUMNS} FROM boardcast_note_update(
                 $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) o"
        ))
        .await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &board_id.uuid(),
                &note_id.uuid(),
                &patch.text,
                &patch.x,
                &patch.y,
                &patch.color,
                &patch.width,
                &patch.height,
                &precondition.and_then(Precondition::versions),
                &board_id.channel(),
                &retention,
                &NOTIFY_LIMIT,
            ],
        )
        .await?;
    settle(&row)
}

/// Deletes a note and announces `note.deleted`, in one round trip, refused as `update` is.
pub async fn delete(
    client: &impl GenericClient,
    board_id: BoardId,
    note_id: NoteId,
    precondition: Option<&Precondition>,
    retention: i64,
) -> Result<Outcome<()>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {OUTCOME_COLUMNS} FROM boardcast_note_delete($1, $2, $3, $4, $5, $6) o"
        ))
        .await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &board_id.uuid(),
                &note_id.uuid(),
                &precondition.and_then(Precondition::versions),
                &board_id.channel(),
                &retention,
                &NOTIFY_LIMIT,
            ],
        )
        .await?;
    Ok(match settle(&row)? {
        Outcome::Done(_) => Outcome::Done(()),
        Outcome::Stale(note) => Outcome::Stale(note),
        Outcome::NoBoard => Outcome::NoBoard,
        Outcome::NoNote => Outcome::NoNote,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    /// The create function appends the times to `NoteHead`'s JSON: together they must be the
    /// note exactly as serde writes the answer, whatever `Note` gains or reorders.
    #[test]
    fn the_head_and_the_times_are_the_note_as_answered() {
        let created_at = Utc
            .timestamp_opt(1_764_000_000, 123_456_000)
            .single()
            .expect("a valid time");
        for author in [None, Some("An\u{e4} \"Q\"")] {
            let note = Note {
                id: NoteId::new(),
                board_id: BoardId::new(),
                text: "q\"uote\\ \n\u{1} \u{e9} </script>".into(),
                x: -0.5,
                y: 5e-5,
                color: "#abcdef".into(),
                width: 20.000_000_000_000_004,
                height: 2000.0,
                version: 1,
                author: author.map(str::to_string),
                created_at,
                updated_at: created_at,
            };
            let head = NoteHead {
                id: note.id,
                board_id: note.board_id,
                text: &note.text,
                x: note.x,
                y: note.y,
                color: &note.color,
                width: note.width,
                height: note.height,
                version: note.version,
                author: note.author.as_deref(),
            }
            .json_without_times()
            .expect("the head");
            let time = serde_json::to_string(&created_at).expect("the time");
            assert_eq!(
                format!("{head},\"created_at\":{time},\"updated_at\":{time}}}"),
                serde_json::to_string(&note).expect("the note")
            );
        }
    }
}
