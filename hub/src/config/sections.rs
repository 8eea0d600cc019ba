//! The sections every hub has: `server`, `store`, `queue`, `coordination`, `dispatcher`, `soap`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the API, ingest and metrics listen on.
    pub listen: SocketAddr,
    /// How channels reach this hub (delivery-report URLs); defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Bearer token for `/v1`; required when `listen` is not a loopback address.
    pub api_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ([127, 0, 0, 1], 8080).into(),
            public_url: None,
            api_token: None,
        }
    }
}

impl ServerConfig {
    pub(super) fn validate(&self, sandbox: bool) -> Result<(), ConfigError> {
        if let Some(u) = &self.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(invalid(
                "server.public_url",
                "must be an http:// or https:// URL",
            ));
        }
        if self
            .api_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(invalid(
                "server.api_token",
                "must not be empty (leave it out instead)",
            ));
        }
        if !self.listen.ip().is_loopback() && self.api_token.is_none() {
            return Err(invalid(
                "server.api_token",
                format!(
                    "is required when server.listen ({}) is not a loopback address",
                    self.listen
                ),
            ));
        }
        // Channels send their reports to public_url; an unspecified address (0.0.0.0) is no
        // address they can reach.
        if self.public_url.is_none() && self.listen.ip().is_unspecified() && !sandbox {
            return Err(invalid(
                "server.public_url",
                format!(
                    "is required when server.listen ({}) is an unspecified address: channels need an address for their reports",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path` or `postgres://…`; empty means SQLite in `data_dir`.
    pub url: Option<String>,
    /// Pool size (PostgreSQL); SQLite uses one writer and a few readers.
    pub max_connections: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            max_connections: 16,
        }
    }
}

impl StoreConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "store.url",
                "must start with sqlite: or postgres://",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `memory` (HTTP intake, events in-process) or `amqp://…` / `amqps://…` (RabbitMQ: intake
    /// from `clm.communications`, events to `clm.events`; the HTTP API keeps working).
    pub url: String,
    /// Unacknowledged deliveries the broker may hand this instance at once.
    pub prefetch: u16,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            url: "memory".into(),
            prefetch: 1000,
        }
    }
}

impl QueueConfig {
    pub fn is_amqp(&self) -> bool {
        self.url.starts_with("amqp://") || self.url.starts_with("amqps://")
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.url != "memory" && !self.is_amqp() {
            return Err(invalid(
                "queue.url",
                "must be `memory` or an amqp:// or amqps:// URL",
            ));
        }
        if self.prefetch == 0 {
            return Err(invalid("queue.prefetch", "must be at least 1"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinationConfig {
    /// `memory` (one instance) or `redis://…` (rate limits, breaker state and pause flags
    /// shared by every instance; singleton jobs).
    pub url: String,
    /// While Redis is unreachable each instance sends at this share of a channel's rate, so the
    /// instances together stay near the contracted rate (0.5 suits two instances, 0.34 three).
    pub fallback_share: f64,
    /// Prefix of every Redis key, so several hubs (or test runs) can share one Redis.
    pub key_prefix: String,
}

impl Default for CoordinationConfig {
    fn default() -> Self {
        CoordinationConfig {
            url: "memory".into(),
            fallback_share: 0.5,
            key_prefix: "clm:".into(),
        }
    }
}

impl CoordinationConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.url != "memory"
            && !self.url.starts_with("redis://")
            && !self.url.starts_with("redis+unix://")
        {
            return Err(invalid(
                "coordination.url",
                "must be `memory` or a redis:// URL",
            ));
        }
        if !(self.fallback_share > 0.0 && self.fallback_share <= 1.0) {
            return Err(invalid("coordination.fallback_share", "must be in (0, 1]"));
        }
        Ok(())
    }
}

/// Store-side knobs of the dispatcher, the same for every channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// Most communications claimed in one round trip.
    pub claim_batch: u32,
    /// How long a claim is held before another instance may take the communication over.
    pub lease_secs: u64,
    /// Idle poll interval when nothing is due (intake wakes the dispatcher earlier).
    pub poll_ms: u64,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            claim_batch: 500,
            lease_secs: 300,
            poll_ms: 250,
        }
    }
}

impl DispatcherConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.claim_batch == 0 || self.claim_batch > 5000 {
            return Err(invalid(
                "dispatcher.claim_batch",
                "must be between 1 and 5000",
            ));
        }
        if self.poll_ms == 0 {
            return Err(invalid("dispatcher.poll_ms", "must be at least 1"));
        }
        if self.lease_secs < 10 {
            return Err(invalid("dispatcher.lease_secs", "must be at least 10"));
        }
        Ok(())
    }
}

/// Who may call the hub's SOAP response service, and how much they may send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoapConfig {
    /// Callers, each authenticated by WS-Security UsernameToken or HTTP Basic with these
    /// credentials. None: the service is open, which start-up allows on a loopback listener only
    /// (on another listener every call is refused).
    pub callers: Vec<SoapCaller>,
    /// Largest request accepted, in bytes.
    pub max_bytes: usize,
}

impl Default for SoapConfig {
    fn default() -> Self {
        SoapConfig {
            callers: Vec::new(),
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// One caller of the SOAP response service.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoapCaller {
    pub username: String,
    pub password: String,
    /// The source systems it may report for: `SAP_CRM`, `AMDOCS`, `CRM_B2C`.
    pub systems: Vec<String>,
}

impl std::fmt::Debug for SoapCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoapCaller")
            .field("username", &self.username)
            .field("password", &"***")
            .field("systems", &self.systems)
            .finish()
    }
}

impl SoapConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1024..=64 * 1024 * 1024).contains(&self.max_bytes) {
            return Err(invalid(
                "soap.max_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.callers.iter().enumerate() {
            let key = |k: &str| format!("soap.callers[{i}].{k}");
            if c.username.trim().is_empty() || c.password.is_empty() {
                return Err(invalid(
                    key("username"),
                    "username and password must not be empty",
                ));
            }
            if !names.insert(c.username.as_str()) {
                return Err(invalid(key("username"), "appears twice"));
            }
            if c.systems.is_empty() {
                return Err(invalid(key("systems"), "names no source system"));
            }
            for sys in &c.systems {
                if sys.parse::<clm_contracts::soap::SourceSystem>().is_err() {
                    return Err(invalid(
                        key("systems"),
                        format!("`{sys}` is not SAP_CRM, AMDOCS or CRM_B2C"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// How the hub logs (`[log]`). The filter stays the `CLM_LOG` environment variable (tracing's
/// `EnvFilter` syntax, default `info,sqlx=warn`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (for people; the start-up banner is printed) or `json` (one JSON object per line
    /// for log shippers; no banner, so every line of standard output parses).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
