//! What every channel has — `enabled`, `policy` (rate, retries, breaker, window) and, where the
//! channel reports over `/ingest`, `ingest` — and the `[channels]` table holding each channel's
//! settings as its family's own type (`crate::channels::<family>::config`). Each family type
//! denies unknown fields, so `channels.wink.smtp` is refused by serde itself, with its path.

use std::any::Any;

use clm_contracts::ChannelId;
use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, invalid};
use crate::channels::crm::config::CrmChannelConfig;
use crate::channels::eissd::config::EissdChannelConfig;
use crate::channels::email::config::EmailChannelConfig;
use crate::channels::json_http::config::HttpJsonChannelConfig;
use crate::channels::sms::config::SmsChannelConfig;

/// A channel's settings, whatever its family.
pub trait ChannelSettings: Any + Send + Sync + std::fmt::Debug {
    /// Unset means: on in sandbox mode and for `sms`; off otherwise ([`Config::load`] fills it).
    fn enabled(&self) -> Option<bool>;
    fn set_enabled(&mut self, on: bool);
    fn is_enabled(&self) -> bool {
        self.enabled() == Some(true)
    }
    fn policy(&self) -> &PolicyConfig;
    fn policy_mut(&mut self) -> &mut PolicyConfig;
    /// How `/ingest/<channel>` callers authenticate; `None` for a channel without that route
    /// (its responses come another way: SOAP callbacks, a DWH table).
    fn ingest(&self) -> Option<&IngestAuthConfig>;
    fn ingest_mut(&mut self) -> Option<&mut IngestAuthConfig>;
    /// The key an enabled channel needs outside sandbox mode, when it is not set.
    fn unconfigured(&self) -> Option<&'static str>;
    /// The family's own checks; `key("x")` is `channels.<id>.x`.
    fn check(
        &self,
        id: ChannelId,
        config: &Config,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Implements [`ChannelSettings`] for a family type with the fields `enabled`, `policy` and
/// (`with_ingest`) `ingest`, and inherent `unconfigured` and `check`.
macro_rules! channel_settings {
    ($t:ty, with_ingest) => {
        $crate::config::channel::channel_settings!(@impl $t,
            fn ingest(&self) -> Option<&$crate::config::IngestAuthConfig> { Some(&self.ingest) }
            fn ingest_mut(&mut self) -> Option<&mut $crate::config::IngestAuthConfig> { Some(&mut self.ingest) }
        );
    };
    ($t:ty) => {
        $crate::config::channel::channel_settings!(@impl $t,
            fn ingest(&self) -> Option<&$crate::config::IngestAuthConfig> { None }
            fn ingest_mut(&mut self) -> Option<&mut $crate::config::IngestAuthConfig> { None }
        );
    };
    (@impl $t:ty, $($ingest:item)*) => {
        impl $crate::config::ChannelSettings for $t {
            fn enabled(&self) -> Option<bool> {
                self.enabled
            }
            fn set_enabled(&mut self, on: bool) {
                self.enabled = Some(on);
            }
            fn policy(&self) -> &$crate::config::PolicyConfig {
                &self.policy
            }
            fn policy_mut(&mut self) -> &mut $crate::config::PolicyConfig {
                &mut self.policy
            }
            $($ingest)*
            fn unconfigured(&self) -> Option<&'static str> {
                <$t>::unconfigured(self)
            }
            fn check(
                &self,
                id: clm_contracts::ChannelId,
                config: &$crate::config::Config,
                key: &dyn Fn(&str) -> String,
            ) -> Result<(), $crate::config::ConfigError> {
                <$t>::check(self, id, config, key)
            }
            fn as_any(&self) -> &dyn std::any::Any {
                self
            }
            fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
                self
            }
        }
    };
}
pub(crate) use channel_settings;

