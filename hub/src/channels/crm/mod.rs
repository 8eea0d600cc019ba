//! The CRM family (`sap_crm`, `amdocs`, `crm_b2c`): its settings ([`config`]), how a connector
//! is built from them (SOAP bundles to the service, or the bundled CRM mock), and its plug-in:
//! the SOAP response service the CRMs call back ([`service`], `/soap/{service}`) and the
//! reconciler of bundles left `unknown` ([`reconcile`], a singleton job per channel).

pub mod config;
pub mod reconcile;
pub mod service;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use axum::{Extension, Router};
use clm_connectors::Connector;
use clm_connectors::crm::{CrmConfig, CrmConnector};
use clm_contracts::ChannelId;
use clm_mocks::{CrmCallbacks, CrmKind, CrmMock, CrmMockConfig};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{Build, Built, Family, Job, Mocks, Plugin};
use crate::config::Config;
use crate::state::Shared;

/// The channels this family serves.
const SERVES: [ChannelId; 3] = [ChannelId::SapCrm, ChannelId::Amdocs, ChannelId::CrmB2c];

/// The CRM family.
pub static FAMILY: Family = Family::new("crm", &SERVES, start_mocks, build);

fn start_mocks<'a>(m: &'a mut Mocks<'_>) -> BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        let (config, public_url, sandbox) = m.parts();
        for kind in [CrmKind::SapCrm, CrmKind::Esb] {
            let wanted = SERVES
                .iter()
                .any(|id| mock_kind(*id) == Some(kind) && config.channel(*id).is_enabled());
            if !wanted {
                continue;
            }
            let mock = start_mock(config, public_url, kind).await?;
            match kind {
                CrmKind::SapCrm => sandbox.sap_crm = Some(mock),
                CrmKind::Esb => sandbox.crm_esb = Some(mock),
            }
        }
        Ok(())
    })
}

fn build(b: &Build<'_>) -> anyhow::Result<Built> {
    let mut connectors = Vec::new();
    for id in SERVES {
        if b.config.channel(id).is_enabled() {
            let mock = b.sandbox.and_then(|s| s.crm_mock(id)).map(CrmMock::url);
            connectors.push((id, connector(b.config, id, mock)?));
        }
    }
    Ok(Built {
        plugin: Arc::new(CrmPlugin::default()),
        connectors,
    })
}

/// Which bundled mock a CRM channel sends to in sandbox mode: SAP CRM's own service, or the CRM
/// ESB (Amdocs, CRM B2C).
pub(crate) fn mock_kind(id: ChannelId) -> Option<CrmKind> {
    match id {
        ChannelId::SapCrm => Some(CrmKind::SapCrm),
        ChannelId::Amdocs | ChannelId::CrmB2c => Some(CrmKind::Esb),
        _ => None,
    }
}

/// A CRM mock that calls the hub's response service back for every accepted item.
async fn start_mock(config: &Config, public_url: &str, kind: CrmKind) -> anyhow::Result<CrmMock> {
    let systems: &[&str] = match kind {
        CrmKind::SapCrm => &["SAP_CRM"],
        CrmKind::Esb => &["AMDOCS", "CRM_B2C"],
    };
    // With callers configured, the mock calls as the first one allowed for its systems.
    let auth = config
        .soap
        .callers
        .iter()
        .find(|c| systems.iter().all(|s| c.systems.iter().any(|x| x == s)))
        .map(|c| (c.username.clone(), c.password.clone()));
    let callbacks = CrmCallbacks {
        url: Some(format!(
            "{}/soap/{}",
            public_url.trim_end_matches('/'),
            service::RESPONSES
        )),
        auth,
        kinds: vec!["Delivered".into(), "OfferAccepted".into()],
        ..CrmCallbacks::default()
    };
    let mock_config = CrmMockConfig {
        callbacks,
        ..CrmMockConfig::default()
    };
    CrmMock::start(kind, ([127, 0, 0, 1], 0).into(), mock_config)
        .await
        .with_context(|| format!("starting the bundled {kind:?} mock"))
}

/// The CRM hooks: the SOAP response service (served whether or not a CRM channel is enabled
/// here: another instance may send, this one may take the callbacks), the reconcilers, and the
/// fault count.
#[derive(Default)]
pub struct CrmPlugin {
    /// SOAP faults the response service answered with.
    soap_faults: AtomicU64,
}

impl Plugin for CrmPlugin {
    fn routes(self: Arc<Self>, config: &Config) -> Option<Router<Arc<Shared>>> {
        let router = Router::new()
            .route("/soap/{service}", get(service::get).post(service::post))
            .layer(Extension(self));
        let max = config
            .soap
            .max_bytes
            .saturating_add(crate::api::SOAP_BODY_SLACK);
        Some(crate::api::body_limit(router, max))
    }

    fn jobs(self: Arc<Self>, shared: &Arc<Shared>, shutdown: &CancellationToken) -> Vec<Job> {
        let mut jobs = Vec::new();
        for id in SERVES {
            let (Some(ch), Some(crm)) = (
                shared.channels.get(&id),
                shared
                    .config
                    .channels
                    .typed::<crate::config::CrmChannelConfig>(id),
            ) else {
                continue;
            };
            let sc = &crm.soap;
            if ch.connector.reconciles() && sc.reconcile_every_ms > 0 {
                jobs.push(Job {
                    name: format!("reconcile-{id}"),
                    task: tokio::spawn(reconcile::run(
                        Arc::clone(shared),
                        Arc::clone(ch),
                        Duration::from_millis(sc.reconcile_every_ms),
                        // Give the CRM at least one request's time with the lost bundle first.
                        Duration::from_millis(sc.request_timeout_ms),
                        shutdown.clone(),
                    )),
                });
            }
        }
        jobs
    }

    fn metrics(&self, _shared: &Shared, out: &mut String) {
        crate::metrics::counter(
            out,
            "clm_soap_faults_total",
            "SOAP faults the response service answered with.",
            &[("", self.soap_faults.load(Ordering::Relaxed))],
        );
    }
}

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
