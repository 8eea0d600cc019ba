//! `[channels.wink]`, `[channels.elk]`: the endpoint, beside what every channel has.

use clm_contracts::ChannelId;
use serde::{Deserialize, Serialize};

use crate::config::channel::channel_settings;
use crate::config::{Config, ConfigError, EndpointConfig, IngestAuthConfig, PolicyConfig};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpJsonChannelConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    pub policy: PolicyConfig,
    /// How the channel's webhooks (`/ingest/<id>`) authenticate.
    pub ingest: IngestAuthConfig,
    /// Base URL, auth and TLS of the channel's API.
    pub endpoint: Option<EndpointConfig>,
}

channel_settings!(HttpJsonChannelConfig, with_ingest);

impl HttpJsonChannelConfig {
    fn unconfigured(&self) -> Option<&'static str> {
        self.endpoint.is_none().then_some("endpoint")
    }

    fn check(
        &self,
        _id: ChannelId,
        _config: &Config,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        match &self.endpoint {
            Some(e) => e.validate(key, false),
            None => Ok(()),
        }
    }
}
