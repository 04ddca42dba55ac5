//! Board statements and row mapping.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{DbError, notes};
use crate::domain::{
    board::{Board, BoardCursor, BoardTitle},
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

/// Renames a board and announces `board.updated`, in one round trip (see
/// `sql/0004_write_functions.sql`). `None` when there is no such board.
pub async fn update_title(
    client: &impl GenericClient,
    id: BoardId,
    title: &BoardTitle,
    retention: i64,
) -> Result<Option<Board>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM boardcast_board_rename($1, $2, $3, $4, $5)"
        ))
        .await?;
    let row = client
        .query_opt(
            &stmt,
            &[
                &id.uuid(),
                &title.as_str(),
                &id.channel(),
                &retention,
                &notes::NOTIFY_LIMIT,
            ],
        )
        .await?;
    row.as_ref().map(board_from).transpose()
}

/// Deletes a board with its notes and events, and announces `board.deleted` (not logged:
/// the log goes with the board), in one round trip. `false` when there is no such board.
pub async fn delete(client: &impl GenericClient, id: BoardId) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("SELECT boardcast_board_delete($1, $2, $3)")
        .await?;
    let row = client
        .query_one(&stmt, &[&id.uuid(), &id.channel(), &notes::NOTIFY_LIMIT])
        .await?;
    Ok(row.get(0))
}
