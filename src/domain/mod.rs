//! Domain types: ids, parsed values and the events a write announces. No I/O here.

pub(crate) mod board;
pub(crate) mod event;
pub mod ids;
pub(crate) mod note;
pub(crate) mod notification;
pub(crate) mod presence;
pub(crate) mod signal;
pub(crate) mod viewer;

/// A value that breaks one of the contract's limits; becomes 422 `validation_failed`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

/// Rejects U+0000, which PostgreSQL `text` cannot store.
pub(crate) fn reject_nul(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.contains('\0') {
        return Err(ValidationError(format!(
            "`{field}` must not contain U+0000"
        )));
    }
    Ok(())
}
