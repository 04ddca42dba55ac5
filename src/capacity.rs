//! How many event streams one process allows, and where that number comes from.
//!
//! In per-stream mode every open stream holds a PostgreSQL connection of its own, so the
//! cap follows from what the database lets this role open; in shared mode one connection
//! serves every stream and the cap is the contract's default. The start line, the warning
//! for a database too small for per-stream mode and `/metrics` all read one
//! [`StreamBudget`], so they cannot disagree.

use crate::config::{DEFAULT_SHARED_MAX_STREAMS, ListenerMode, Settings};
pub use crate::db::server::ConnectionLimits;

/// Connections kept free in per-stream mode for other instances, `migrate` and operators.
pub const CONNECTION_RESERVE: usize = 10;
/// Below this many streams a team cannot all keep a board open: per-stream mode warns.
pub const FEW_STREAMS: usize = 10;
/// Connections a suggested `MAX_STREAMS` leaves for the release phase and a `psql` session.
const OPERATOR_HEADROOM: usize = 2;

/// The connections this role can open in all, and a phrase saying which limit binds (with
/// its numbers). Conservative: the role and database limits are applied even to a
/// superuser, whom PostgreSQL would let past them.
fn usable_connections(limits: &ConnectionLimits) -> (usize, String) {
    let server = limits.max_connections.saturating_sub(limits.reserved);
    let mut best = (
        server,
        format!(
            "max_connections={} less {} reserved",
            limits.max_connections, limits.reserved
        ),
    );
    for (limit, what) in [
        (limits.role_limit, "the role's CONNECTION LIMIT"),
        (limits.database_limit, "the database's CONNECTION LIMIT"),
    ] {
        if let Some(n) = limit.filter(|n| *n < best.0) {
            best = (n, format!("{what} {n}"));
        }
    }
    best
}

/// Where a [`StreamBudget`]'s cap comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `MAX_STREAMS` was set.
    Configured,
    /// Shared mode with `MAX_STREAMS` unset: the contract's default.
    SharedDefault,
    /// Per-stream mode with `MAX_STREAMS` unset: what the connections leave.
    Connections,
}

impl Source {
    /// The `streams_max_from` label of `boardcast_listener_info`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Configured => "MAX_STREAMS",
            Source::SharedDefault => "shared_default",
            Source::Connections => "connections",
        }
    }
}

/// The listener mode, the cap on open streams, and why.
#[derive(Clone, Debug)]
pub struct StreamBudget {
    pub mode: ListenerMode,
    /// Whether `LISTENER` was set, or the mode is the default.
    pub mode_from_env: bool,
    /// The most streams this process accepts; past it, 503.
    pub max_streams: usize,
    pub source: Source,
    pool_size: usize,
    /// Per-stream mode only: what the database allows (`None` in shared mode).
    limits: Option<ConnectionLimits>,
}

impl StreamBudget {
    /// Decides the cap. `limits` is needed in per-stream mode (it is ignored in shared
    /// mode, where the number of connections does not grow with the streams).
    pub fn decide(settings: &Settings, limits: Option<ConnectionLimits>) -> StreamBudget {
        let limits = match settings.listener {
            ListenerMode::PerStream => limits,
            ListenerMode::Shared => None,
        };
        let (max_streams, source) = match (settings.max_streams, &limits) {
            (Some(n), _) => (n, Source::Configured),
            (None, None) => (DEFAULT_SHARED_MAX_STREAMS, Source::SharedDefault),
            // Never 0: one stream still lets an operator see the board work.
            (None, Some(l)) => (
                usable_connections(l)
                    .0
                    .saturating_sub(settings.pool_size + CONNECTION_RESERVE)
                    .max(1),
                Source::Connections,
            ),
        };
        StreamBudget {
            mode: settings.listener,
            mode_from_env: settings.listener_from_env,
            max_streams,
            source,
            pool_size: settings.pool_size,
            limits,
        }
    }

    /// The one start line: the mode and why, the cap and where it comes from.
    pub fn summary(&self) -> String {
        let mode = if self.mode_from_env {
            format!("LISTENER={}", self.mode.as_str())
        } else {
            "LISTENER unset: the default".to_string()
        };
        let why = match (&self.source, &self.limits) {
            (Source::Configured, _) => format!("MAX_STREAMS={}", self.max_streams),
            (Source::SharedDefault, _) => {
                "shared mode's default; one LISTEN connection serves them all".to_string()
            }
            (Source::Connections, Some(l)) => {
                let (usable, binds) = usable_connections(l);
                format!(
                    "one connection each: {binds} leaves {usable}, less DATABASE_POOL_SIZE={} \
                     and a reserve of {CONNECTION_RESERVE}",
                    self.pool_size
                )
            }
            (Source::Connections, None) => "derived from the database's limits".to_string(),
        };
        format!(
            "listener mode {} ({mode}), at most {} streams ({why})",
            self.mode.as_str(),
            self.max_streams
        )
    }

