//! The ordered list of `sql/` files and the runner.
//!
//! Hand-written rather than refinery: it takes an advisory lock so two `migrate` processes
//! (two dynos' release phases, a developer and CI) serialize instead of racing, and
//! `include_str!` makes cargo rebuild when a file changes. Files are append-only once shipped,
//! and each must suit the code already running (Heroku's release phase runs before the new
//! dynos start): expand, deploy, contract.

use std::time::Duration;

use tokio_postgres::{Client, error::SqlState};

use super::DbError;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../sql/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "presence",
        sql: include_str!("../../sql/0002_presence.sql"),
    },
    Migration {
        version: 3,
        name: "presence_versions",
        sql: include_str!("../../sql/0003_presence_versions.sql"),
    },
    Migration {
        version: 4,
        name: "write_functions",
        sql: include_str!("../../sql/0004_write_functions.sql"),
    },
    Migration {
        version: 5,
        name: "viewer_sub",
        sql: include_str!("../../sql/0005_viewer_sub.sql"),
    },
    Migration {
        version: 6,
        name: "inline_json_helpers",
        sql: include_str!("../../sql/0006_inline_json_helpers.sql"),
    },
    Migration {
        version: 7,
        name: "viewer_sessions",
        sql: include_str!("../../sql/0007_viewer_sessions.sql"),
    },
    Migration {
        version: 8,
        name: "cheaper_note_create",
        sql: include_str!("../../sql/0008_cheaper_note_create.sql"),
    },
    Migration {
        version: 9,
        name: "flat_note_create",
        sql: include_str!("../../sql/0009_flat_note_create.sql"),
    },
    Migration {
        version: 10,
        name: "lean_note_writes",
        sql: include_str!("../../sql/0010_lean_note_writes.sql"),
    },
];

/// "boardcas" in ASCII: the advisory lock every migrating process takes.
const LOCK_KEY: i64 = 0x626f_6172_6463_6173;

pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Applies every migration the database lacks, each in its own transaction, while holding
/// the advisory lock. Returns the versions applied (none on a second run).
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, DbError> {
    migrate_to(client, latest_version()).await
}

/// How a migration waits for the table locks it needs while the running release works.
///
/// A migration that alters a table waits for every transaction using it, and holds the
/// locks it already took meanwhile: one session idle in a transaction that read `notes`
/// kept migration 10 waiting, with `boards` locked, and so stopped every write of the
/// running release until it ended. With a `lock_timeout` the migration gives up instead,
/// rolls back (releasing what it held), pauses and tries again: writes wait at most
/// `lock_timeout` at a time. The defaults wait 2 s per attempt over 10 attempts, about
/// 30 s in all, inside a Heroku release phase; then `migrate` fails with the reason and
/// the release is not deployed.
#[derive(Clone, Copy, Debug)]
pub struct LockPolicy {
    /// PostgreSQL's `lock_timeout` for each attempt.
    pub timeout: Duration,
    /// Attempts per migration before giving up.
    pub attempts: u32,
    /// The pause between attempts, in which the waiting writes go through.
    pub pause: Duration,
}

impl Default for LockPolicy {
    fn default() -> Self {
        LockPolicy {
            timeout: Duration::from_secs(2),
            attempts: 10,
            pause: Duration::from_secs(1),
        }
    }
}

/// [`migrate`], but only as far as version `upto`: how tests make a database as an older
/// release left it, to check that the next migrations upgrade it.
pub async fn migrate_to(client: &mut Client, upto: i32) -> Result<Vec<i32>, DbError> {
    migrate_with(client, upto, LockPolicy::default()).await
}

/// [`migrate_to`] with a lock policy of one's own (tests use short ones).
pub async fn migrate_with(
    client: &mut Client,
    upto: i32,
    locks: LockPolicy,
) -> Result<Vec<i32>, DbError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply_missing(client, upto, locks).await;
    // Released with the session anyway; unlocking explicitly keeps a long-lived caller clean.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_missing(
    client: &mut Client,
    upto: i32,
    locks: LockPolicy,
) -> Result<Vec<i32>, DbError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let current = current_version(client).await?;
    let mut applied = Vec::new();
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > current && m.version <= upto)
    {
        let mut attempt = 1;
        loop {
            let tx = client.transaction().await?;
            tx.batch_execute(&format!(
                "SET LOCAL lock_timeout = {}",
                locks.timeout.as_millis()
            ))
            .await?;
            match tx.batch_execute(m.sql).await {
                Ok(()) => {
                    tx.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        &[&m.version, &m.name],
                    )
                    .await?;
                    tx.commit().await?;
                    break;
                }
                Err(e)
                    if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                        && attempt < locks.attempts =>
                {
                    drop(tx);
                    log::warn!(
                        "migration {} ({}): a table it alters is in use ({e}); attempt {attempt} of {} rolled back, trying again in {:?}",
                        m.version,
                        m.name,
                        locks.attempts,
                        locks.pause
                    );
                    attempt += 1;
                    tokio::time::sleep(locks.pause).await;
                }
                Err(e) => {
                    return Err(DbError::from(e).context(format!(
                        "migration {} ({}) failed after {attempt} attempt(s)",
                        m.version, m.name
                    )));
                }
            }
        }
        log::info!("applied migration {} ({})", m.version, m.name);
        applied.push(m.version);
    }
    Ok(applied)
}

/// The highest migration applied, 0 for an empty database.
pub async fn current_version(client: &Client) -> Result<i32, DbError> {
    let row = client
        .query_one(
            "SELECT to_regclass('schema_migrations') IS NOT NULL AS present",
            &[],
        )
        .await?;
    if !row.try_get::<_, bool>("present")? {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) AS version FROM schema_migrations",
            &[],
        )
        .await?;
    Ok(row.try_get("version")?)
}
