//! The SAP CRM and CRM ESB mocks driven over SOAP, as the CRM connectors, the hub's response
//! service and QA drive them. One test binary; the modules group the behaviour, `harness` holds
//! the shared helpers (the codec, xmllint, a callback receiver).

mod auth;
mod callbacks;
mod control;
mod faults;
mod harness;
mod samples;
mod sends;
mod wsdl;
