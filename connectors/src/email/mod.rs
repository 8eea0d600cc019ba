//! The e-mail channel's sending side: one SMTP transaction per communication through the
//! corporate relay (lettre's SMTP connection on tokio, rustls with ring).
//!
//! - `message`: the message (RFC 5322 / MIME): `From`, `To` (display name from the
//!   attribute `name`), `Subject`, `Date`, a `Message-ID` that names the communication
//!   ([`message_id`]), `List-Unsubscribe` + `List-Unsubscribe-Post` (RFC 2369, RFC 8058) when the
//!   hub's [`Tracking`] gives a URL, text and HTML as `multipart/alternative`; non-ASCII headers in
//!   RFC 2047 encoded words, UTF-8 bodies; DKIM-signed (relaxed/relaxed) when configured.
//! - `dkim`: the signing key from PEM (RSA PKCS#1 or PKCS#8, Ed25519 PKCS#8).
//! - `relay`: the SMTP dialogue, driven step by step so that every failure knows its stage;
//!   a small pool of idle connections; STARTTLS / implicit TLS / plain, AUTH, timeouts.
//! - `classify`: the one place where SMTP answers become [`Outcome`]s (RFC 5321, RFC 3463).
//!
//! Nothing this module logs or returns carries the recipient's address or a secret.

mod classify;
mod dkim;
mod message;
mod relay;

#[cfg(test)]
mod relay_tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use clm_contracts::{ChannelId, Communication};
use uuid::Uuid;

use crate::Connector;
use crate::outcome::Outcome;

use classify::{HARD_BOUNCE, POLICY_REJECTION};

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain TCP, then `STARTTLS` (RFC 3207); a relay that does not offer it is not used.
    StartTlsRequired,
    /// TLS from the first byte (RFC 8314 "implicit TLS", port 465).
    Implicit,
    /// No TLS at all: only for a relay on the same host or a test relay.
    Plain,
}

/// DKIM signing (RFC 6376): `d=domain`, `s=selector`, the private key as PEM: RSA (PKCS#1
/// `BEGIN RSA PRIVATE KEY` or PKCS#8 `BEGIN PRIVATE KEY`, 1024 bits at least) or Ed25519
/// (PKCS#8, RFC 8463).
#[derive(Clone, PartialEq, Eq)]
pub struct DkimConfig {
    pub domain: String,
    pub selector: String,
    pub private_key_pem: String,
}

impl std::fmt::Debug for DkimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimConfig")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// Where and how to reach the relay, and what every message says about its sender.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// `(username, password)` for `AUTH PLAIN` / `AUTH LOGIN` (RFC 4954).
    pub auth: Option<(String, String)>,
    /// PEM CA certificates trusted in addition to the system's (a private relay CA).
    pub ca_file: Option<PathBuf>,
    /// TCP connect (and TLS handshake, greeting, EHLO: plus one `command_timeout`).
    pub connect_timeout: Duration,
    /// Each SMTP command, and the message content up to the reply to its final `.`.
    pub command_timeout: Duration,
    /// Idle connections kept for the next messages; 0: a new session per message.
    pub pool_size: usize,
    /// The `EHLO` name (RFC 5321 §4.1.4: our host's FQDN, or an address literal).
    pub hello_name: String,
    /// `From` header and envelope sender, e.g. `CLM <offers@example.ru>`; the name may be Cyrillic.
    pub from: String,
    /// The right-hand side of every `Message-ID` ([`message_id`]).
    pub message_id_domain: String,
    pub dkim: Option<DkimConfig>,
    /// The first retry after a greylisting answer (450/451/452 with 4.7.1 or "greylist"),
    /// e.g. 5 minutes: greylisting relays refuse retries that come back within seconds.
    pub greylist_delay: Duration,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field(
                "auth",
                &self.auth.as_ref().map(|(user, _)| (user, "<redacted>")),
            )
            .field("ca_file", &self.ca_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("pool_size", &self.pool_size)
            .field("hello_name", &self.hello_name)
            .field("from", &self.from)
            .field("message_id_domain", &self.message_id_domain)
            .field("dkim", &self.dkim)
            .field("greylist_delay", &self.greylist_delay)
            .finish()
    }
}

/// Hub-side links of one message: the connector asks for them when it builds the message.
pub trait Tracking: Send + Sync + 'static {
    /// https URL for List-Unsubscribe (RFC 2369) + List-Unsubscribe-Post (RFC 8058); None: no headers.
    fn unsubscribe_url(&self, comm: &Communication) -> Option<String>;
    /// The HTML to send: links rewritten to click redirects and an open pixel added (or unchanged).
    fn rewrite_html(&self, comm: &Communication, html: &str) -> String;
}

