//! The hub's integration tests: one binary, a shared harness.
//! - `amqp`: the hub on RabbitMQ and PostgreSQL (each test in its own vhost).
//! - `faults`: the `clm-hub` binary killed or stopped mid-run on PostgreSQL + RabbitMQ.
//! - `instances`: several hubs on one PostgreSQL, RabbitMQ and Redis.
//! - `restarts`: RabbitMQ, PostgreSQL and Redis restarted under the running `clm-hub` binary.
//! - `store`: the store suite, run against SQLite and PostgreSQL alike.
//! - `e2e`: the whole hub in-process on the embedded default against the SMS mock.
//! - `crm`: SAP CRM, Amdocs and CRM B2C end to end on the embedded default (bundled CRM mocks).
//! - `email`: e-mail end to end on the embedded default (bundled SMTP mock, tracking, suppression).
//! - `http_channels`: wink, elk and eissd end to end on the embedded default (bundled mocks).
//! - `dwh`: the EISSD DWH poller against a real PostgreSQL table, across restarts and instances.
//! - `limits`: the HTTP server's limits: body sizes before authentication, header and request
//!   timeouts, deeply nested JSON, `/metrics` without a store count per scrape.
//! - `search`: `GET /v1/communications` filters, keyset pages, masking and refusals (the
//!   100 000-row pagination and query plans are in the `store` suite).
//! - `startup`: the `clm-hub` binary's start-up output (banner in one piece, JSON logs).
//! - `soap`: the SOAP response service (`/soap/responses`): the WSDL's samples, envelope variants
//!   and attacks, callers, the served WSDL, and Python zeep as a client (`CLM_TEST_PYTHON`).

mod amqp;
mod coordination;
mod crm;
mod dwh;
mod e2e;
mod edges;
mod email;
mod faults;
mod harness;
mod http_channels;
mod instances;
mod kannel;
mod limits;
mod restarts;
mod search;
mod soap;
mod startup;
mod store;
