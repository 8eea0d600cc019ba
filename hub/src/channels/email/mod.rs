//! E-mail (`email`): its settings ([`config`]) and how the connector is built from them (the
//! relay or the bundled SMTP mock, with the hub's tracking links).

pub mod config;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clm_connectors::Connector;
use clm_mocks::SmtpMock;

use crate::config::Config;

/// The e-mail connector: the relay (or the sandbox's SMTP mock), with the hub's tracking links.
pub fn connector(
    config: &Config,
    public_url: &str,
    sealer: Option<&crate::email::Sealer>,
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
        Arc::new(crate::email::Tracker {
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
