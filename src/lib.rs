//! boardcast: live-update service for shared whiteboards.
//!
//! Dependencies point one way: `routes` → `db`, `realtime` → `domain`. The domain does no
//! I/O and no handler writes SQL.

pub mod auth;
pub(crate) mod capacity;
pub mod config;
pub mod db;
pub mod domain;
pub(crate) mod error;
pub(crate) mod limits;
pub(crate) mod metrics;
pub mod realtime;
pub(crate) mod redact;
pub mod routes;
pub mod shutdown;
pub mod startup;
