//! Connectors: turn a communication into a channel's wire format, send it, and classify the answer
//! once, explicitly. Also the parsers for what channels send back (delivery reports, webhooks).
//!
//! # Layout
//! - [`outcome`]: [`Outcome`] (sent / retry / fail / unknown) and the shared HTTP classification
//!   (`Retry-After`, status codes, transport errors).
//! - [`sms`]: the SMS gateway connector (Kannel `sendsms` and JSON dialects) and delivery-report
//!   parsing.
//! - [`json_http`]: the HTTP(S) JSON channels `wink`, `elk` and `eissd` (request mapping, TLS with
//!   a private CA and client certificates, answer classification), Wink / ELK webhook parsing and
//!   EISSD's DWH rows as reports.
//! - [`soap`]: the SOAP envelope codec of the CRM channels, re-exported from
//!   `clm_contracts::soap::codec` (the mocks use the same one).
//! - [`crm`]: the CRM channels over SOAP (SAP CRM; Amdocs and CRM B2C through the ESB):
//!   bundles, per-item outcomes, reconciliation by status query after a lost answer.
//! - [`email`]: the e-mail channel over SMTP (lettre): message building (RFC 2047 headers,
//!   multipart text + HTML, `Message-ID` naming the communication, one-click unsubscribe, DKIM),
//!   pooled relay sessions, and the stage-aware classification of SMTP answers (RFC 5321/3463).
//!
//! Connectors are the open set of the hub, so a trait object: the hub builds one per enabled
//! channel from its config and wraps it in the channel's policy stack. Policy (timeouts, rate,
//! retries) is not a connector's business; classification is.

pub mod crm;
pub mod email;
pub mod json_http;
pub mod outcome;
pub mod sms;
pub mod soap;

use async_trait::async_trait;
use clm_contracts::{ChannelId, Communication};

pub use outcome::{Outcome, Report};

/// One channel's sending side.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    fn channel(&self) -> ChannelId;

    /// Makes one attempt. Never panics on a bad answer: every answer becomes an [`Outcome`].
    /// The caller bounds it with the per-attempt timeout.
    async fn send(&self, comm: &Communication) -> Outcome;

    /// Whether the channel can be asked what became of a send that ended `unknown`.
    fn reconciles(&self) -> bool {
        false
    }

    /// Asks the channel about communications whose sends ended `unknown`: for each id it knows
    /// about, `Sent` (it has it), `Fail` (it rejected it) or `Retry` (it never got it: resend).
    /// Ids missing from the answer stay unknown. `Err`: the channel could not be asked now.
    async fn reconcile(&self, _ids: &[uuid::Uuid]) -> Result<Vec<(uuid::Uuid, Outcome)>, String> {
        Err("this channel has no status operation".into())
    }
}

/// Installs the one crypto provider every TLS user in the process shares (ring). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
pub(crate) mod test_ports {
    /// A loopback port that refuses connections for as long as the returned socket lives: it
    /// is bound but never listens, so no other test can take the port meanwhile (binding a
    /// listener and dropping it leaves a port that a concurrent test may be given next).
    pub(crate) fn refusing() -> (tokio::net::TcpSocket, u16) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        (socket, port)
    }
}
