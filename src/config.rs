//! Settings from the environment (12-factor), read once at start.
//!
//! Every variable of the contract is parsed here, and a bad value stops the process with a
//! message that names the variable: a typo in a dyno's config must not become a panic trace
//! or a silently ignored setting.

use std::{str::FromStr, time::Duration};

/// How streams receive their board's notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerMode {
    /// Each stream LISTENs on a dedicated PostgreSQL connection of its own.
    PerStream,
    /// One dedicated connection per process LISTENs for all its streams.
    Shared,
}

impl ListenerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerMode::PerStream => "per-stream",
            ListenerMode::Shared => "shared",
        }
    }
}

/// A bad or missing setting: which variable, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(var: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            var,
            message: message.into(),
        }
    }
}

/// Everything the service reads from its environment.
#[derive(Clone, Debug)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub database: tokio_postgres::Config,
    /// How the database server's certificate is checked (`sslmode`, `sslrootcert`).
    pub database_tls: TlsCheck,
    pub pool_size: usize,
    pub heartbeat: Duration,
    pub listener: ListenerMode,
    /// Whether `LISTENER` was set (the start line says why the mode is what it is).
    pub listener_from_env: bool,
    /// `None`: derived at start (per-stream: from `max_connections`; shared: 10,000).
    pub max_streams: Option<usize>,
    pub max_streams_per_client: usize,
    pub event_retention: i64,
    pub jwt_secret: Option<String>,
    /// Writes per second per client; 0 turns the limit off.
    pub write_rate_limit: u32,
    /// `SIGNAL_RATE_LIMIT`: signals per second per viewer, in bursts of twice that; 0 is off.
    pub signal_rate_limit: u32,
    pub trust_proxy: bool,
    pub cors_origins: Vec<String>,
    /// How long actix may drain connections after SIGTERM. Heroku kills at 30 s.
    pub shutdown_grace: Duration,
    /// HTTP worker threads; `None` is one per core.
    pub workers: Option<usize>,
    /// The most viewers a board lists and announces one by one (`PRESENCE_LIST_LIMIT`);
    /// past it the board is a crowd and only its count is sent.
    pub presence_list_limit: usize,
    /// `MAX_BOARDS_PER_STREAM`: the most boards one `GET /api/events?boards=` may carry.
    pub max_boards_per_stream: usize,
}

pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_POOL_SIZE: usize = 10;
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Below 50 ms the heartbeats alone would be a load.
pub const HEARTBEAT_MIN: Duration = Duration::from_millis(50);
/// The contract's bound: Heroku's router cuts a connection silent for 55 s, and a heartbeat
/// can be late (a busy worker, a slow write), so the period keeps a 10 s margin under it.
pub const HEARTBEAT_MAX: Duration = Duration::from_secs(45);
pub const DEFAULT_MAX_STREAMS_PER_CLIENT: usize = 100;
pub const DEFAULT_EVENT_RETENTION: i64 = 10_000;
pub const DEFAULT_WRITE_RATE_LIMIT: u32 = 20;
/// The contract's default `PRESENCE_LIST_LIMIT`.
pub const DEFAULT_PRESENCE_LIST_LIMIT: usize = 100;
/// The largest `PRESENCE_LIST_LIMIT` accepted: an opening `presence` event lists this many
/// viewers (about 100 bytes each), so 10,000 is already a 1 MB event per stream.
pub const MAX_PRESENCE_LIST_LIMIT: usize = 10_000;
/// The contract's default `SIGNAL_RATE_LIMIT`.
pub const DEFAULT_SIGNAL_RATE_LIMIT: u32 = 30;
/// The contract's default `MAX_BOARDS_PER_STREAM`.
pub const DEFAULT_MAX_BOARDS_PER_STREAM: usize = 20;
/// The largest `MAX_BOARDS_PER_STREAM` accepted: 200 ids (37 bytes each with the comma)
/// already fill most of the 8 KiB request target the server accepts.
pub const MAX_MAX_BOARDS_PER_STREAM: usize = 200;
/// Shared mode's default cap on streams per instance (the contract's number).
pub const DEFAULT_SHARED_MAX_STREAMS: usize = 10_000;

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests can supply variables without touching the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let (database, database_tls) = match get("DATABASE_URL") {
            Some(url) => parse_database_url(&url)?,
            None => {
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    "is not set (scripts/run starts a local PostgreSQL and sets it for you)",
                ));
            }
        };

        let port = parse_or("PORT", get("PORT"), DEFAULT_PORT, |v| {
            v.parse::<u16>()
                .map_err(|_| "must be a port number from 0 to 65535".to_string())
        })?;
        let pool_size = parse_or(
            "DATABASE_POOL_SIZE",
            get("DATABASE_POOL_SIZE"),
            DEFAULT_POOL_SIZE,
            |v| match v.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(n),
                _ => Err("must be a whole number from 1 to 1000".to_string()),
            },
        )?;
        let heartbeat = parse_or(
            "HEARTBEAT_INTERVAL",
            get("HEARTBEAT_INTERVAL"),
            DEFAULT_HEARTBEAT,
            parse_heartbeat,
        )?;
        let listener = parse_or(
            "LISTENER",
            get("LISTENER"),
            ListenerMode::PerStream,
            |v| match v.trim().to_ascii_lowercase().as_str() {
                "per-stream" | "per_stream" | "dedicated" => Ok(ListenerMode::PerStream),
                "shared" => Ok(ListenerMode::Shared),
                _ => Err("must be `per-stream` or `shared`".to_string()),
            },
        )?;
        let max_streams = match get("MAX_STREAMS") {
            None => None,
            Some(v) => Some(positive("MAX_STREAMS", &v, 1_000_000)?),
        };
        let max_streams_per_client = match get("MAX_STREAMS_PER_CLIENT") {
            None => DEFAULT_MAX_STREAMS_PER_CLIENT,
            Some(v) => positive("MAX_STREAMS_PER_CLIENT", &v, 1_000_000)?,
        };
        let event_retention = match get("EVENT_RETENTION") {
            None => DEFAULT_EVENT_RETENTION,
            Some(v) => positive("EVENT_RETENTION", &v, 100_000_000)? as i64,
        };
        let write_rate_limit = rate(
            "WRITE_RATE_LIMIT",
            get("WRITE_RATE_LIMIT"),
            DEFAULT_WRITE_RATE_LIMIT,
            "writes",
        )?;
        let signal_rate_limit = rate(
            "SIGNAL_RATE_LIMIT",
            get("SIGNAL_RATE_LIMIT"),
            DEFAULT_SIGNAL_RATE_LIMIT,
            "signals",
        )?;
        // Heroku's router is the TCP peer of every request, so behind it the client address
        // can only come from X-Forwarded-For; `DYNO` is set on every Heroku dyno.
        let trust_proxy = match get("TRUST_PROXY") {
            Some(v) => parse_bool("TRUST_PROXY", &v)?,
            None => get("DYNO").is_some(),
        };
        let cors_origins = get("CORS_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_string())
                    .filter(|o| !o.is_empty())
                    .map(|o| check_origin(&o).map(|()| o))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let shutdown_grace = parse_or(
            "SHUTDOWN_GRACE",
            get("SHUTDOWN_GRACE"),
            Duration::from_secs(10),
            |v| match humantime::parse_duration(v.trim()) {
                Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(25) => Ok(d),
                _ => Err(
                    "must be a duration from 1s to 25s (Heroku kills a dyno 30 s after SIGTERM)"
                        .to_string(),
                ),
            },
        )?;
        let presence_list_limit = match get("PRESENCE_LIST_LIMIT") {
            None => DEFAULT_PRESENCE_LIST_LIMIT,
            Some(v) => positive("PRESENCE_LIST_LIMIT", &v, MAX_PRESENCE_LIST_LIMIT)?,
        };
        let max_boards_per_stream = match get("MAX_BOARDS_PER_STREAM") {
            None => DEFAULT_MAX_BOARDS_PER_STREAM,
            Some(v) => positive("MAX_BOARDS_PER_STREAM", &v, MAX_MAX_BOARDS_PER_STREAM)?,
        };
        let workers = match get("WEB_CONCURRENCY") {
            None => None,
            Some(v) => Some(positive("WEB_CONCURRENCY", &v, 256)?),
        };

        Ok(Settings {
            host: get("HOST").unwrap_or_else(|| "0.0.0.0".to_string()),
            port,
            database,
            database_tls,
            pool_size,
            heartbeat,
            listener,
            listener_from_env: get("LISTENER").is_some(),
            max_streams,
            max_streams_per_client,
            event_retention,
            jwt_secret: get("JWT_SECRET"),
            write_rate_limit,
            signal_rate_limit,
            trust_proxy,
            cors_origins,
            shutdown_grace,
            workers,
            presence_list_limit,
            max_boards_per_stream,
        })
    }
}

