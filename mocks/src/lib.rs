//! Mock channels speaking the hub's contracts (`clm-contracts`), for tests on port 0 and for QA
//! standalone. Each mock records what it received, injects faults that can change mid-run, sends
//! automatic responses, and has a control API on its own server.
//!
//! # Layout
//! - [`sms`]: the SMS gateway mock — Kannel `sendsms` and JSON dialects, delivery reports,
//!   control API under `/control/sms/`.
//! - [`channel`]: the HTTP JSON channels `wink`, `elk` and `eissd` — strict send requests, auth,
//!   idempotent `message_id`, webhooks (signed, retried) or EISSD DWH rows, control API under
//!   `/control/<channel>/`.
//! - [`crm`]: the SOAP CRM services — SAP CRM campaign service and the CRM ESB (Amdocs CRM 7.5,
//!   CRM B2C) — speaking exactly `wsdl/`: bundles answered per item, truthful status queries,
//!   SOAP faults and timeouts after accepting, callbacks to the hub's response service, control
//!   API under `/control/sap_crm/` and `/control/crm_esb/`.
//! - [`smtp`]: the SMTP relay mock of the e-mail channel — the RFC 5321 dialogue with `AUTH`,
//!   faults per stage (`RCPT`, `DATA`, after the final `.`: replies, disconnects, slow replies,
//!   hangs), greylisting, feedback webhooks (delivered, bounced, opened, clicked, …) to the hub's
//!   `/ingest/email`, control API under `/control/email/`.
//! - `faults`: [`Faults`], the same fault injection for every HTTP mock (the CRM mocks have
//!   their SOAP-shaped [`CrmFaults`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use clm_mocks::{Faults, SmsMock};
//! let sms = SmsMock::start("127.0.0.1:0".parse()?).await?;
//! sms.set_faults(Faults { script: vec![503], ..Faults::default() });
//! // point the connector at sms.kannel_url() or sms.json_url() …
//! sms.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod channel;
pub mod crm;
mod faults;
pub mod sms;
pub mod smtp;
mod util;

pub use channel::{
    ChannelMock, ChannelMockConfig, ChannelStats, ExpectedAuth, ReceivedRequest, ResponsesConfig,
};
pub use crm::{
    CrmCallbacks, CrmFault, CrmFaults, CrmKind, CrmMock, CrmMockConfig, CrmStats, ReceivedBundle,
    ReceivedItem,
};
pub use faults::{Faults, Throttle};
pub use sms::{Credentials, Dialect, DlrConfig, DlrMethod, SmsMock, SmsMockConfig, SmsStats};
pub use smtp::{
    EmailFeedback, ReceivedMail, SmtpFaults, SmtpMock, SmtpMockConfig, SmtpScriptStep,
    SmtpStageFault, SmtpStats,
};
