//! The wink, elk and eissd mocks driven over HTTP, as the connectors, the hub's ingest and QA
//! drive them. One test binary; the modules group the behaviour, `harness` holds the shared
//! helpers.

mod control;
mod eissd;
mod faults;
mod harness;
mod sends;
mod webhooks;
