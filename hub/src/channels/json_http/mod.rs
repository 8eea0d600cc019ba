//! The HTTP JSON family (`wink`, `elk`; EISSD sends the same way): its settings ([`config`]) and
//! how a connector is built from them (the endpoint, or the bundled mock in sandbox mode).

pub mod config;

use std::sync::Arc;

use anyhow::Context;
use clm_connectors::Connector;
use clm_connectors::json_http::{Endpoint, JsonHttpConnector};
use clm_contracts::ChannelId;
use clm_mocks::ChannelMock;

use crate::config::Config;

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