/// A per-second rate such as `WRITE_RATE_LIMIT`: a whole number up to 1,000,000; 0 is off.
fn rate(
    name: &'static str,
    value: Option<String>,
    default: u32,
    what: &str,
) -> Result<u32, ConfigError> {
    parse_or(name, value, default, |v| {
        v.parse::<u32>()
            .ok()
            .filter(|n| *n <= 1_000_000)
            .ok_or_else(|| format!("must be a whole number of {what} per second (0 turns it off)"))
    })
}

fn parse_or<T>(
    var: &'static str,
    raw: Option<String>,
    default: T,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match raw {
        None => Ok(default),
        Some(v) => parse(v.trim()).map_err(|m| ConfigError::new(var, format!("{m} (got {v:?})"))),
    }
}

/// A browser's `Origin`: `http(s)://host[:port]`, nothing after. A path or a wildcard
/// would never match what a browser sends, so it is a mistake worth stopping for.
fn check_origin(origin: &str) -> Result<(), ConfigError> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let valid = rest.is_some_and(|host| {
        !host.is_empty()
            && !host.contains(['/', '*', '?', '#', '@'])
            && !host.chars().any(|c| c.is_whitespace() || c.is_control())
    });
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            "CORS_ORIGINS",
            format!(
                "must be a comma-separated list of origins such as https://app.example.com (got {origin:?})"
            ),
        ))
    }
}

fn positive(var: &'static str, raw: &str, max: usize) -> Result<usize, ConfigError> {
    match raw.trim().parse::<usize>() {
        Ok(n) if n >= 1 && n <= max => Ok(n),
        _ => Err(ConfigError::new(
            var,
            format!("must be a whole number from 1 to {max} (got {raw:?})"),
        )),
    }
}

fn parse_bool(var: &'static str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            var,
            format!("must be true or false (got {raw:?})"),
        )),
    }
}

/// `15s`, `250ms`, `1m`; a bare number is seconds.
fn parse_heartbeat(raw: &str) -> Result<Duration, String> {
    let parsed = match raw.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(raw).map_err(|_| ()),
    };
    match parsed {
        Ok(d) if (HEARTBEAT_MIN..=HEARTBEAT_MAX).contains(&d) => Ok(d),
        Ok(_) => Err(
            "must be between 50ms and 45s (Heroku's router closes a connection silent for 55 s; \
             45 s leaves a margin for a slow write or a busy proxy)"
                .to_string(),
        ),
        Err(()) => Err("must be a duration such as 15s or 250ms".to_string()),
    }
}

