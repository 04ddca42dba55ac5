//! Board statements and row mapping.

use chrono::Utc;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{DbError, events, notes};
use crate::domain::{
    board::{Board, BoardCursor, BoardTitle},
    event::Change,
    ids::BoardId,
    note::Note,
};

const COLUMNS: &str = "id, title, seq, created_at, updated_at";

/// By column name, so the column list may change order.
fn board_from(row: &Row) -> Result<Board, DbError> {
    Ok(Board {
        id: BoardId(row.try_get("id")?),
        title: row.try_get("title")?,
        seq: row.try_get("seq")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub async fn insert(client: &impl GenericClient, title: &BoardTitle) -> Result<Board, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO boards (id, title) VALUES ($1, $2) RETURNING {COLUMNS}"
        ))
        .await?;
    let row = client
        .query_one(&stmt, &[&BoardId::new().uuid(), &title.as_str()])
        .await?;
    board_from(&row)
}

/// One page, newest first, and the cursor of the next page if there is one. `among`
/// limits the page to those boards (`None`: every board).
pub async fn list(
    client: &impl GenericClient,
    limit: i64,
    after: Option<BoardCursor>,
    among: Option<&[BoardId]>,
) -> Result<(Vec<Board>, Option<BoardCursor>), DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM boards
             WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2))
               AND ($4::uuid[] IS NULL OR id = ANY($4))
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .await?;
    let among: Option<Vec<uuid::Uuid>> = among.map(|ids| ids.iter().map(|id| id.uuid()).collect());
    let rows = client
        .query(
            &stmt,
            &[
                &after.map(|c| c.created_at),
                &after.map(|c| c.id.uuid()),
                &(limit + 1),
                &among,
            ],
        )
        .await?;
    let mut boards = rows
        .iter()
        .map(board_from)
        .collect::<Result<Vec<Board>, _>>()?;
    let next = if boards.len() as i64 > limit {
        boards.truncate(limit as usize);
        boards.last().map(BoardCursor::after)
    } else {
        None
    };
    Ok((boards, next))
}

pub async fn find(client: &impl GenericClient, id: BoardId) -> Result<Option<Board>, DbError> {
    let stmt = client
        .prepare_cached(&format!("SELECT {COLUMNS} FROM boards WHERE id = $1"))
        .await?;
    client
        .query_opt(&stmt, &[&id.uuid()])
        .await?
        .as_ref()
        .map(board_from)
        .transpose()
}

/// The board and its notes as of one moment (one REPEATABLE READ snapshot), so `seq`
/// matches the notes exactly.
pub async fn snapshot(
    client: &mut deadpool_postgres::Object,
    id: BoardId,
) -> Result<Option<(Board, Vec<Note>)>, DbError> {
    let tx = super::consistent_read(client).await?;
    let Some(board) = find(&tx, id).await? else {
        return Ok(None);
    };
    let notes = notes::list(&tx, id).await?;
    tx.commit().await?;
    Ok(Some((board, notes)))
}

/// Renames a board and announces `board.updated`. `None` when there is no such board.
pub async fn update_title(
    client: &mut deadpool_postgres::Object,
    id: BoardId,
    title: &BoardTitle,
    retention: i64,
) -> Result<Option<Board>, DbError> {
    let tx = client.transaction().await?;
    let stmt = tx
        .prepare_cached(&format!(
            "UPDATE boards SET title = $2, seq = seq + 1, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&id.uuid(), &title.as_str()]).await? else {
        return Ok(None);
    };
    let board = board_from(&row)?;
    events::publish(&tx, id, board.seq, Change::BoardUpdated(&board), retention).await?;
    tx.commit().await?;
    Ok(Some(board))
}

/// Deletes a board with its notes and events, and announces `board.deleted` (not logged:
/// the log goes with the board). `false` when there is no such board.
pub async fn delete(client: &mut deadpool_postgres::Object, id: BoardId) -> Result<bool, DbError> {
    let tx = client.transaction().await?;
    let Some(seq) = events::next_seq(&tx, id).await? else {
        return Ok(false);
    };
    let stmt = tx
        .prepare_cached("DELETE FROM boards WHERE id = $1")
        .await?;
    tx.execute(&stmt, &[&id.uuid()]).await?;
    let change = Change::BoardDeleted(id);
    let data = change.encode(seq, id, Utc::now());
    events::notify(&tx, id, seq, change.kind(), &data).await?;
    tx.commit().await?;
    Ok(true)
}
