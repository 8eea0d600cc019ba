//! CLM Channel Hub: delivers the campaign engine's communications to eight channels and brings
//! their responses back.
//!
//! # Layout
//! - [`config`]: layered configuration (defaults → TOML → `CLM_HUB__…`), validated by key.
//! - [`channels`]: one folder per channel family: its typed settings, how its connector is built,
//!   its sandbox mocks, and its plug-in (gate, after-attempt hook, report parser, routes, jobs,
//!   metrics); the registry maps each channel id to exactly one family.
//! - [`amqp`]: RabbitMQ intake (consumer → intake) and event publishing (outbox → `clm.events`).
//! - [`app`]: start-up (`start`, `run`: store → sandbox mocks → each family's build → channels →
//!   tasks), housekeeping, the shutdown order, the banner.
//! - [`api`]: the HTTP API (`/v1`), health, metrics; routes `/ingest/*` to [`ingest`].
//! - [`intake`]: validation of submitted communications → store (group commit via [`batcher`]).
//! - [`store`]: SQLite / PostgreSQL; communications, attempts, responses, outbox, claims.
//! - [`coordination`]: several instances through Redis: shared rate limits, breaker and pause
//!   state, singleton locks (local fallback when Redis is down).
//! - [`dispatcher`]: per-channel claim loop and policy stack → the channel's attempt service (a
//!   tower `Service`: connector, concurrency limit, timeout) → [`dispatcher::Finisher`] writes
//!   outcomes back in batches; the channel's plug-in gates a batch and follows each attempt up.
//! - [`policy`]: send windows, backoff, circuit breaker (the rate limit is governor's).
//! - [`ingest`]: delivery reports and webhooks → correlated, deduplicated responses.
//! - [`events`]: outbox publisher (in-process bus on the embedded default).
//! - [`metrics`]: counters and the Prometheus exposition.
//!
//! Data moves: intake → store → dispatcher → connector → channel; channel → ingest → store;
//! every state change → outbox (same transaction) → events.

pub mod amqp;
pub mod api;
pub mod app;
pub mod batcher;
pub mod channels;
pub mod config;
pub mod coordination;
pub mod dispatcher;
pub mod events;
pub mod ingest;
pub mod intake;
pub mod metrics;
pub mod policy;
pub mod state;
pub mod store;

pub use app::{Hub, run, start};
pub use config::Config;
