//! The SOAP envelope codec of the CRM channels, defined with their types in
//! [`clm_contracts::soap::codec`] (so the hub, its connectors and the mocks read and write the
//! same envelopes) and re-exported here for the connectors.

pub use clm_contracts::soap::codec::*;
