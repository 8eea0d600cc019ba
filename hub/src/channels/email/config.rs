//! `[channels.email]`: the SMTP relay and the tracking the hub serves, beside what every
//! channel has.

use std::path::PathBuf;

use clm_contracts::ChannelId;
use serde::{Deserialize, Serialize};

use crate::config::channel::{channel_settings, unknown_on_timeout};
use crate::config::endpoint::is_loopback_url;
use crate::config::{Config, ConfigError, IngestAuthConfig, PolicyConfig, invalid};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailChannelConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    pub policy: PolicyConfig,
    /// How the relay's events (`/ingest/email`) authenticate.
    pub ingest: IngestAuthConfig,
    /// The SMTP relay.
    pub smtp: Option<SmtpRelayConfig>,
    /// Opens, clicks and unsubscribes served by the hub itself.
    pub tracking: Option<TrackingConfig>,
}

channel_settings!(EmailChannelConfig, with_ingest);

impl Default for EmailChannelConfig {
    fn default() -> Self {
        // Room for the whole SMTP dialogue of one message: connect, then up to seven commands
        // (EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT, DATA) and the final dot, each bounded by the
        // relay's command timeout.
        let policy = PolicyConfig {
            timeout_ms: default_smtp_connect_ms() + 8 * default_smtp_command_ms() + 5_000,
            ..PolicyConfig::default()
        };
        EmailChannelConfig {
            enabled: None,
            policy,
            ingest: IngestAuthConfig::default(),
            smtp: None,
            tracking: None,
        }
    }
}

/// The corporate SMTP relay.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpRelayConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls` (required, the default), `tls` (implicit, port 465) or `plain` (local relays
    /// only).
    #[serde(default = "default_smtp_security")]
    pub security: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// PEM CAs trusted for the relay (besides the public roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `From`, e.g. `"Ростелеком <offers@example.ru>"`.
    pub from: String,
    /// EHLO name; defaults to the host name.
    #[serde(default)]
    pub hello_name: Option<String>,
    /// Domain of the `Message-ID`s; defaults to the `From` address's domain.
    #[serde(default)]
    pub message_id_domain: Option<String>,
    #[serde(default = "default_smtp_connect_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_smtp_command_ms")]
    pub command_timeout_ms: u64,
    #[serde(default = "default_smtp_pool")]
    pub pool_size: usize,
    /// First retry after a greylisting answer (450/451 4.7.1): minutes, not seconds.
    #[serde(default = "default_greylist_ms")]
    pub greylist_delay_ms: u64,
    #[serde(default)]
    pub dkim: Option<DkimFileConfig>,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_security() -> String {
    "starttls".into()
}
pub(crate) fn default_smtp_connect_ms() -> u64 {
    10_000
}
pub(crate) fn default_smtp_command_ms() -> u64 {
    30_000
}
pub(crate) fn default_smtp_pool() -> usize {
    8
}
pub(crate) fn default_greylist_ms() -> u64 {
    300_000
}

impl std::fmt::Debug for SmtpRelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpRelayConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// DKIM signing (RFC 6376).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimFileConfig {
    pub domain: String,
    pub selector: String,
    /// PEM private key (RSA or Ed25519).
    pub private_key_file: PathBuf,
}

/// Tracking the hub serves itself.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingConfig {
    /// Key of the tracking tokens (any length). Required outside sandbox mode; sandbox mode
    /// makes one up per start.
    pub secret: Option<String>,
    /// Add an open pixel to HTML messages.
    pub open_pixel: bool,
    /// Rewrite HTML links into click redirects through the hub.
    pub click_tracking: bool,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            secret: None,
            open_pixel: true,
            click_tracking: true,
        }
    }
}

impl std::fmt::Debug for TrackingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackingConfig")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("open_pixel", &self.open_pixel)
            .field("click_tracking", &self.click_tracking)
            .finish()
    }
}

impl EmailChannelConfig {
    fn unconfigured(&self) -> Option<&'static str> {
        self.smtp.is_none().then_some("smtp")
    }

    fn check(
        &self,
        _id: ChannelId,
        config: &Config,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        if let Some(m) = &self.smtp {
            m.validate(key)?;
            let dialogue = m.connect_timeout_ms + 8 * m.command_timeout_ms;
            if self.policy.timeout_ms <= dialogue {
                return Err(invalid(
                    key("policy.timeout_ms"),
                    format!(
                        "must be above {dialogue} ms (smtp.connect_timeout_ms + 8 × smtp.command_timeout_ms): an attempt cut short mid-dialogue would end unknown"
                    ),
                ));
            }
        }
        unknown_on_timeout(&self.policy, key, "e-mail and the CRM channels")?;
        if let Some(t) = &self.tracking
            && t.secret.as_ref().is_some_and(|s| s.len() < 16)
        {
            return Err(invalid(
                key("tracking.secret"),
                "must be at least 16 characters: tracking links are only as unforgeable as it",
            ));
        }
        if self.enabled == Some(true)
            && !config.sandbox
            && self.tracking.as_ref().is_some_and(|t| t.secret.is_none())
        {
            return Err(invalid(
                key("tracking.secret"),
                "is required for tracking outside sandbox mode (tokens must survive restarts)",
            ));
        }
        Ok(())
    }
}

impl SmtpRelayConfig {
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(invalid(key("smtp.host"), "must not be empty"));
        }
        if !["starttls", "tls", "plain"].contains(&self.security.as_str()) {
            return Err(invalid(
                key("smtp.security"),
                "must be starttls, tls or plain",
            ));
        }
        if self.security == "plain"
            && self.username.is_some()
            && !is_loopback_url(&format!("smtp://{}", self.host))
        {
            return Err(invalid(
                key("smtp.security"),
                "plain with AUTH to another host would send the password in clear; use starttls or tls",
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(invalid(
                key("smtp.password"),
                "username and password go together",
            ));
        }
        if !self.from.contains('@') {
            return Err(invalid(key("smtp.from"), "must contain an address"));
        }
        if self.pool_size == 0 || self.command_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(invalid(
                key("smtp.pool_size"),
                "pool_size and the timeouts must be at least 1",
            ));
        }
        if let Some(d) = &self.dkim
            && !d.private_key_file.is_file()
        {
            return Err(invalid(
                key("smtp.dkim.private_key_file"),
                format!("{} is not a readable file", d.private_key_file.display()),
            ));
        }
        Ok(())
    }
}