/// How the database server's certificate is checked, from `DATABASE_URL`'s `sslmode` and
/// `sslrootcert`, with libpq's meanings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsCheck {
    /// `verify-ca` or `verify-full` (or any `sslrootcert` file): the certificate must chain
    /// to a trusted CA.
    pub verify: bool,
    /// `verify-full`: and be for the host named in the URL.
    pub host_name: bool,
    /// `sslrootcert=/path/ca.pem`: trust the CAs in this PEM file instead of the public web
    /// PKI's (the Mozilla roots, also what `sslrootcert=system` selects).
    pub root_cert: Option<std::path::PathBuf>,
}

/// Removes parameter `name` from a connection string and returns its value: from the query
/// of a URL (`?name=value&…`, percent-decoded) or from the key=value form (`name=value` or
/// `name='a value'` with `\'` and `\\` escapes). tokio-postgres refuses parameters it
/// does not know (`sslrootcert`) and `sslmode` values it cannot honour (`verify-ca`,
/// `verify-full`), so those are taken out before it parses the rest.
fn take_parameter(conn: &mut String, name: &str) -> Result<Option<String>, String> {
    let key = format!("{name}=");
    let url = conn.starts_with("postgres://") || conn.starts_with("postgresql://");
    let Some(start) = conn.match_indices(&key).map(|(i, _)| i).find(|&i| {
        let before = conn[..i].chars().last();
        if url {
            matches!(before, Some('?' | '&'))
        } else {
            before.is_none_or(char::is_whitespace)
        }
    }) else {
        return Ok(None);
    };
    let value_at = start + key.len();
    let rest = &conn[value_at..];
    let (value, len) = if url {
        let len = rest.find('&').unwrap_or(rest.len());
        let value = percent_encoding::percent_decode_str(&rest[..len]).decode_utf8_lossy();
        (value.into_owned(), len)
    } else {
        quoted_value(rest).ok_or_else(|| format!("has an unterminated quote in {name}"))?
    };
    let end = value_at + len;
    // Drop the parameter with one separator, keeping the string well formed.
    let (cut_from, cut_to) = if url && conn[end..].starts_with('&') {
        (start, end + 1)
    } else if url {
        (start - 1, end)
    } else {
        (start, end)
    };
    conn.replace_range(cut_from..cut_to, "");
    Ok(Some(value))
}

/// The value at the start of `rest` in libpq's key=value form, and how many bytes it takes:
/// up to the next white space, or between single quotes. `None`: a quote is left open.
fn quoted_value(rest: &str) -> Option<(String, usize)> {
    let Some(quoted) = rest.strip_prefix('\'') else {
        let len = rest.find(char::is_whitespace).unwrap_or(rest.len());
        return Some((rest[..len].to_string(), len));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?.1),
            // Both quotes count: the opening one is not in `quoted`.
            '\'' => return Some((value, i + 2)),
            c => value.push(c),
        }
    }
    None
}

