//! Black-box tests: a real server on a real port, a real PostgreSQL, real HTTP and SSE.

mod helpers;

mod auth;
mod boards;
mod crowd;
mod edge;
mod errors;
mod events;
mod fuzz;
mod limits;
mod many;
mod metrics;
mod notes;
mod openapi;
mod presence;
mod sessions;
mod signals;
mod writes;