    /// In per-stream mode, a warning when the database leaves room for only a few streams,
    /// or fewer than `MAX_STREAMS` asks for: what to set, with this database's numbers.
    pub fn warning(&self) -> Option<String> {
        let limits = self.limits.as_ref()?;
        let (usable, binds) = usable_connections(limits);
        let fits = usable.saturating_sub(self.pool_size + OPERATOR_HEADROOM);
        let advice = format!(
            "Set LISTENER=shared (one connection for every stream: DATABASE_POOL_SIZE+1 = {} \
             per instance), or keep per-stream and set MAX_STREAMS to at most {fits} \
             ({usable} less the pool's {} and {OPERATOR_HEADROOM} for the release phase and \
             psql; a smaller DATABASE_POOL_SIZE leaves more).",
            self.pool_size + 1,
            self.pool_size
        );
        match self.source {
            Source::Connections if self.max_streams < FEW_STREAMS => Some(format!(
                "per-stream mode can serve only {} stream(s) here: each holds a connection, \
                 {binds} leaves {usable}, DATABASE_POOL_SIZE takes {} and {CONNECTION_RESERVE} \
                 stay in reserve. {advice}",
                self.max_streams, self.pool_size
            )),
            Source::Configured if self.max_streams > fits => Some(format!(
                "MAX_STREAMS={} is more than per-stream mode can open here: each stream holds \
                 a connection and {binds} leaves {usable}; streams past that get 503 and can \
                 starve the pool. {advice}",
                self.max_streams
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(listener: ListenerMode, max_streams: Option<usize>, pool: usize) -> Settings {
        let mut s = Settings::from_lookup(|k| {
            (k == "DATABASE_URL").then(|| "postgres://u@localhost/db".to_string())
        })
        .expect("settings");
        s.listener = listener;
        s.listener_from_env = listener == ListenerMode::Shared;
        s.max_streams = max_streams;
        s.pool_size = pool;
        s
    }

    fn limits(max: usize, role: Option<usize>, database: Option<usize>) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: max,
            reserved: 3,
            role_limit: role,
            database_limit: database,
        }
    }

    #[test]
    fn per_stream_takes_what_the_tightest_limit_leaves() {
        let s = settings(ListenerMode::PerStream, None, 10);
        let b = StreamBudget::decide(&s, Some(limits(100, None, None)));
        assert_eq!((b.max_streams, b.source.clone()), (77, Source::Connections));
        assert!(b.warning().is_none(), "{:?}", b.warning());
        assert!(
            b.summary()
                .contains("max_connections=100 less 3 reserved leaves 97")
        );
        assert!(b.summary().contains("LISTENER unset"), "{}", b.summary());

        // A hosted plan's role limit binds before max_connections.
        let b = StreamBudget::decide(&s, Some(limits(500, Some(40), Some(60))));
        assert_eq!(b.max_streams, 20);
        assert!(
            b.summary().contains("the role's CONNECTION LIMIT 40"),
            "{}",
            b.summary()
        );
        let b = StreamBudget::decide(&s, Some(limits(500, None, Some(30))));
        assert_eq!(b.max_streams, 10);
    }

    #[test]
    fn a_small_database_warns_with_its_own_numbers() {
        // Heroku essential-0: 20 connections in all.
        let s = settings(ListenerMode::PerStream, None, 10);
        let b = StreamBudget::decide(&s, Some(limits(20, None, None)));
        assert_eq!(b.max_streams, 1);
        let w = b.warning().expect("warns");
        assert!(w.contains("only 1 stream(s)"), "{w}");
        assert!(
            w.contains("max_connections=20 less 3 reserved leaves 17"),
            "{w}"
        );
        assert!(w.contains("LISTENER=shared"), "{w}");
        assert!(w.contains("DATABASE_POOL_SIZE+1 = 11"), "{w}");
        assert!(w.contains("MAX_STREAMS to at most 5"), "{w}");
    }

    #[test]
    fn a_max_streams_above_the_connections_warns() {
        let s = settings(ListenerMode::PerStream, Some(50), 5);
        let b = StreamBudget::decide(&s, Some(limits(20, None, None)));
        assert_eq!((b.max_streams, b.source.clone()), (50, Source::Configured));
        let w = b.warning().expect("warns");
        assert!(w.contains("MAX_STREAMS=50 is more"), "{w}");
        assert!(w.contains("at most 10"), "{w}");
        let s = settings(ListenerMode::PerStream, Some(10), 5);
        assert!(
            StreamBudget::decide(&s, Some(limits(20, None, None)))
                .warning()
                .is_none()
        );
    }

    #[test]
    fn shared_mode_ignores_connections_and_never_warns() {
        let s = settings(ListenerMode::Shared, None, 5);
        let b = StreamBudget::decide(&s, Some(limits(20, None, None)));
        assert_eq!(
            (b.max_streams, b.source.clone()),
            (DEFAULT_SHARED_MAX_STREAMS, Source::SharedDefault)
        );
        assert!(b.warning().is_none());
        assert_eq!(
            b.summary(),
            "listener mode shared (LISTENER=shared), at most 10000 streams \
             (shared mode's default; one LISTEN connection serves them all)"
        );
        let s = settings(ListenerMode::Shared, Some(300), 5);
        let b = StreamBudget::decide(&s, None);
        assert!(
            b.summary()
                .ends_with("at most 300 streams (MAX_STREAMS=300)")
        );
    }
}
