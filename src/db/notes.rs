//! Note statements. Every write takes the board's next seq first (locking the board row),
//! changes the note, and publishes its event in the same transaction.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{DbError, events};
use crate::domain::{
    event::Change,
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

pub async fn insert(
    client: &mut deadpool_postgres::Object,
    board_id: BoardId,
    new: &NewNote,
    author: Option<&str>,
    retention: i64,
) -> Result<Outcome<Note>, DbError> {
    let tx = client.transaction().await?;
    let Some(seq) = events::next_seq(&tx, board_id).await? else {
        return Ok(Outcome::NoBoard);
    };
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO notes (id, board_id, text, x, y, color, width, height, author)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
        ))
        .await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &NoteId::new().uuid(),
                &board_id.uuid(),
                &new.text,
                &new.x,
                &new.y,
                &new.color,
                &new.width,
                &new.height,
                &author,
            ],
        )
        .await?;
    let note = note_from(&row)?;
    events::publish(&tx, board_id, seq, Change::NoteCreated(&note), retention).await?;
    tx.commit().await?;
    Ok(Outcome::Done(note))
}

/// Checks `If-Match` against the note, under the board lock the caller already holds.
async fn check(
    tx: &impl GenericClient,
    board_id: BoardId,
    note_id: NoteId,
    precondition: Option<&Precondition>,
) -> Result<Option<Outcome<()>>, DbError> {
    let Some(precondition) = precondition else {
        return Ok(None);
    };
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM notes WHERE id = $1 AND board_id = $2"
        ))
        .await?;
    Ok(
        match tx
            .query_opt(&stmt, &[&note_id.uuid(), &board_id.uuid()])
            .await?
        {
            None => Some(Outcome::NoNote),
            Some(row) => {
                let note = note_from(&row)?;
                (!precondition.admits(note.version)).then_some(Outcome::Stale(note))
            }
        },
    )
}

pub async fn update(
    client: &mut deadpool_postgres::Object,
    board_id: BoardId,
    note_id: NoteId,
    patch: &NotePatch,
    precondition: Option<&Precondition>,
    retention: i64,
) -> Result<Outcome<Note>, DbError> {
    let tx = client.transaction().await?;
    let Some(seq) = events::next_seq(&tx, board_id).await? else {
        return Ok(Outcome::NoBoard);
    };
    match check(&tx, board_id, note_id, precondition).await? {
        Some(Outcome::Stale(note)) => return Ok(Outcome::Stale(note)),
        Some(_) => return Ok(Outcome::NoNote),
        None => {}
    }
    let stmt = tx
        .prepare_cached(&format!(
            "UPDATE notes SET
                 text = coalesce($3::text, text),
                 x = coalesce($4::float8, x),
                 y = coalesce($5::float8, y),
                 color = coalesce($6::text, color),
                 width = coalesce($7::float8, width),
                 height = coalesce($8::float8, height),
                 version = version + 1,
                 updated_at = now()
             WHERE id = $1 AND board_id = $2 RETURNING {COLUMNS}"
        ))
        .await?;
    let row = tx
        .query_opt(
            &stmt,
            &[
                &note_id.uuid(),
                &board_id.uuid(),
                &patch.text,
                &patch.x,
                &patch.y,
                &patch.color,
                &patch.width,
                &patch.height,
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Outcome::NoNote);
    };
    let note = note_from(&row)?;
    events::publish(&tx, board_id, seq, Change::NoteUpdated(&note), retention).await?;
    tx.commit().await?;
    Ok(Outcome::Done(note))
}

pub async fn delete(
    client: &mut deadpool_postgres::Object,
    board_id: BoardId,
    note_id: NoteId,
    precondition: Option<&Precondition>,
    retention: i64,
) -> Result<Outcome<()>, DbError> {
    let tx = client.transaction().await?;
    let Some(seq) = events::next_seq(&tx, board_id).await? else {
        return Ok(Outcome::NoBoard);
    };
    if let Some(outcome) = check(&tx, board_id, note_id, precondition).await? {
        return Ok(outcome);
    }
    let stmt = tx
        .prepare_cached("DELETE FROM notes WHERE id = $1 AND board_id = $2")
        .await?;
    if tx
        .execute(&stmt, &[&note_id.uuid(), &board_id.uuid()])
        .await?
        == 0
    {
        return Ok(Outcome::NoNote);
    }
    events::publish(&tx, board_id, seq, Change::NoteDeleted(note_id), retention).await?;
    tx.commit().await?;
    Ok(Outcome::Done(()))
}
