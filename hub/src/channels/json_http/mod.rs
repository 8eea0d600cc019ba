//! The HTTP JSON family (`wink`, `elk`; EISSD sends the same way): its settings ([`config`]), how
//! a connector is built from them (the endpoint, or the bundled mock in sandbox mode), and its
//! plug-in: the webhook parser of `/ingest/wink` and `/ingest/elk`.

pub mod config;

use std::sync::Arc;

use anyhow::Context;
use axum::http::Method;
use clm_connectors::json_http::{Endpoint, JsonHttpConnector};
use clm_connectors::{Connector, Report};
use clm_contracts::ChannelId;
use clm_mocks::{ChannelMock, ChannelMockConfig, ResponsesConfig};
use futures_util::future::BoxFuture;

use super::{Build, Built, Family, Mocks, Plugin, ReportRequest};
use crate::app::Sandbox;
use crate::config::Config;

/// The channels this family serves.
const SERVES: [ChannelId; 2] = [ChannelId::Wink, ChannelId::Elk];

/// The HTTP JSON family.
pub static FAMILY: Family = Family::new("json_http", &SERVES, start_mocks, build);

fn start_mocks<'a>(m: &'a mut Mocks<'_>) -> BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        let (config, public_url, sandbox) = m.parts();
        for id in SERVES {
            if config.channel(id).is_enabled() {
                start_mock(config, public_url, id, sandbox).await?;
            }
        }
        Ok(())
    })
}

fn build(b: &Build<'_>) -> anyhow::Result<Built> {
    let mut connectors = Vec::new();
    for id in SERVES {
        if b.config.channel(id).is_enabled() {
            let mock = b.sandbox.and_then(|s| s.mock(id));
            connectors.push((id, connector(b.config, id, mock)?));
        }
    }
    Ok(Built {
        plugin: Arc::new(JsonHttpPlugin),
        connectors,
    })
}

/// Starts the bundled mock of an HTTP JSON channel (wink, elk, eissd) into `sandbox`: it answers
/// with the channel's typical responses, as webhooks to the hub (wink, elk) or as rows of the DWH
/// table the hub reads (eissd).
pub(crate) async fn start_mock(
    config: &Config,
    public_url: &str,
    id: ChannelId,
    sandbox: &mut Sandbox,
) -> anyhow::Result<()> {
    let ch = config.channel(id);
    let dwh_url = crate::channels::eissd::sandbox_source(config, id);
    let responses = ResponsesConfig {
        webhook_url: dwh_url
            .is_none()
            .then(|| format!("{}/ingest/{id}", public_url.trim_end_matches('/'))),
        token: ch.ingest().and_then(|i| i.token.clone()),
        hmac_secret: ch.ingest().and_then(|i| i.hmac_secret.clone()),
        ..ResponsesConfig::typical(id)
    };
    let mock_config = ChannelMockConfig {
        responses,
        dwh_url,
        ..ChannelMockConfig::default()
    };
    let mock = ChannelMock::start(id, ([127, 0, 0, 1], 0).into(), mock_config)
        .await
        .with_context(|| format!("starting the bundled {id} mock"))?;
    sandbox.channels.insert(id, mock);
    Ok(())
}

/// The Wink and ELK hooks: their signed JSON webhooks at ingest.
pub struct JsonHttpPlugin;

impl Plugin for JsonHttpPlugin {
    fn parse_report(&self, req: &ReportRequest<'_>) -> Result<Report, String> {
        if *req.method != Method::POST {
            return Err(format!(
                "{} webhooks are POSTed as JSON bodies",
                req.channel
            ));
        }
        clm_connectors::json_http::parse_webhook(req.channel, req.body).map_err(|e| e.to_string())
    }

    fn reported_field(&self, channel: ChannelId, field: &'static str) -> String {
        match field {
            "report id" => "event_id".to_owned(),
            "detail" => format!("{channel}_id"),
            other => other.to_owned(),
        }
    }
}

/// The endpoint of an HTTP channel: the sandbox mock's URL, or the configured one with its auth
/// and TLS files.
pub(crate) fn endpoint_of(
    config: &Config,
    id: ChannelId,
    endpoint: Option<&crate::config::EndpointConfig>,
    sandbox_url: Option<String>,
) -> anyhow::Result<Endpoint> {
    crate::config::EndpointConfig::connector_endpoint(
        endpoint,
        sandbox_url,
        config.channel(id).policy(),
        &format!("channels.{id}.endpoint"),
    )
}

/// The connector of an HTTP JSON channel (wink, elk, eissd): its endpoint, or (sandbox) its
/// bundled mock.
pub fn connector(
    config: &Config,
    id: ChannelId,
    sandbox: Option<&ChannelMock>,
) -> anyhow::Result<Arc<dyn Connector>> {
    let configured = match id {
        ChannelId::Eissd => config.channels.eissd.endpoint.as_ref(),
        _ => config
            .channels
            .typed::<crate::config::HttpJsonChannelConfig>(id)
            .and_then(|c| c.endpoint.as_ref()),
    };
    let endpoint = endpoint_of(config, id, configured, sandbox.map(ChannelMock::base_url))?;
    let connector =
        JsonHttpConnector::new(id, endpoint).with_context(|| format!("channels.{id}.endpoint"))?;
    Ok(Arc::new(connector))
}
