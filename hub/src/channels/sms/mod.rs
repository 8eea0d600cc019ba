//! The SMS family (`sms`): its settings ([`config`]) and how its connector is built from them
//! (Kannel or a JSON gateway; the bundled SMS mock in sandbox mode).

pub mod config;

use std::sync::Arc;

use anyhow::Context;
use clm_connectors::Connector;
use clm_connectors::sms::{Dialect, SmsConfig, SmsConnector};
use clm_mocks::SmsMock;

use crate::config::{Config, SmsDialect};

/// The SMS connector: the configured gateway, or (sandbox) the bundled SMS mock.
pub fn connector(
    config: &Config,
    public_url: &str,
    sandbox: Option<&SmsMock>,
) -> anyhow::Result<Arc<dyn Connector>> {
    let ch = &config.channels.sms;
    let g = ch.gateway.as_ref();
    let dialect = match g.map(|g| g.dialect) {
        Some(SmsDialect::Json) => Dialect::Json,
        _ => Dialect::Kannel,
    };
    let url = match (sandbox, dialect) {
        (Some(m), Dialect::Kannel) => m.kannel_url(),
        (Some(m), Dialect::Json) => m.json_url(),
        (None, _) => g.context("channels.sms.gateway is required")?.url.clone(),
    };
    let (username, password) = match (sandbox, g) {
        (None, Some(g)) => (g.username.clone(), g.password.clone()),
        _ => (None, None),
    };
    let reports = g.is_none_or(|g| g.delivery_reports);
    let cfg = SmsConfig {
        dialect,
        url,
        username,
        password,
        from: g.map_or_else(|| "CLM".to_owned(), |g| g.from.clone()),
        dlr_mask: g.map_or(clm_contracts::sms::wire::kannel::DLR_MASK_ALL, |g| {
            g.dlr_mask
        }),
        dlr_url: reports.then(|| format!("{}/ingest/sms", public_url.trim_end_matches('/'))),
        dlr_token: ch.ingest.token.clone(),
        connect_timeout: crate::config::endpoint::connect_timeout(ch.policy.timeout_ms),
        pool_size: ch.policy.concurrency as usize,
    };
    Ok(Arc::new(
        SmsConnector::new(cfg).context("building the SMS HTTP client")?,
    ))
}