/// Parses `DATABASE_URL`, deciding how TLS is used:
/// - `sslmode=verify-full` / `verify-ca` (which tokio-postgres cannot parse) become `require`
///   with certificate verification on, the host name checked by `verify-full` only;
/// - `sslrootcert=/path/ca.pem` names the CAs to trust; as in libpq it makes `require`
///   verify the chain (like `verify-ca`), and `sslrootcert=system` (the public roots) needs
///   `verify-full` and implies it when `sslmode` is absent;
/// - no `sslmode` and a host that is not this machine → `require`, because Heroku's URL
///   carries no `sslmode` and tokio-postgres' default `prefer` would fall back to plaintext;
/// - an explicit `disable`, `prefer` or `require` is honoured (`require` encrypts without
///   verifying: Heroku's certificates are not publicly verifiable).
fn parse_database_url(url: &str) -> Result<(tokio_postgres::Config, TlsCheck), ConfigError> {
    use tokio_postgres::config::SslMode;
    let invalid = |message: String| ConfigError::new("DATABASE_URL", message);
    let mut rewritten = url.trim().to_string();
    let sslmode = take_parameter(&mut rewritten, "sslmode").map_err(invalid)?;
    let root_cert = take_parameter(&mut rewritten, "sslrootcert").map_err(invalid)?;
    let mut check = TlsCheck::default();
    let ssl_mode = match sslmode.as_deref() {
        None => None,
        Some("disable") => Some(SslMode::Disable),
        Some("prefer") => Some(SslMode::Prefer),
        Some("require") => Some(SslMode::Require),
        Some(mode @ ("verify-ca" | "verify-full")) => {
            check.verify = true;
            check.host_name = mode == "verify-full";
            Some(SslMode::Require)
        }
        Some(other) => {
            return Err(invalid(format!(
                "has sslmode={other:?}; expected disable, prefer, require, verify-ca or verify-full"
            )));
        }
    };
    let ssl_mode = match root_cert.as_deref() {
        None => ssl_mode,
        Some("") => return Err(invalid("has an empty sslrootcert".to_string())),
        // libpq 16's rule: the public roots vouch for any public name, so only a host name
        // check makes them mean anything.
        Some("system") if sslmode.is_none() || check.host_name => {
            check.verify = true;
            check.host_name = true;
            Some(SslMode::Require)
        }
        Some("system") => {
            return Err(invalid(format!(
                "has sslrootcert=system with sslmode={}; the public roots need \
                 sslmode=verify-full (as in libpq)",
                sslmode.unwrap_or_default()
            )));
        }
        Some(path) => {
            check.verify = true;
            check.root_cert = Some(path.into());
            ssl_mode
        }
    };
    // Never echo the URL back: it carries the password.
    let mut config = tokio_postgres::Config::from_str(&rewritten).map_err(|e| {
        ConfigError::new(
            "DATABASE_URL",
            format!("is not a PostgreSQL connection URL ({e}); expected postgres://user:password@host:5432/dbname"),
        )
    })?;
    if config.get_hosts().is_empty() {
        return Err(ConfigError::new("DATABASE_URL", "names no host"));
    }
    let local = config.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            name == "localhost" || name.starts_with("127.") || name == "::1"
        }
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => true,
    });
    match ssl_mode {
        Some(mode) => {
            config.ssl_mode(mode);
        }
        None if !local => {
            config.ssl_mode(SslMode::Require);
        }
        None => {}
    }
    // A dead server must not hang a request or a stream open for the OS's default minutes.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.keepalives_idle(Duration::from_secs(30));
    config.keepalives_interval(Duration::from_secs(10));
    config.keepalives_retries(3);
    if config.get_application_name().is_none() {
        config.application_name("boardcast");
    }
    Ok((config, check))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.entry("DATABASE_URL".into())
            .or_insert_with(|| "postgres://u@localhost/db".into());
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = settings(&[]).expect("defaults parse");
        assert_eq!(s.port, 8080);
        assert_eq!(s.pool_size, 10);
        assert_eq!(s.heartbeat, Duration::from_secs(15));
        assert_eq!(s.listener, ListenerMode::PerStream);
        assert_eq!(s.max_streams_per_client, 100);
        assert_eq!(s.event_retention, 10_000);
        assert_eq!(s.write_rate_limit, 20);
        assert_eq!(s.presence_list_limit, 100);
        assert_eq!(s.signal_rate_limit, 30);
        assert!(!s.trust_proxy);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (var, value) in [
            ("PORT", "eighty"),
            ("HEARTBEAT_INTERVAL", "banana"),
            ("HEARTBEAT_INTERVAL", "0s"),
            ("DATABASE_URL", "not a url at all =="),
            ("DATABASE_POOL_SIZE", "0"),
            ("LISTENER", "both"),
            ("MAX_STREAMS", "-1"),
            ("EVENT_RETENTION", "lots"),
            ("WRITE_RATE_LIMIT", "fast"),
            ("PRESENCE_LIST_LIMIT", "0"),
            ("PRESENCE_LIST_LIMIT", "many"),
            ("PRESENCE_LIST_LIMIT", "10001"),
            ("SIGNAL_RATE_LIMIT", "-3"),
            ("TRUST_PROXY", "maybe"),
            ("CORS_ORIGINS", "example.com"),
            ("CORS_ORIGINS", "https://ok.example.com, *"),
            ("CORS_ORIGINS", "https://example.com/app"),
        ] {
            let err = settings(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var, "{value}");
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn the_presence_list_limit_is_a_bounded_count() {
        let s = settings(&[("PRESENCE_LIST_LIMIT", " 5 ")]).expect("five");
        assert_eq!(s.presence_list_limit, 5);
        let err = settings(&[("PRESENCE_LIST_LIMIT", "-3")]).expect_err("negative");
        assert_eq!(
            err.to_string(),
            "PRESENCE_LIST_LIMIT: must be a whole number from 1 to 10000 (got \"-3\")"
        );
    }

    #[test]
    fn a_missing_database_url_is_explained() {
        let err = Settings::from_lookup(|_| None).expect_err("needs DATABASE_URL");
        assert_eq!(err.var, "DATABASE_URL");
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(
            settings(&[("HEARTBEAT_INTERVAL", "250ms")])
                .expect("ms")
                .heartbeat,
            Duration::from_millis(250)
        );
        assert_eq!(
            settings(&[("HEARTBEAT_INTERVAL", "20")])
                .expect("bare")
                .heartbeat,
            Duration::from_secs(20)
        );
    }

    #[test]
    fn the_heartbeat_keeps_a_margin_under_herokus_55_seconds() {
        assert_eq!(
            settings(&[("HEARTBEAT_INTERVAL", "45s")])
                .expect("the bound itself")
                .heartbeat,
            HEARTBEAT_MAX
        );
        for too_long in ["55s", "46s", "45001ms", "1m", "50"] {
            let err = settings(&[("HEARTBEAT_INTERVAL", too_long)]).expect_err(too_long);
            assert_eq!(err.var, "HEARTBEAT_INTERVAL");
            let text = err.to_string();
            assert!(
                text.starts_with("HEARTBEAT_INTERVAL") && text.contains("45s"),
                "{too_long}: {text}"
            );
        }
    }

    #[test]
    fn remote_hosts_get_tls_by_default() {
        use tokio_postgres::config::SslMode;
        let remote = settings(&[(
            "DATABASE_URL",
            "postgres://u:p@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d",
        )])
        .expect("url");
        assert_eq!(remote.database.get_ssl_mode(), SslMode::Require);
        assert!(!remote.database_tls.verify);
        let local = settings(&[("DATABASE_URL", "postgres://u@127.0.0.1:5432/d")]).expect("url");
        assert_eq!(local.database.get_ssl_mode(), SslMode::Prefer);
        let off = settings(&[(
            "DATABASE_URL",
            "postgres://u@db.example.com/d?sslmode=disable",
        )])
        .expect("url");
        assert_eq!(off.database.get_ssl_mode(), SslMode::Disable);
        let verify = settings(&[(
            "DATABASE_URL",
            "postgres://u@db.example.com/d?sslmode=verify-full",
        )])
        .expect("url");
        assert_eq!(verify.database.get_ssl_mode(), SslMode::Require);
        assert!(verify.database_tls.verify && verify.database_tls.host_name);
    }

    #[test]
    fn sslrootcert_names_the_cas_to_trust() {
        use std::path::PathBuf;
        for (url, host_name) in [
            (
                "postgres://u@db.example.com/d?sslmode=verify-ca&sslrootcert=/etc/ca.pem",
                false,
            ),
            (
                "postgres://u@db.example.com/d?sslrootcert=%2Fetc%2Fca.pem&sslmode=verify-full",
                true,
            ),
            (
                "postgres://u@db.example.com/d?sslrootcert=/etc/ca.pem",
                false,
            ),
            (
                "postgres://u@db.example.com/d?sslmode=require&sslrootcert=/etc/ca.pem",
                false,
            ),
            (
                "host=db.example.com user=u sslrootcert=/etc/ca.pem sslmode=verify-full",
                true,
            ),
        ] {
            let s = settings(&[("DATABASE_URL", url)]).expect(url);
            assert!(s.database_tls.verify, "{url}");
            assert_eq!(s.database_tls.host_name, host_name, "{url}");
            assert_eq!(
                s.database_tls.root_cert,
                Some(PathBuf::from("/etc/ca.pem")),
                "{url}"
            );
            assert_eq!(
                s.database.get_ssl_mode(),
                tokio_postgres::config::SslMode::Require,
                "{url}"
            );
        }
        let err = settings(&[("DATABASE_URL", "postgres://u@h/d?sslrootcert=")])
            .expect_err("an empty path");
        assert_eq!(err.var, "DATABASE_URL");
    }

    #[test]
    fn sslrootcert_in_the_key_value_form_may_be_quoted() {
        use std::path::PathBuf;
        let s = settings(&[(
            "DATABASE_URL",
            r"host=db.example.com sslrootcert='/etc/my certs/it\'s.pem' user=u sslmode=verify-ca",
        )])
        .expect("a quoted path");
        assert_eq!(
            s.database_tls.root_cert,
            Some(PathBuf::from("/etc/my certs/it's.pem"))
        );
        assert_eq!(s.database.get_user(), Some("u"));
        assert!(s.database_tls.verify && !s.database_tls.host_name);
        let err = settings(&[(
            "DATABASE_URL",
            "host=db.example.com sslrootcert='/etc/ca.pem user=u",
        )])
        .expect_err("an open quote");
        assert!(err.message.contains("unterminated quote"), "{err}");
    }

    #[test]
    fn sslrootcert_system_means_the_public_roots_and_verify_full() {
        for url in [
            "postgres://u@db.example.com/d?sslrootcert=system",
            "postgres://u@db.example.com/d?sslrootcert=system&sslmode=verify-full",
            "host=db.example.com sslrootcert=system",
        ] {
            let s = settings(&[("DATABASE_URL", url)]).expect(url);
            assert_eq!(
                s.database_tls,
                TlsCheck {
                    verify: true,
                    host_name: true,
                    root_cert: None
                },
                "{url}"
            );
            assert_eq!(
                s.database.get_ssl_mode(),
                tokio_postgres::config::SslMode::Require
            );
        }
        for mode in ["require", "verify-ca", "prefer"] {
            let url = format!("postgres://u@db.example.com/d?sslrootcert=system&sslmode={mode}");
            let err = settings(&[("DATABASE_URL", &url)]).expect_err("a weak sslmode");
            assert!(err.message.contains("verify-full"), "{err}");
        }
    }

    #[test]
    fn an_unknown_sslmode_is_refused_naming_the_choices() {
        let err = settings(&[(
            "DATABASE_URL",
            "postgres://u@db.example.com/d?sslmode=allow",
        )])
        .expect_err("allow is not supported");
        assert_eq!(err.var, "DATABASE_URL");
        assert!(err.message.contains("verify-full"), "{err}");
    }

    #[test]
    fn cors_origins_are_a_list_of_exact_origins() {
        let s = settings(&[(
            "CORS_ORIGINS",
            " https://app.example.com/ , http://localhost:3000,",
        )])
        .expect("origins");
        assert_eq!(
            s.cors_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        assert!(settings(&[]).expect("none").cors_origins.is_empty());
    }

    #[test]
    fn dyno_turns_on_proxy_trust() {
        assert!(settings(&[("DYNO", "web.1")]).expect("dyno").trust_proxy);
        assert!(
            !settings(&[("DYNO", "web.1"), ("TRUST_PROXY", "false")])
                .expect("off")
                .trust_proxy
        );
    }
}