/// `[channels.<id>]`: one field per channel id, each of its family's type. Adding a channel to
/// a family adds its field here and its two arms below.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    pub sms: SmsChannelConfig,
    pub wink: HttpJsonChannelConfig,
    pub elk: HttpJsonChannelConfig,
    pub eissd: EissdChannelConfig,
    pub sap_crm: CrmChannelConfig,
    pub amdocs: CrmChannelConfig,
    pub crm_b2c: CrmChannelConfig,
    pub email: EmailChannelConfig,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            sms: SmsChannelConfig {
                enabled: Some(true),
                ..SmsChannelConfig::default()
            },
            wink: HttpJsonChannelConfig::default(),
            elk: HttpJsonChannelConfig::default(),
            eissd: EissdChannelConfig::default(),
            sap_crm: CrmChannelConfig::default(),
            amdocs: CrmChannelConfig::default(),
            crm_b2c: CrmChannelConfig::default(),
            email: EmailChannelConfig::default(),
        }
    }
}

impl ChannelsConfig {
    pub fn get(&self, id: ChannelId) -> &dyn ChannelSettings {
        match id {
            ChannelId::Sms => &self.sms,
            ChannelId::Wink => &self.wink,
            ChannelId::Elk => &self.elk,
            ChannelId::Eissd => &self.eissd,
            ChannelId::SapCrm => &self.sap_crm,
            ChannelId::Amdocs => &self.amdocs,
            ChannelId::CrmB2c => &self.crm_b2c,
            ChannelId::Email => &self.email,
        }
    }

    pub fn get_mut(&mut self, id: ChannelId) -> &mut dyn ChannelSettings {
        match id {
            ChannelId::Sms => &mut self.sms,
            ChannelId::Wink => &mut self.wink,
            ChannelId::Elk => &mut self.elk,
            ChannelId::Eissd => &mut self.eissd,
            ChannelId::SapCrm => &mut self.sap_crm,
            ChannelId::Amdocs => &mut self.amdocs,
            ChannelId::CrmB2c => &mut self.crm_b2c,
            ChannelId::Email => &mut self.email,
        }
    }

    /// A channel's settings as its family's type (`None` if `T` is not its family's).
    pub fn typed<T: ChannelSettings>(&self, id: ChannelId) -> Option<&T> {
        self.get(id).as_any().downcast_ref::<T>()
    }

    pub fn typed_mut<T: ChannelSettings>(&mut self, id: ChannelId) -> Option<&mut T> {
        self.get_mut(id).as_any_mut().downcast_mut::<T>()
    }
}

