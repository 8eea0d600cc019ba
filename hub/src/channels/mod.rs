//! Channel families, one folder each: each family's settings (`[channels.<id>]`, its own serde
//! type) and how its connector is built from them. The rest of a family's code (e-mail
//! suppression and tracking, the EISSD poller, the CRM response service and reconciler) still
//! lives at the top of `hub/src` and moves here with the plug-in trait (issue 11, next part).
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