/// Why the connector could not be built; the message names the setting and never a secret.
#[derive(Debug, thiserror::Error)]
pub enum EmailBuildError {
    #[error("host: {0}")]
    Host(String),
    #[error("port: must not be 0")]
    Port,
    #[error("from: {0}")]
    From(String),
    #[error("hello_name: {0}")]
    HelloName(String),
    #[error("message_id_domain: {0}")]
    MessageIdDomain(String),
    #[error("auth: {0}")]
    Auth(String),
    #[error("ca_file `{}`: {problem}", path.display())]
    CaFile { path: PathBuf, problem: String },
    #[error("tls: {0}")]
    Tls(String),
    #[error("dkim: {0}")]
    Dkim(String),
    #[error("{setting}: must be longer than zero")]
    Timeout { setting: &'static str },
}

/// The e-mail connector: builds each communication's message and sends it to the relay.
pub struct EmailConnector {
    composer: message::Composer,
    relay: relay::Relay,
    greylist_delay: Duration,
}

impl std::fmt::Debug for EmailConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConnector")
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

impl EmailConnector {
    pub fn new(
        config: SmtpConfig,
        tracking: Option<Arc<dyn Tracking>>,
    ) -> Result<Self, EmailBuildError> {
        let composer = message::Composer::new(&config, tracking)?;
        let relay = relay::Relay::new(&config)?;
        Ok(EmailConnector {
            composer,
            relay,
            greylist_delay: config.greylist_delay,
        })
    }

    /// Idle connections to the relay right now (for tests and the channel view).
    pub fn idle_connections(&self) -> usize {
        self.relay.idle_connections()
    }
}

#[async_trait]
impl Connector for EmailConnector {
    fn channel(&self) -> ChannelId {
        ChannelId::Email
    }

    async fn send(&self, comm: &Communication) -> Outcome {
        if comm.channel != ChannelId::Email {
            return Outcome::Fail {
                reason: format!(
                    "communication is for channel `{}`, this connector sends e-mail",
                    comm.channel
                ),
                answer: String::new(),
            };
        }
        let built = match self.composer.build(comm, SystemTime::now()) {
            Ok(b) => b,
            Err(problem) => {
                return Outcome::Fail {
                    reason: format!("cannot build the e-mail: {problem}"),
                    answer: String::new(),
                };
            }
        };
        let outcome = match self
            .relay
            .deliver(&built.from, &built.to, &built.bytes)
            .await
        {
            Ok(reply) => classify::sent(&reply, &built.message_id, &comm.recipient),
            Err((stage, failure)) => {
                let outcome =
                    classify::classify(stage, &failure, self.greylist_delay, &comm.recipient);
                tracing::debug!(
                    communication = %comm.id,
                    stage = ?stage,
                    answer = outcome.answer(),
                    "e-mail not taken by the relay"
                );
                outcome
            }
        };
        if matches!(outcome, Outcome::Unknown { .. }) {
            tracing::warn!(
                communication = %comm.id,
                answer = outcome.answer(),
                "no verdict from the relay after the end of the message; it may have it"
            );
        }
        outcome
    }
}

/// The `Message-ID` of a communication's e-mail: `<{uuid-simple}.clm@{domain}>` (RFC 5322
/// §3.6.4). Bounces, DSNs and feedback reports quote it, so a response finds its communication.
pub fn message_id(comm_id: Uuid, domain: &str) -> String {
    format!("<{}.clm@{}>", comm_id.simple(), domain)
}

/// The communication of a [`message_id`], with or without the angle brackets.
pub fn communication_of_message_id(message_id: &str) -> Option<Uuid> {
    let s = message_id.trim();
    let s = s
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s);
    let (left, domain) = s.rsplit_once('@')?;
    if domain.is_empty() {
        return None;
    }
    let (id, tag) = left.rsplit_once('.')?;
    if !tag.eq_ignore_ascii_case("clm") || id.len() != 32 {
        return None;
    }
    Uuid::try_parse(id).ok()
}

/// Why an address is no longer written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suppress {
    /// The relay said the mailbox or its domain does not exist (5.1.x).
    HardBounce,
    /// The recipient reported the message as spam (feedback loop).
    Complaint,
    /// The recipient unsubscribed.
    Unsubscribe,
}

impl Suppress {
    /// `hard_bounce`, `complaint`, `unsubscribe`: the stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Suppress::HardBounce => "hard_bounce",
            Suppress::Complaint => "complaint",
            Suppress::Unsubscribe => "unsubscribe",
        }
    }
}

/// What a send outcome says about the address: Some(HardBounce) for a 5.1.x rejection (bad mailbox/domain).
pub fn suppression_of(outcome: &Outcome) -> Option<Suppress> {
    match outcome {
        Outcome::Fail { reason, .. } if reason.starts_with(HARD_BOUNCE) => {
            Some(Suppress::HardBounce)
        }
        _ => None,
    }
}

/// Whether the outcome was a 5.7.x policy rejection (the hub counts those).
pub fn is_policy_rejection(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Fail { reason, .. } if reason.starts_with(POLICY_REJECTION))
}