/// The one request-policy block every channel has.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Messages per second.
    pub rate: f64,
    /// Messages that may go at once above the rate.
    pub burst: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Per-attempt timeout.
    pub timeout_ms: u64,
    /// Attempts before a retryable failure becomes `failed`.
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt, full jitter, capped by `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// What a timeout after the request went out means: `unknown` (do not resend blindly) or `retry`.
    pub on_timeout: TimeoutPolicy,
    pub breaker: BreakerConfig,
    pub window: Option<WindowConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            rate: 100.0,
            burst: 100,
            concurrency: 64,
            timeout_ms: 10_000,
            max_attempts: 5,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 600_000,
            on_timeout: TimeoutPolicy::Unknown,
            breaker: BreakerConfig::default(),
            window: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutPolicy {
    Unknown,
    Retry,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive retryable failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before one probe is let through.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 20,
            open_ms: 30_000,
        }
    }
}

/// Quiet hours: sends happen only between `start` and `end` local time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// `HH:MM`, inclusive.
    pub start: String,
    /// `HH:MM`, exclusive; may be earlier than `start` (a window across midnight).
    pub end: String,
    /// Zone used when the communication carries none.
    #[serde(default = "default_tz")]
    pub timezone: String,
}

fn default_tz() -> String {
    "Europe/Moscow".into()
}

/// How `/ingest/<channel>` callers prove who they are. Either may be set; both may.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestAuthConfig {
    /// Shared token, as `?token=` or header `X-CLM-Token`.
    pub token: Option<String>,
    /// HMAC-SHA256 secret; header `X-CLM-Signature: sha256=<hex>` of the body (of the raw query for GET).
    pub hmac_secret: Option<String>,
    /// HTTP Basic credentials (`Authorization: Basic`), for senders that can do only that.
    pub basic_username: Option<String>,
    pub basic_password: Option<String>,
}

impl IngestAuthConfig {
    pub fn is_open(&self) -> bool {
        self.token.is_none() && self.hmac_secret.is_none() && self.basic_username.is_none()
    }
}

/// A timeout that ends `unknown` must stay so for channels whose unknowns are deliberate.
pub(crate) fn unknown_on_timeout(
    policy: &PolicyConfig,
    key: &dyn Fn(&str) -> String,
    channels: &str,
) -> Result<(), ConfigError> {
    if policy.on_timeout == TimeoutPolicy::Retry {
        return Err(invalid(
            key("policy.on_timeout"),
            format!(
                "must stay `unknown` for {channels}: their unknowns are deliberate (the relay or CRM may have the message) and must not be resent"
            ),
        ));
    }
    Ok(())
}

/// The checks every channel gets, then its family's.
pub(super) fn validate(config: &Config, id: ChannelId) -> Result<(), ConfigError> {
    let ch = config.channel(id);
    let key = |k: &str| format!("channels.{id}.{k}");
    let at_least_one = |k: &str, v: u64| {
        if v == 0 {
            Err(invalid(key(k), "must be at least 1"))
        } else {
            Ok(())
        }
    };
    let p = ch.policy();
    if !(p.rate.is_finite() && (0.001..=1_000_000.0).contains(&p.rate)) {
        return Err(invalid(
            key("policy.rate"),
            "must be between 0.001 and 1000000 messages per second",
        ));
    }
    at_least_one("policy.burst", u64::from(p.burst))?;
    at_least_one("policy.concurrency", u64::from(p.concurrency))?;
    at_least_one("policy.timeout_ms", p.timeout_ms)?;
    at_least_one("policy.max_attempts", u64::from(p.max_attempts))?;
    at_least_one("policy.backoff_initial_ms", p.backoff_initial_ms)?;
    at_least_one(
        "policy.breaker.failure_threshold",
        u64::from(p.breaker.failure_threshold),
    )?;
    if p.backoff_max_ms < p.backoff_initial_ms {
        return Err(invalid(
            key("policy.backoff_max_ms"),
            "must not be below policy.backoff_initial_ms",
        ));
    }
    if let Some(w) = &p.window {
        crate::policy::window::SendWindow::parse(w)
            .map_err(|m| invalid(key("policy.window"), m))?;
    }
    if let Some(ingest) = ch.ingest() {
        validate_ingest(ingest, &key)?;
    }
    ch.check(id, config, &key)?;
    if !ch.is_enabled() {
        return Ok(());
    }
    if let Some(what) = ch.unconfigured()
        && !config.sandbox
    {
        return Err(invalid(
            key(what),
            "the channel is enabled but not configured (and sandbox = false); configure it or set enabled = false",
        ));
    }
    if ch.ingest().is_some_and(IngestAuthConfig::is_open) && !config.is_loopback() {
        return Err(invalid(
            key("ingest.token"),
            "an ingest token or hmac_secret is required when server.listen is not a loopback address",
        ));
    }
    Ok(())
}

fn validate_ingest(i: &IngestAuthConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    for (k, v) in [
        ("ingest.token", &i.token),
        ("ingest.hmac_secret", &i.hmac_secret),
        ("ingest.basic_username", &i.basic_username),
        ("ingest.basic_password", &i.basic_password),
    ] {
        if v.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(invalid(key(k), "must not be empty (leave it out instead)"));
        }
    }
    if i.basic_username.is_some() != i.basic_password.is_some() {
        return Err(invalid(
            key("ingest.basic_password"),
            "basic_username and basic_password go together",
        ));
    }
    Ok(())
}
