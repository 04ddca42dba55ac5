//! Path parameters shared by several operations, documented once.

use utoipa::IntoParams;
use uuid::Uuid;

/// `{board_id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BoardPath {
    /// The board's id (a UUID; anything else is 400 `invalid_id`).
    pub board_id: Uuid,
}

/// `{board_id}` and `{note_id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NotePath {
    /// The board's id (a UUID; anything else is 400 `invalid_id`).
    pub board_id: Uuid,
    /// The note's id (a UUID; anything else is 400 `invalid_id`).
    pub note_id: Uuid,
}