/// `text` on one line and shortened, with every e-mail address replaced by `[address]`: what a
/// relay's or a bounce's diagnostic may carry before it is stored or logged.
pub fn mask_addresses(text: &str) -> String {
    classify::mask(text, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip() {
        let id = Uuid::parse_str("0190a0c2-7b8e-7c1d-9f00-0123456789ab").unwrap();
        let mid = message_id(id, "mail.example.ru");
        assert_eq!(
            mid,
            "<0190a0c27b8e7c1d9f000123456789ab.clm@mail.example.ru>"
        );
        assert_eq!(communication_of_message_id(&mid), Some(id));
        assert_eq!(
            communication_of_message_id(" 0190a0c27b8e7c1d9f000123456789ab.clm@mail.example.ru "),
            Some(id)
        );
        assert_eq!(
            communication_of_message_id("<0190A0C27B8E7C1D9F000123456789AB.CLM@mail.example.ru>"),
            Some(id)
        );
        for other in [
            "<0190a0c27b8e7c1d9f000123456789ab@mail.example.ru>",
            "<0190a0c27b8e7c1d9f000123456789ab.xyz@mail.example.ru>",
            "<0190a0c2-7b8e-7c1d-9f00-0123456789ab.clm@mail.example.ru>",
            "<0190a0c27b8e7c1d9f000123456789ab.clm@>",
            "<CAF=abc@mail.gmail.com>",
            "",
        ] {
            assert_eq!(communication_of_message_id(other), None, "{other}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let config = testutil::config("127.0.0.1", 25);
        let config = SmtpConfig {
            auth: Some(("clm".into(), "hunter2".into())),
            dkim: Some(DkimConfig {
                domain: "example.ru".into(),
                selector: "s1".into(),
                private_key_pem: testutil::RSA_PKCS1_PEM.into(),
            }),
            ..config
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("MII"), "{shown}");
        assert!(shown.contains("clm") && shown.contains("s1"));
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let ok = testutil::config("127.0.0.1", 25);
        let cases: Vec<(SmtpConfig, &str)> = vec![
            (
                SmtpConfig {
                    from: "not a mailbox".into(),
                    ..ok.clone()
                },
                "from:",
            ),
            (
                SmtpConfig {
                    port: 0,
                    ..ok.clone()
                },
                "port:",
            ),
            (
                SmtpConfig {
                    host: " ".into(),
                    ..ok.clone()
                },
                "host:",
            ),
            (
                SmtpConfig {
                    hello_name: "a b".into(),
                    ..ok.clone()
                },
                "hello_name:",
            ),
            (
                SmtpConfig {
                    message_id_domain: "x y".into(),
                    ..ok.clone()
                },
                "message_id_domain:",
            ),
            (
                SmtpConfig {
                    command_timeout: Duration::ZERO,
                    ..ok.clone()
                },
                "command_timeout:",
            ),
            (
                SmtpConfig {
                    auth: Some((String::new(), "x".into())),
                    ..ok.clone()
                },
                "auth:",
            ),
            (
                SmtpConfig {
                    security: Security::StartTlsRequired,
                    ca_file: Some("/nonexistent/ca.pem".into()),
                    ..ok.clone()
                },
                "ca_file `/nonexistent/ca.pem`",
            ),
            (
                SmtpConfig {
                    ca_file: Some("/nonexistent/ca.pem".into()),
                    ..ok.clone()
                },
                "ca_file",
            ),
            (
                SmtpConfig {
                    dkim: Some(DkimConfig {
                        domain: "example.ru".into(),
                        selector: "s1".into(),
                        private_key_pem:
                            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
                    }),
                    ..ok.clone()
                },
                "dkim:",
            ),
        ];
        for (config, want) in cases {
            let err = EmailConnector::new(config, None).unwrap_err().to_string();
            assert!(err.starts_with(want), "{want}: {err}");
        }
        EmailConnector::new(ok, None).unwrap();
    }

    #[tokio::test]
    async fn a_communication_for_another_channel_fails_without_a_session() {
        let connector = EmailConnector::new(testutil::config("127.0.0.1", 9), None).unwrap();
        let mut comm = testutil::comm("ivan@example.ru");
        comm.channel = ChannelId::Sms;
        let o = connector.send(&comm).await;
        assert!(matches!(o, Outcome::Fail { .. }), "{o:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_retries() {
        crate::install_crypto_provider();
        let (_refusing, port) = crate::test_ports::refusing();
        let connector = EmailConnector::new(testutil::config("127.0.0.1", port), None).unwrap();
        let o = connector.send(&testutil::comm("ivan@example.ru")).await;
        let Outcome::Retry { reason, .. } = &o else {
            panic!("{o:?}")
        };
        assert!(reason.contains("connect"), "{reason}");
    }

    #[tokio::test]
    async fn a_communication_with_only_a_template_fails_without_a_session() {
        let connector = EmailConnector::new(testutil::config("127.0.0.1", 9), None).unwrap();
        let mut comm = testutil::comm("ivan@example.ru");
        comm.content.text = None;
        comm.content.html = None;
        comm.content.template_id = Some("offer-1".into());
        let o = connector.send(&comm).await;
        let Outcome::Fail { reason, .. } = &o else {
            panic!("{o:?}")
        };
        assert!(reason.contains("text or html"), "{reason}");
    }
}
