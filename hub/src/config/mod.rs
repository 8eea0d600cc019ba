//! Configuration in layers: built-in defaults → TOML file (`--config`) → `CLM_HUB__SECTION__KEY`
//! environment variables; then validation whose messages name the key. Unknown keys are rejected,
//! a key in the wrong channel among them (each channel's settings are its family's own type).
//!
//! With no file at all the hub runs its embedded default: SQLite under `./data`, the in-process
//! queue, and `sandbox = true` (every channel pointed at the bundled in-process mocks).
//!
//! # Layout
//! - this file: [`Config`], loading and layering, the checks across sections;
//! - [`env`]: the `CLM_HUB__…` provider;
//! - [`sections`]: `server`, `store`, `queue`, `coordination`, `dispatcher`, `soap`;
//! - [`channel`]: what every channel has (`enabled`, `policy`, `ingest`) and the `[channels]`
//!   table; each family's own settings live with its plug-in (`crate::channels::<family>`);
//! - [`endpoint`]: the HTTP endpoint the JSON and CRM families share.

pub mod channel;
pub mod endpoint;
mod env;
pub mod sections;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use clm_contracts::ChannelId;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::channels::crm::config::{CrmChannelConfig, SoapChannelConfig};
pub use crate::channels::eissd::config::{DwhConfig, EissdChannelConfig};
pub use crate::channels::email::config::{
    DkimFileConfig, EmailChannelConfig, SmtpRelayConfig, TrackingConfig,
};
pub use crate::channels::json_http::config::HttpJsonChannelConfig;
pub use crate::channels::sms::config::{SmsChannelConfig, SmsDialect, SmsGatewayConfig};
pub use channel::{
    BreakerConfig, ChannelSettings, ChannelsConfig, IngestAuthConfig, PolicyConfig, TimeoutPolicy,
    WindowConfig,
};
pub use clm_connectors::json_http::Auth as AuthConfig;
pub use endpoint::EndpointConfig;
pub use sections::{
    CoordinationConfig, DispatcherConfig, LogConfig, LogFormat, QueueConfig, ServerConfig,
    SoapCaller, SoapConfig, StoreConfig,
};

/// Everything the hub reads at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Point every channel at the bundled in-process mocks, whatever store and queue are used.
    pub sandbox: bool,
    /// Where the embedded default keeps its SQLite file.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub queue: QueueConfig,
    pub coordination: CoordinationConfig,
    pub dispatcher: DispatcherConfig,
    /// The hub's SOAP response service (`/soap/responses`).
    pub soap: SoapConfig,
    /// Per channel (`channels.sms`, …), each its family's settings.
    pub channels: ChannelsConfig,
    /// Log format.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sandbox: true,
            data_dir: PathBuf::from("data"),
            server: ServerConfig::default(),
            store: StoreConfig::default(),
            queue: QueueConfig::default(),
            coordination: CoordinationConfig::default(),
            dispatcher: DispatcherConfig::default(),
            soap: SoapConfig::default(),
            channels: ChannelsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Start-up refused: the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// An unknown key named by its whole path (`channels.wink.smtp`), with what the table takes.
fn unknown_key(e: &figment::Error) -> Option<ConfigError> {
    let figment::error::Kind::UnknownField(field, expected) = &e.kind else {
        return None;
    };
    let mut path = e.path.clone();
    if path.last() != Some(field) {
        path.push(field.clone());
    }
    let place = e
        .metadata
        .as_ref()
        .map(|m| format!(" (in {})", m.name))
        .unwrap_or_default();
    Some(invalid(
        path.join("."),
        format!(
            "unknown key{place}; this table takes: {}",
            expected.join(", ")
        ),
    ))
}

impl Config {
    /// Defaults, then the file (if any), then `CLM_HUB__…` variables from `env`; validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            // A config file means a deliberate deployment: sandbox only if it says so.
            fig = fig.merge(Serialized::default("sandbox", false));
            fig = fig.merge(Toml::file_exact(path));
        }
        Self::extract(fig, env)
    }

    /// As [`Config::load`] with a file holding `toml`, without touching the file system (the
    /// fuzz target `hub_config` and tests).
    pub fn from_toml_str(
        toml: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let fig = Figment::from(Serialized::defaults(Config::default()))
            .merge(Serialized::default("sandbox", false))
            .merge(Toml::string(toml));
        Self::extract(fig, env)
    }

    /// The `CLM_HUB__…` variables of `env` over `fig`, extracted and validated.
    fn extract(
        fig: Figment,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("CLM_HUB__"))
            .collect();
        // Environment values are typed by their look (`42` a number, `true` a boolean), which
        // is wrong for a string key whose value looks like a number (a numeric token): when the
        // key wants a string, that variable is taken as a string and the extraction retried.
        let mut as_string: Vec<Vec<String>> = Vec::new();
        let mut config: Config = loop {
            let attempt = fig.clone().merge(env::provider(&vars, &as_string));
            match attempt.extract::<Config>() {
                Ok(c) => break c,
                Err(e) => {
                    let wants_string = matches!(&e.kind, figment::error::Kind::InvalidType(_, exp) if exp.contains("string"));
                    let from_env = vars.iter().any(|(k, _)| env::path(k) == e.path);
                    if wants_string && from_env && !as_string.contains(&e.path) {
                        as_string.push(e.path.clone());
                        continue;
                    }
                    return Err(unknown_key(&e).unwrap_or(ConfigError::Load(Box::new(e))));
                }
            }
        };
        config.fill_channel_defaults();
        config.validate()?;
        Ok(config)
    }

    /// An unset `enabled` is on for SMS, and in sandbox mode for every channel (each gets its
    /// bundled mock).
    fn fill_channel_defaults(&mut self) {
        let sandbox = self.sandbox;
        for id in ChannelId::ALL {
            let ch = self.channels.get_mut(id);
            if ch.enabled().is_none() {
                ch.set_enabled(id == ChannelId::Sms || sandbox);
            }
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.store.validate()?;
        self.queue.validate()?;
        self.coordination.validate()?;
        self.dispatcher.validate()?;
        self.server.validate(self.sandbox)?;
        self.soap.validate()?;
        for id in ChannelId::ALL {
            channel::validate(self, id)?;
        }
        Ok(())
    }

    /// The store URL, with the embedded default filled in.
    pub fn store_url(&self) -> String {
        match &self.store.url {
            Some(u) if !u.is_empty() => u.clone(),
            _ => format!("sqlite://{}", self.data_dir.join("hub.db").display()),
        }
    }

    /// Whether `/v1` runs without a token (loopback only).
    pub fn api_is_open(&self) -> bool {
        self.server.api_token.is_none()
    }

    /// A channel's settings as every channel has them.
    pub fn channel(&self, id: ChannelId) -> &dyn ChannelSettings {
        self.channels.get(id)
    }

    /// The listener is on this machine only (open routes are allowed there).
    pub fn is_loopback(&self) -> bool {
        self.server.listen.ip().is_loopback()
    }
}
