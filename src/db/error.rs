//! `DbError`: what failed in the database, why (the driver's error, with its SQLSTATE), and
//! where in boardcast it was raised. All of it is for the log; `ApiError` decides what a
//! client sees, and that is never any of this.

use std::{error::Error as StdError, fmt, panic::Location};

use tokio_postgres::error::SqlState;

/// Whether the failure is the database being away (clients get 503 and retry) or a
/// statement failing for another reason (a bug: logged, answered 500).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbErrorKind {
    /// The database cannot be reached or refuses work for now.
    Unavailable,
    /// A statement failed for another reason.
    Query,
}

/// A database failure, with its cause and the place in boardcast that met it.
///
/// `?` on a `tokio_postgres::Error` or a `deadpool_postgres::PoolError` records the line of
/// the `?` (`#[track_caller]` on the `From` impls), so a log line reads like
/// `database error: db error: ERROR: … [SQLSTATE 23514] at src/db/notes.rs:57:61`.
#[derive(Debug)]
pub struct DbError {
    kind: DbErrorKind,
    /// What failed, in words: the driver's message followed by its source chain.
    message: String,
    /// The SQLSTATE the server sent, if it sent one.
    code: Option<SqlState>,
    source: Option<Source>,
    location: &'static Location<'static>,
}

#[derive(Debug)]
enum Source {
    Postgres(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
}

impl DbError {
    /// The database is unavailable for a reason boardcast itself found.
    #[track_caller]
    pub fn unavailable(message: impl Into<String>) -> DbError {
        DbError::new(DbErrorKind::Unavailable, message.into(), None, None)
    }

    /// The database answered something boardcast cannot use.
    #[track_caller]
    pub fn query(message: impl Into<String>) -> DbError {
        DbError::new(DbErrorKind::Query, message.into(), None, None)
    }

    #[track_caller]
    fn new(
        kind: DbErrorKind,
        message: String,
        code: Option<SqlState>,
        source: Option<Source>,
    ) -> DbError {
        DbError {
            kind,
            message,
            code,
            source,
            location: Location::caller(),
        }
    }

    pub fn kind(&self) -> DbErrorKind {
        self.kind
    }

    pub fn is_unavailable(&self) -> bool {
        self.kind == DbErrorKind::Unavailable
    }

    /// The SQLSTATE the server sent, such as `23514` for a check violation.
    pub fn code(&self) -> Option<&SqlState> {
        self.code.as_ref()
    }

    /// Where in boardcast the error was raised.
    pub fn location(&self) -> &'static Location<'static> {
        self.location
    }

    /// What failed, without the SQLSTATE and location that `Display` adds.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context` said first, such as which migration failed.
    pub fn context(mut self, context: impl fmt::Display) -> DbError {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DbErrorKind::Unavailable => write!(f, "database unavailable: {}", self.message)?,
            DbErrorKind::Query => write!(f, "database error: {}", self.message)?,
        }
        if let Some(code) = &self.code {
            write!(f, " [SQLSTATE {}]", code.code())?;
        }
        write!(f, " at {}", self.location)
    }
}

impl StdError for DbError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.source {
            Some(Source::Postgres(e)) => Some(e),
            Some(Source::Pool(e)) => Some(e),
            None => None,
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    #[track_caller]
    fn from(e: tokio_postgres::Error) -> Self {
        let kind = kind_of(&e);
        let code = e.code().cloned();
        DbError::new(kind, describe(&e), code, Some(Source::Postgres(e)))
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    #[track_caller]
    fn from(e: deadpool_postgres::PoolError) -> Self {
        // Every pool failure (no connection could be made, none came free in time, the
        // database refused a new session) is the database being unavailable, whatever
        // SQLSTATE it came with.
        let code = match &e {
            deadpool_postgres::PoolError::Backend(backend) => backend.code().cloned(),
            _ => None,
        };
        DbError::new(
            DbErrorKind::Unavailable,
            e.to_string(),
            code,
            Some(Source::Pool(e)),
        )
    }
}

fn kind_of(e: &tokio_postgres::Error) -> DbErrorKind {
    if e.is_closed() {
        return DbErrorKind::Unavailable;
    }
    match e.code().map(SqlState::code) {
        // Class 08: connection exception; 57P0x: the server is shutting down or
        // starting; class 53: too many connections, out of memory or disk.
        Some(code)
            if code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") =>
        {
            DbErrorKind::Unavailable
        }
        Some(_) => DbErrorKind::Query,
        None => {
            let io = StdError::source(e).is_some_and(|s| s.is::<std::io::Error>());
            if io || e.to_string().contains("timeout") {
                DbErrorKind::Unavailable
            } else {
                DbErrorKind::Query
            }
        }
    }
}

/// tokio-postgres' own message names only the kind of failure ("error performing TLS
/// handshake", "error connecting to server", "db error"); what happened is in its source
/// chain (an invalid certificate, a refused connection, the server's error), so add it.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = StdError::source(e);
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    // The server's DETAIL and HINT come on lines of their own: keep the record one line.
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_line_names_the_sqlstate_and_where_it_was_raised() {
        let mut error = DbError::query("db error: ERROR: new row violates check constraint");
        let line = line!() - 1;
        error.code = Some(SqlState::CHECK_VIOLATION);
        let text = error.to_string();
        assert!(
            text.starts_with("database error: db error: ERROR: new row"),
            "{text}"
        );
        assert!(text.contains("[SQLSTATE 23514]"), "{text}");
        assert!(
            text.ends_with(&format!(" at src/db/error.rs:{line}:25")),
            "{text}"
        );
        assert_eq!(error.location().line(), line);
    }

    #[test]
    fn context_comes_first_and_the_kind_stays() {
        let error = DbError::unavailable("connection refused").context("migration 2 (presence)");
        assert!(error.is_unavailable());
        assert_eq!(
            error.message(),
            "migration 2 (presence): connection refused"
        );
        assert!(
            error
                .to_string()
                .starts_with("database unavailable: migration 2")
        );
        assert!(error.code().is_none());
    }
}
