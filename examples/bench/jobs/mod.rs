//! The benchmark's jobs, one file each: what it measures, how, and its part of the report.

pub mod fanout;
pub mod idle;
pub mod nchan;
pub mod open;
pub mod raw;
pub mod signals;
pub mod throughput;
