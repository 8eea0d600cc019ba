//! The hub's integration tests: one binary, a shared harness.
//! - `amqp`: the hub on RabbitMQ and PostgreSQL (each test in its own vhost).
//! - `faults`: the `clm-hub` binary killed or stopped mid-run on PostgreSQL + RabbitMQ.
//! - `instances`: several hubs on one PostgreSQL, RabbitMQ and Redis.
//! - `restarts`: RabbitMQ, PostgreSQL and Redis restarted under the running `clm-hub` binary.
//! - `store`: the store suite, run against SQLite and PostgreSQL alike.
//! - `e2e`: the whole hub in-process on the embedded default against the SMS mock.

mod amqp;
mod coordination;
mod e2e;
mod faults;
mod harness;
mod instances;
mod restarts;
mod store;
