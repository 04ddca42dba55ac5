//! Black-box tests: a real server on a real port, a real PostgreSQL, real HTTP and SSE.

mod helpers;

mod boards;
mod errors;
mod events;
mod notes;
mod presence;
mod writes;
