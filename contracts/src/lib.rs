//! The hub's external contract: what the campaign engine sends, what the hub answers and what it
//! publishes. Pure types and validation, no I/O, so connectors, the hub and the mocks all build on
//! exactly the same definitions.
//!
//! # Layout
//! - [`channel`]: the eight channel ids.
//! - [`communication`]: the `Communication` the campaign engine submits, and its validation.
//! - [`lifecycle`]: lifecycle states, attempt records, response records.
//! - [`events`]: status and response events published through the outbox.
//! - [`api`]: request and answer bodies of the HTTP API.
//! - [`sms`]: GSM 03.38 / UCS-2 encoding choice and segment counting.
//! - [`channels`]: wire contracts of the HTTP JSON channels `wink`, `elk` and `eissd`.
//! - [`schema`]: the JSON Schemas generated into `contracts/schema/`.
//! - [`soap`]: the messages of the SOAP services in `wsdl/` (SAP CRM, CRM ESB, the hub's
//!   response service), namespaces and soapActions.

pub mod api;
pub mod channel;
pub mod channels;
pub mod communication;
pub mod events;
pub mod lifecycle;
pub mod schema;
pub mod sms;
pub mod soap;

pub use channel::ChannelId;
pub use communication::{Communication, Content, ValidationError};
pub use events::{Event, ResponseEvent, StatusEvent};
pub use lifecycle::{AttemptRecord, Classification, ResponseKind, ResponseRecord, Status};
