//! Mock channels speaking the hub's contracts (`clm-contracts`), for tests on port 0 and for QA
//! standalone. Each mock records what it received, injects faults that can change mid-run, sends
//! automatic responses, and has a control API on its own server.
//!
//! # Layout
//! - [`sms`]: the SMS gateway mock — Kannel `sendsms` and JSON dialects, delivery reports,
//!   control API under `/control/sms/`.
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

pub mod sms;

pub use sms::{
    Credentials, Dialect, DlrConfig, DlrMethod, Faults, ReceivedSms, SmsMock, SmsMockConfig,
    SmsStats, Throttle,
};
