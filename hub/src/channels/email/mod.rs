//! E-mail (`email`): its settings ([`config`]), how the connector is built from them (the relay
//! or the bundled SMTP mock, with the hub's tracking links, [`tracking`]), and its plug-in: the
//! suppression gate before any SMTP session, the 5.1.x/5.7.x follow-up after an attempt, the
//! events of `/ingest/email`, and the tracking routes the hub serves ([`service`]).

pub mod config;
pub mod service;
pub mod tracking;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use axum::http::Method;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use chrono::Utc;
use clm_connectors::{Connector, Outcome, Report};
use clm_contracts::ChannelId;
use clm_mocks::{EmailFeedback, SmtpMock, SmtpMockConfig};
use futures_util::future::BoxFuture;
use tracing::warn;

use super::{Build, Built, Family, Gate, Mocks, Plugin, ReportRequest};
use crate::config::Config;
use crate::metrics::counter;
use crate::state::Shared;
use crate::store::Claimed;
use tracking::Sealer;

/// The e-mail family.
pub static FAMILY: Family = Family::new("email", &[ChannelId::Email], start_mocks, build);

fn start_mocks<'a>(m: &'a mut Mocks<'_>) -> BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        let (config, public_url, sandbox) = m.parts();
        let ingest = &config.channels.email.ingest;
        let feedback = EmailFeedback {
            url: Some(format!(
                "{}{}",
                public_url.trim_end_matches('/'),
                clm_contracts::channels::email::INGEST_PATH
            )),
            hmac_secret: ingest.hmac_secret.clone(),
            basic: ingest
                .basic_username
                .clone()
                .zip(ingest.basic_password.clone()),
            events: vec!["delivered".into()],
            ..EmailFeedback::default()
        };
        let mock_config = SmtpMockConfig {
            feedback,
            ..SmtpMockConfig::default()
        };
        let mock = SmtpMock::start(([127, 0, 0, 1], 0).into(), mock_config)
            .await
            .context("starting the bundled SMTP mock")?;
        sandbox.smtp = Some(mock);
        Ok(())
    })
}

fn build(b: &Build<'_>) -> anyhow::Result<Built> {
    let config = b.config;
    let mut connectors = Vec::new();
    let mut sealer = None;
    if config.channel(ChannelId::Email).is_enabled() {
        // Tracking tokens: the configured secret, or in sandbox mode one made up now. Outside
        // sandbox mode only with a configured secret: links made with a key that changes at
        // every start would break for every customer after a restart.
        let configured = config
            .channels
            .email
            .tracking
            .as_ref()
            .and_then(|t| t.secret.clone());
        sealer = match configured {
            Some(secret) => Some(Sealer::new(&secret)),
            None if config.sandbox => {
                Some(Sealer::new(&format!("{:032x}", rand::random::<u128>())))
            }
            None => None,
        };
        let mock = b.sandbox.and_then(|s| s.smtp.as_ref());
        connectors.push((
            ChannelId::Email,
            connector(config, b.public_url, sealer.as_ref(), mock)?,
        ));
    }
    Ok(Built {
        plugin: Arc::new(EmailPlugin {
            sealer,
            suppressed: AtomicU64::new(0),
            suppressed_skips: AtomicU64::new(0),
            policy_rejections: AtomicU64::new(0),
        }),
        connectors,
    })
}

/// The e-mail hooks and what they count.
pub struct EmailPlugin {
    /// Opens tracking tokens (when e-mail is enabled and has a tracking secret).
    sealer: Option<Sealer>,
    /// Addresses put on the suppression list.
    suppressed: AtomicU64,
    /// E-mails not sent because their address is suppressed.
    suppressed_skips: AtomicU64,
    /// 5.7.x policy rejections by the relay.
    policy_rejections: AtomicU64,
}

