//! Channel families, one folder each. Each family's settings (`[channels.<id>]`) live here as
//! its own serde type, next to where its plug-in grows.
//!
//! - [`sms`]: `sms` (Kannel or a JSON gateway);
//! - [`json_http`]: `wink`, `elk`;
//! - [`eissd`]: `eissd` (HTTP JSON out, responses from a DWH table);
//! - [`crm`]: `sap_crm`, `amdocs`, `crm_b2c` (SOAP bundles);
//! - [`email`]: `email` (SMTP relay, tracking).

pub mod crm;
pub mod eissd;
pub mod email;
pub mod json_http;
pub mod sms;
