//! The SMS mock driven over HTTP, as the connector and QA drive it. One test binary; the
//! modules group the behaviour, `harness` holds the shared helpers.

mod control;
mod dialects;
mod dlrs;
mod faults;
mod harness;