#[async_trait]
impl Plugin for EmailPlugin {
    /// E-mail to a suppressed address (hard bounce, complaint, unsubscribe) fails here, before
    /// any SMTP session; the rest go on. Not knowing is not sending: with the list unavailable
    /// the batch waits.
    async fn gate(&self, shared: &Shared, batch: &[Claimed]) -> Gate {
        let addresses: Vec<String> = batch.iter().map(|c| c.comm.recipient.clone()).collect();
        let suppressed = match shared.store.suppressed_among(&addresses).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "suppression list unavailable; e-mails wait");
                return Gate::Closed {
                    wait: Duration::from_secs(5),
                    why: "suppression list unavailable",
                };
            }
        };
        if suppressed.is_empty() {
            return Gate::Open;
        }
        let refused: Vec<(usize, String)> = batch
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                suppressed.contains(&crate::store::normalize_address(&c.comm.recipient))
            })
            .map(|(i, _)| (i, "suppressed".to_owned()))
            .collect();
        self.suppressed_skips
            .fetch_add(refused.len() as u64, Ordering::Relaxed);
        Gate::Refuse(refused)
    }

    /// A 5.1.x answer suppresses the address; 5.7.x is counted.
    async fn after_attempt(&self, shared: &Shared, c: &Claimed, outcome: &Outcome) {
        if clm_connectors::email::is_policy_rejection(outcome) {
            self.policy_rejections.fetch_add(1, Ordering::Relaxed);
        }
        if clm_connectors::email::suppression_of(outcome).is_some() {
            match shared
                .store
                .suppress(
                    &c.comm.recipient,
                    service::HARD_BOUNCE,
                    Some(c.comm.id),
                    Utc::now(),
                )
                .await
            {
                Ok(()) => {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    warn!(communication_id = %c.comm.id, error = %e, "could not suppress a hard-bounced address")
                }
            }
        }
    }

    fn parse_report(&self, _req: &ReportRequest<'_>) -> Result<Report, String> {
        Err("e-mail events are POSTed as JSON bodies".to_owned())
    }

    /// E-mail events are recorded here: they also suppress addresses.
    async fn ingest(&self, shared: &Shared, req: &ReportRequest<'_>) -> Option<Response> {
        if *req.method != Method::POST {
            return None;
        }
        Some(service::ingest_event(shared, self, req.body).await)
    }

    fn routes(self: Arc<Self>, _config: &Config) -> Option<Router<Arc<Shared>>> {
        let router = Router::new()
            .route("/t/o/{token}", get(service::open))
            .route("/t/c/{token}", get(service::click))
            .route(
                "/u/{token}",
                get(service::unsubscribe_page).post(service::unsubscribe),
            )
            .layer(Extension(self));
        Some(crate::api::body_limit(router, crate::api::SMALL_MAX_BODY))
    }

    fn metrics(&self, _shared: &Shared, out: &mut String) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "clm_email_suppressions_total",
                "E-mail addresses put on the suppression list (hard bounce, complaint, unsubscribe).",
                &self.suppressed,
            ),
            (
                "clm_email_suppressed_skips_total",
                "E-mails failed as suppressed without an SMTP session.",
                &self.suppressed_skips,
            ),
            (
                "clm_email_policy_rejections_total",
                "E-mails the relay refused for policy (5.7.x).",
                &self.policy_rejections,
            ),
        ] {
            counter(out, name, help, &[("", g(value))]);
        }
    }
}

/// The e-mail connector: the relay (or the sandbox's SMTP mock), with the hub's tracking links.
pub fn connector(
    config: &Config,
    public_url: &str,
    sealer: Option<&Sealer>,
    sandbox: Option<&SmtpMock>,
) -> anyhow::Result<Arc<dyn Connector>> {
    use clm_connectors::email::{DkimConfig, EmailConnector, Security, SmtpConfig};
    let ch = &config.channels.email;
    let relay = ch.smtp.clone();
    let from = relay.as_ref().map_or_else(
        || "CLM <clm@sandbox.invalid>".to_owned(),
        |r| r.from.clone(),
    );
    let from_domain = from
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>').trim().to_owned())
        .unwrap_or_else(|| "clm.invalid".to_owned());
    let dkim = match relay.as_ref().and_then(|r| r.dkim.clone()) {
        Some(d) => Some(DkimConfig {
            domain: d.domain,
            selector: d.selector,
            private_key_pem: std::fs::read_to_string(&d.private_key_file).with_context(|| {
                format!(
                    "channels.email.smtp.dkim.private_key_file: cannot read {}",
                    d.private_key_file.display()
                )
            })?,
        }),
        None => None,
    };
    let (host, port, security, auth, ca_file) = match (sandbox, &relay) {
        (Some(m), _) => (
            "127.0.0.1".to_owned(),
            m.port(),
            Security::Plain,
            None,
            None,
        ),
        (None, Some(r)) => (
            r.host.clone(),
            r.port,
            match r.security.as_str() {
                "tls" => Security::Implicit,
                "plain" => Security::Plain,
                _ => Security::StartTlsRequired,
            },
            r.username.clone().zip(r.password.clone()),
            r.ca_file.clone(),
        ),
        (None, None) => anyhow::bail!("channels.email.smtp is required"),
    };
    let smtp = SmtpConfig {
        host,
        port,
        security,
        auth,
        ca_file,
        connect_timeout: Duration::from_millis(
            relay.as_ref().map_or(10_000, |r| r.connect_timeout_ms),
        ),
        command_timeout: Duration::from_millis(
            relay.as_ref().map_or(30_000, |r| r.command_timeout_ms),
        ),
        pool_size: relay.as_ref().map_or(8, |r| r.pool_size),
        hello_name: relay
            .as_ref()
            .and_then(|r| r.hello_name.clone())
            .unwrap_or_else(crate::app::hostname),
        from,
        message_id_domain: relay
            .as_ref()
            .and_then(|r| r.message_id_domain.clone())
            .unwrap_or(from_domain),
        dkim,
        greylist_delay: Duration::from_millis(
            relay.as_ref().map_or(300_000, |r| r.greylist_delay_ms),
        ),
    };
    let tracking = ch.tracking.clone().unwrap_or_default();
    let tracker: Option<Arc<dyn clm_connectors::email::Tracking>> = sealer.map(|s| {
        Arc::new(tracking::Tracker {
            sealer: s.clone(),
            base: public_url.trim_end_matches('/').to_owned(),
            open_pixel: tracking.open_pixel,
            click_tracking: tracking.click_tracking,
        }) as Arc<dyn clm_connectors::email::Tracking>
    });
    let connector = EmailConnector::new(smtp, tracker)
        .context("channels.email.smtp: cannot build the connector")?;
    Ok(Arc::new(connector))
}
