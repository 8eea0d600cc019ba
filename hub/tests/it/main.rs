//! The hub's integration tests: one binary, a shared harness.
//! - `store`: the store suite, run against SQLite and PostgreSQL alike.
//! - `e2e`: the whole hub in-process on the embedded default against the SMS mock.

mod e2e;
mod harness;
mod store;
