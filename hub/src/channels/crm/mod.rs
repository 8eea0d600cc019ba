//! The CRM family (`sap_crm`, `amdocs`, `crm_b2c`): its settings ([`config`]) and how a
//! connector is built from them (SOAP bundles to the service, or the bundled CRM mock).

pub mod config;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clm_connectors::Connector;
use clm_connectors::crm::{CrmConfig, CrmConnector};
use clm_contracts::ChannelId;

use crate::config::Config;

/// A CRM channel's connector: its SOAP service, or (sandbox) the bundled CRM mock at
/// `sandbox_url`.
pub fn connector(
    config: &Config,
    id: ChannelId,
    sandbox_url: Option<String>,
) -> anyhow::Result<Arc<dyn Connector>> {
    let ch = config
        .channels
        .typed::<crate::config::CrmChannelConfig>(id)
        .context("not a CRM channel")?;
    let endpoint =
        crate::channels::json_http::endpoint_of(config, id, ch.endpoint.as_ref(), sandbox_url)?;
    let ws_security = ch
        .endpoint
        .as_ref()
        .and_then(|e| e.auth.as_ref())
        .and_then(clm_connectors::json_http::Auth::ws_security);
    let sc = &ch.soap;
    let crm = CrmConfig {
        endpoint,
        ws_security,
        version: if sc.version == "1.2" {
            clm_connectors::soap::SoapVersion::V12
        } else {
            clm_connectors::soap::SoapVersion::V11
        },
        bundle_size: sc.bundle_size,
        bundle_wait: Duration::from_millis(sc.bundle_wait_ms),
        parallel_bundles: sc.parallel_bundles,
        request_timeout: Duration::from_millis(sc.request_timeout_ms),
        reconcile_attempts: sc.reconcile_attempts,
        attempt_timeout: Duration::from_millis(ch.policy.timeout_ms),
    };
    let connector =
        CrmConnector::new(id, crm).with_context(|| format!("channels.{id}.endpoint"))?;
    Ok(Arc::new(connector))
}
