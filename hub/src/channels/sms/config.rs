//! `[channels.sms]`: the gateway, beside what every channel has.

use clm_contracts::ChannelId;
use serde::{Deserialize, Serialize};

use crate::config::channel::channel_settings;
use crate::config::{Config, ConfigError, IngestAuthConfig, PolicyConfig, invalid};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsChannelConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    pub policy: PolicyConfig,
    pub ingest: IngestAuthConfig,
    /// The SMS gateway (Kannel or a JSON gateway).
    pub gateway: Option<SmsGatewayConfig>,
}

channel_settings!(SmsChannelConfig, with_ingest);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsGatewayConfig {
    pub dialect: SmsDialect,
    /// Full URL of `sendsms` (Kannel) or of the JSON send endpoint.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Alpha sender name or short number.
    #[serde(default = "default_from")]
    pub from: String,
    /// Kannel `dlr-mask`.
    #[serde(default = "default_dlr_mask")]
    pub dlr_mask: u32,
    /// Ask the gateway for delivery reports.
    #[serde(default = "yes")]
    pub delivery_reports: bool,
}

pub(crate) fn default_from() -> String {
    "CLM".into()
}
fn default_dlr_mask() -> u32 {
    clm_contracts::sms::wire::kannel::DLR_MASK_ALL
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsDialect {
    Kannel,
    Json,
}

impl SmsChannelConfig {
    fn unconfigured(&self) -> Option<&'static str> {
        self.gateway.is_none().then_some("gateway")
    }

    fn check(
        &self,
        _id: ChannelId,
        _config: &Config,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        let Some(g) = &self.gateway else {
            return Ok(());
        };
        if !(g.url.starts_with("http://") || g.url.starts_with("https://")) {
            return Err(invalid(
                key("gateway.url"),
                "must be an http:// or https:// URL",
            ));
        }
        // An alphanumeric sender (TP-OA) holds at most 11 characters (3GPP TS 23.040 §9.1.2.5);
        // a numeric one up to 15 digits.
        let numeric = g
            .from
            .strip_prefix('+')
            .unwrap_or(&g.from)
            .bytes()
            .all(|b| b.is_ascii_digit());
        let max = if numeric { 15 } else { 11 };
        if g.from.is_empty() || g.from.chars().count() > max {
            return Err(invalid(
                key("gateway.from"),
                format!(
                    "must be 1 to {max} characters ({} sender)",
                    if numeric { "numeric" } else { "alphanumeric" }
                ),
            ));
        }
        if g.delivery_reports && g.dialect == SmsDialect::Kannel && g.dlr_mask & 3 == 0 {
            return Err(invalid(
                key("gateway.dlr_mask"),
                "asks for no final report (bit 1 delivered or 2 undelivered): nothing could become delivered",
            ));
        }
        if g.delivery_reports
            && g.dialect == SmsDialect::Kannel
            && self.ingest.token.is_none()
            && self.ingest.hmac_secret.is_some()
        {
            return Err(invalid(
                key("ingest.token"),
                "Kannel cannot sign its delivery reports: with the kannel dialect set a token (it travels in the dlr-url)",
            ));
        }
        Ok(())
    }
}
