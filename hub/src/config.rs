//! Configuration in layers: built-in defaults → TOML file (`--config`) → `CLM_HUB__SECTION__KEY`
//! environment variables; then validation whose messages name the key. Unknown keys are rejected.
//!
//! With no file at all the hub runs its embedded default: SQLite under `./data`, the in-process
//! queue, and `sandbox = true` (every channel pointed at the bundled in-process mocks).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clm_contracts::ChannelId;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

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
    /// Per channel, keyed by channel id (`channels.sms`, …).
    pub channels: BTreeMap<ChannelId, ChannelConfig>,
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path` or `postgres://…`; empty means SQLite in `data_dir`.
    pub url: Option<String>,
    /// Pool size (PostgreSQL); SQLite uses one writer and a few readers.
    pub max_connections: u32,
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

impl QueueConfig {
    pub fn is_amqp(&self) -> bool {
        self.url.starts_with("amqp://") || self.url.starts_with("amqps://")
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelConfig {
    /// Unset means: on in sandbox mode (every channel with a connector talks to its bundled
    /// mock), and for `sms`; off otherwise. [`Config::load`] fills it in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    pub policy: PolicyConfig,
    pub ingest: IngestAuthConfig,
    /// SMS gateway (only for `channels.sms`).
    pub gateway: Option<SmsGatewayConfig>,
    /// Endpoint of an HTTP JSON channel (`wink`, `elk`, `eissd`: the base URL) or of a CRM
    /// channel (`sap_crm`, `amdocs`, `crm_b2c`: the SOAP service URL).
    pub endpoint: Option<EndpointConfig>,
    /// Where EISSD's responses are read from (only for `channels.eissd`).
    pub responses: Option<DwhConfig>,
    /// SOAP version and bundling of a CRM channel.
    pub soap: Option<SoapChannelConfig>,
    /// The SMTP relay (only for `channels.email`).
    pub smtp: Option<SmtpRelayConfig>,
    /// Opens, clicks and unsubscribes served by the hub itself (only for `channels.email`).
    pub tracking: Option<TrackingConfig>,
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
fn default_smtp_connect_ms() -> u64 {
    10_000
}
fn default_smtp_command_ms() -> u64 {
    30_000
}
fn default_smtp_pool() -> usize {
    8
}
fn default_greylist_ms() -> u64 {
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

/// The channels this build can send on.
pub const WITH_CONNECTOR: [ChannelId; 8] = [
    ChannelId::Sms,
    ChannelId::Wink,
    ChannelId::Elk,
    ChannelId::Eissd,
    ChannelId::SapCrm,
    ChannelId::Amdocs,
    ChannelId::CrmB2c,
    ChannelId::Email,
];

/// The CRM channels, sent as SOAP bundles.
pub const SOAP_CHANNELS: [ChannelId; 3] = [ChannelId::SapCrm, ChannelId::Amdocs, ChannelId::CrmB2c];

/// How a CRM channel bundles and talks SOAP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoapChannelConfig {
    /// `"1.1"` or `"1.2"`.
    pub version: String,
    /// Most items per `SendCommunications` bundle (SAP's own services take 100 to 500; at most
    /// 1000).
    pub bundle_size: usize,
    /// Longest the first item of a bundle waits for more.
    pub bundle_wait_ms: u64,
    /// Bundles in flight at once.
    pub parallel_bundles: usize,
    /// One SOAP call's time limit (a send or a status query).
    pub request_timeout_ms: u64,
    /// Status queries made after a send whose answer was lost, before the items are left
    /// `unknown`.
    pub reconcile_attempts: u32,
    /// How often items left `unknown` (every status query failed) are asked about again, by one
    /// instance; 0: never.
    pub reconcile_every_ms: u64,
}

impl Default for SoapChannelConfig {
    fn default() -> Self {
        SoapChannelConfig {
            version: "1.1".into(),
            bundle_size: 100,
            bundle_wait_ms: 200,
            parallel_bundles: 4,
            request_timeout_ms: 10_000,
            reconcile_attempts: 3,
            reconcile_every_ms: 60_000,
        }
    }
}

impl SoapChannelConfig {
    /// The longest one item can spend in the connector (see `clm_connectors::crm`): the
    /// channel's per-attempt timeout must be longer.
    pub fn worst_case_ms(&self) -> u64 {
        let backoff: u64 = (0..self.reconcile_attempts)
            .map(|n| 200u64.saturating_mul(1 << n.min(6)))
            .sum();
        self.bundle_wait_ms
            .saturating_add(
                self.request_timeout_ms
                    .saturating_mul(1 + u64::from(self.reconcile_attempts)),
            )
            .saturating_add(backoff)
    }
}

/// An HTTP JSON channel's endpoint: base URL (the contract's path is appended), auth and TLS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Base URL, e.g. `https://wink.example/api`; `/v1/notifications` (wink), `/v1/messages`
    /// (elk) or `/v1/offers` (eissd) is appended.
    pub url: String,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// PEM file of CA certificates trusted for this endpoint (besides the public roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// How the hub authenticates to a channel: `{ kind = "bearer", token = "…" }`,
/// `{ kind = "basic", username = "…", password = "…" }` or
/// `{ kind = "api_key", header = "X-Api-Key", value = "…" }`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    Bearer {
        token: String,
    },
    Basic {
        username: String,
        password: String,
    },
    ApiKey {
        header: String,
        value: String,
    },
    /// A WS-Security UsernameToken (`PasswordText`) in every SOAP request (CRM channels only).
    WsSecurity {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach a log line.
        match self {
            AuthConfig::Bearer { .. } => f.write_str("Bearer(***)"),
            AuthConfig::Basic { username, .. } => write!(f, "Basic({username}:***)"),
            AuthConfig::ApiKey { header, .. } => write!(f, "ApiKey({header}: ***)"),
            AuthConfig::WsSecurity { username, .. } => write!(f, "WsSecurity({username}:***)"),
        }
    }
}

/// The DWH table EISSD writes its responses to, polled incrementally.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DwhConfig {
    /// `postgres://…` (Greenplum or PostgreSQL) or `sqlite://PATH`. Sandbox mode always reads
    /// `<data_dir>/eissd-dwh.db`, the file the bundled EISSD mock writes (a source here is refused).
    pub source: Option<String>,
    /// Pause between polls when the last one found nothing new.
    pub poll_ms: u64,
    /// Rows read per query.
    pub batch: u32,
    /// How long after its `created_at` a row may still become visible (the writer's transaction
    /// commits late). Rows younger than this are read again on the next poll (and recognised);
    /// the persisted watermark only moves past rows older than it.
    pub settle_ms: u64,
    /// How far behind the watermark the periodic rescan reads again (0: no rescan).
    pub lookback_ms: u64,
    /// How often the rescan runs (0: never). Rows it finds were late: recorded and counted.
    pub rescan_ms: u64,
}

impl Default for DwhConfig {
    fn default() -> Self {
        DwhConfig {
            source: None,
            poll_ms: 1_000,
            batch: 500,
            settle_ms: 30_000,
            lookback_ms: 900_000,
            rescan_ms: 300_000,
        }
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

fn default_from() -> String {
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

impl Default for Config {
    fn default() -> Self {
        // Every channel's built-in defaults, so a file or the environment changes only what it
        // names (a CRM channel keeps its bundle-sized concurrency and longer timeout).
        let channels = ChannelId::ALL
            .into_iter()
            .map(|id| (id, ChannelConfig::default_for(id)))
            .collect();
        Config {
            sandbox: true,
            data_dir: PathBuf::from("data"),
            server: ServerConfig::default(),
            store: StoreConfig::default(),
            queue: QueueConfig::default(),
            coordination: CoordinationConfig::default(),
            dispatcher: DispatcherConfig::default(),
            soap: SoapConfig::default(),
            channels,
        }
    }
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

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            max_connections: 16,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            url: "memory".into(),
            prefetch: 1000,
        }
    }
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

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            claim_batch: 500,
            lease_secs: 300,
            poll_ms: 250,
        }
    }
}

impl ChannelConfig {
    /// The built-in default of a channel: SMS is enabled; the others follow `sandbox`.
    pub fn default_for(channel: ChannelId) -> Self {
        let mut c = ChannelConfig {
            enabled: (channel == ChannelId::Sms).then_some(true),
            ..ChannelConfig::default()
        };
        if channel == ChannelId::Email {
            // Room for the whole SMTP dialogue of one message: connect, then up to seven
            // commands (EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT, DATA) and the final dot, each
            // bounded by the relay's command timeout.
            c.policy.timeout_ms = default_smtp_connect_ms() + 8 * default_smtp_command_ms() + 5_000;
        }
        if SOAP_CHANNELS.contains(&channel) {
            // Room for the bundles in flight, and a per-item timeout that covers the wait for a
            // bundle, the call and the reconciliation after a lost answer.
            let soap = SoapChannelConfig::default();
            c.policy.concurrency =
                u32::try_from(soap.bundle_size * soap.parallel_bundles).unwrap_or(u32::MAX);
            c.policy.rate = 500.0;
            c.policy.burst = 500;
            c.policy.timeout_ms = soap.worst_case_ms() + 5_000;
        }
        c
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled == Some(true)
    }
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

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 20,
            open_ms: 30_000,
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

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
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
            let attempt = fig.clone().merge(env_provider(&vars, &as_string));
            match attempt.extract::<Config>() {
                Ok(c) => break c,
                Err(e) => {
                    let wants_string = matches!(&e.kind, figment::error::Kind::InvalidType(_, exp) if exp.contains("string"));
                    let from_env = vars.iter().any(|(k, _)| env_path(k) == e.path);
                    if wants_string && from_env && !as_string.contains(&e.path) {
                        as_string.push(e.path.clone());
                        continue;
                    }
                    return Err(ConfigError::Load(Box::new(e)));
                }
            }
        };
        config.fill_channel_defaults();
        config.validate()?;
        Ok(config)
    }

    /// Every channel gets an entry; an unset `enabled` is on for SMS, and in sandbox mode for
    /// every channel with a connector (each gets its bundled mock).
    fn fill_channel_defaults(&mut self) {
        for id in ChannelId::ALL {
            let ch = self
                .channels
                .entry(id)
                .or_insert_with(|| ChannelConfig::default_for(id));
            if ch.enabled.is_none() {
                ch.enabled =
                    Some(id == ChannelId::Sms || (self.sandbox && WITH_CONNECTOR.contains(&id)));
            }
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.store.url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "store.url",
                "must start with sqlite: or postgres://",
            ));
        }
        if self.queue.url != "memory" && !self.queue.is_amqp() {
            return Err(invalid(
                "queue.url",
                "must be `memory` or an amqp:// or amqps:// URL",
            ));
        }
        if self.queue.prefetch == 0 {
            return Err(invalid("queue.prefetch", "must be at least 1"));
        }
        let c = &self.coordination;
        if c.url != "memory"
            && !c.url.starts_with("redis://")
            && !c.url.starts_with("redis+unix://")
        {
            return Err(invalid(
                "coordination.url",
                "must be `memory` or a redis:// URL",
            ));
        }
        if !(c.fallback_share > 0.0 && c.fallback_share <= 1.0) {
            return Err(invalid("coordination.fallback_share", "must be in (0, 1]"));
        }
        let d = &self.dispatcher;
        if d.claim_batch == 0 || d.claim_batch > 5000 {
            return Err(invalid(
                "dispatcher.claim_batch",
                "must be between 1 and 5000",
            ));
        }
        if d.poll_ms == 0 {
            return Err(invalid("dispatcher.poll_ms", "must be at least 1"));
        }
        if d.lease_secs < 10 {
            return Err(invalid("dispatcher.lease_secs", "must be at least 10"));
        }
        self.validate_server()?;
        self.validate_soap()?;
        for (id, ch) in &self.channels {
            self.validate_channel(*id, ch)?;
        }
        let crm_enabled = SOAP_CHANNELS
            .iter()
            .any(|id| self.channels.get(id).is_some_and(ChannelConfig::is_enabled));
        if crm_enabled && !self.server.listen.ip().is_loopback() && self.soap.callers.is_empty() {
            return Err(invalid(
                "soap.callers",
                "are required when a CRM channel is enabled and server.listen is not a loopback address: the CRMs' callbacks would all be refused",
            ));
        }
        Ok(())
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if let Some(u) = &s.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(invalid(
                "server.public_url",
                "must be an http:// or https:// URL",
            ));
        }
        if s.api_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(invalid(
                "server.api_token",
                "must not be empty (leave it out instead)",
            ));
        }
        if !s.listen.ip().is_loopback() && s.api_token.is_none() {
            return Err(invalid(
                "server.api_token",
                format!(
                    "is required when server.listen ({}) is not a loopback address",
                    s.listen
                ),
            ));
        }
        // Channels send their reports to public_url; an unspecified address (0.0.0.0) is no
        // address they can reach.
        if s.public_url.is_none() && s.listen.ip().is_unspecified() && !self.sandbox {
            return Err(invalid(
                "server.public_url",
                format!(
                    "is required when server.listen ({}) is an unspecified address: channels need an address for their reports",
                    s.listen
                ),
            ));
        }
        Ok(())
    }

    fn validate_soap(&self) -> Result<(), ConfigError> {
        let s = &self.soap;
        if !(1024..=64 * 1024 * 1024).contains(&s.max_bytes) {
            return Err(invalid(
                "soap.max_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in s.callers.iter().enumerate() {
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

    fn validate_channel(&self, id: ChannelId, ch: &ChannelConfig) -> Result<(), ConfigError> {
        let key = |k: &str| format!("channels.{id}.{k}");
        let at_least_one = |k: &str, v: u64| {
            if v == 0 {
                Err(invalid(key(k), "must be at least 1"))
            } else {
                Ok(())
            }
        };
        let p = &ch.policy;
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
        for (k, v) in [
            ("ingest.token", &ch.ingest.token),
            ("ingest.hmac_secret", &ch.ingest.hmac_secret),
        ] {
            if v.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(invalid(key(k), "must not be empty (leave it out instead)"));
            }
        }
        if ch.gateway.is_some() && id != ChannelId::Sms {
            return Err(invalid(key("gateway"), "only channels.sms has a gateway"));
        }
        if let Some(g) = &ch.gateway {
            validate_sms_gateway(g, ch, &key)?;
        }
        let http_json = matches!(id, ChannelId::Wink | ChannelId::Elk | ChannelId::Eissd);
        let soap = SOAP_CHANNELS.contains(&id);
        if ch.endpoint.is_some() && !http_json && !soap {
            return Err(invalid(
                key("endpoint"),
                "only the HTTP JSON (wink, elk, eissd) and CRM (sap_crm, amdocs, crm_b2c) channels have an endpoint",
            ));
        }
        if let Some(e) = &ch.endpoint {
            validate_endpoint(e, &key)?;
            if !soap && matches!(e.auth, Some(AuthConfig::WsSecurity { .. })) {
                return Err(invalid(
                    key("endpoint.auth"),
                    "ws_security is for the SOAP channels (sap_crm, amdocs, crm_b2c)",
                ));
            }
        }
        if (ch.smtp.is_some() || ch.tracking.is_some()) && id != ChannelId::Email {
            return Err(invalid(
                key("smtp"),
                "only channels.email has smtp and tracking",
            ));
        }
        if let Some(m) = &ch.smtp {
            validate_smtp(m, &key)?;
            let dialogue = m.connect_timeout_ms + 8 * m.command_timeout_ms;
            if ch.policy.timeout_ms <= dialogue {
                return Err(invalid(
                    key("policy.timeout_ms"),
                    format!(
                        "must be above {dialogue} ms (smtp.connect_timeout_ms + 8 × smtp.command_timeout_ms): an attempt cut short mid-dialogue would end unknown"
                    ),
                ));
            }
        }
        if (id == ChannelId::Email || soap) && p.on_timeout == TimeoutPolicy::Retry {
            return Err(invalid(
                key("policy.on_timeout"),
                "must stay `unknown` for e-mail and the CRM channels: their unknowns are deliberate (the relay or CRM may have the message) and must not be resent",
            ));
        }
        if let Some(t) = &ch.tracking
            && t.secret.as_ref().is_some_and(|s| s.len() < 16)
        {
            return Err(invalid(
                key("tracking.secret"),
                "must be at least 16 characters: tracking links are only as unforgeable as it",
            ));
        }
        for (k, v) in [
            ("ingest.basic_username", &ch.ingest.basic_username),
            ("ingest.basic_password", &ch.ingest.basic_password),
        ] {
            if v.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(invalid(key(k), "must not be empty (leave it out instead)"));
            }
        }
        if ch.ingest.basic_username.is_some() != ch.ingest.basic_password.is_some() {
            return Err(invalid(
                key("ingest.basic_password"),
                "basic_username and basic_password go together",
            ));
        }
        if id == ChannelId::Email
            && ch.is_enabled()
            && !self.sandbox
            && ch.tracking.as_ref().is_some_and(|t| t.secret.is_none())
        {
            return Err(invalid(
                key("tracking.secret"),
                "is required for tracking outside sandbox mode (tokens must survive restarts)",
            ));
        }
        if ch.soap.is_some() && !soap {
            return Err(invalid(
                key("soap"),
                "only the CRM channels (sap_crm, amdocs, crm_b2c) speak SOAP",
            ));
        }
        if soap {
            let sc = ch.soap.clone().unwrap_or_default();
            validate_soap_channel(&sc, &ch.policy, &key)?;
        }
        if ch.responses.is_some() && id != ChannelId::Eissd {
            return Err(invalid(
                key("responses"),
                "only channels.eissd reads its responses from a table",
            ));
        }
        if let Some(r) = &ch.responses {
            validate_dwh(r, &key)?;
            if self.sandbox && r.source.is_some() {
                return Err(invalid(
                    key("responses.source"),
                    "is not used in sandbox mode (the bundled EISSD mock writes <data_dir>/eissd-dwh.db); set sandbox = false to read a real DWH",
                ));
            }
        }
        if !ch.is_enabled() {
            return Ok(());
        }
        if !WITH_CONNECTOR.contains(&id) {
            return Err(invalid(
                key("enabled"),
                format!("this build has no connector for {id} yet"),
            ));
        }
        let (what, configured) = match id {
            ChannelId::Sms => ("gateway", ch.gateway.is_some()),
            ChannelId::Email => ("smtp", ch.smtp.is_some()),
            _ => ("endpoint", ch.endpoint.is_some()),
        };
        if !self.sandbox && !configured {
            return Err(invalid(
                key(what),
                "the channel is enabled but not configured (and sandbox = false); configure it or set enabled = false",
            ));
        }
        if id == ChannelId::Eissd
            && !self.sandbox
            && ch.responses.as_ref().is_none_or(|r| r.source.is_none())
        {
            return Err(invalid(
                key("responses.source"),
                "is required: EISSD's responses come only from its DWH table",
            ));
        }
        let open = self.server.listen.ip().is_loopback();
        // EISSD's responses come from its DWH table, the CRMs' over SOAP (`soap.callers`), not
        // over /ingest.
        let has_ingest_route = id != ChannelId::Eissd && !SOAP_CHANNELS.contains(&id);
        if has_ingest_route
            && !open
            && ch.ingest.token.is_none()
            && ch.ingest.hmac_secret.is_none()
            && ch.ingest.basic_username.is_none()
        {
            return Err(invalid(
                key("ingest.token"),
                "an ingest token or hmac_secret is required when server.listen is not a loopback address",
            ));
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

    pub fn channel(&self, id: ChannelId) -> &ChannelConfig {
        &self.channels[&id]
    }
}

fn validate_sms_gateway(
    g: &SmsGatewayConfig,
    ch: &ChannelConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
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
        && ch.ingest.token.is_none()
        && ch.ingest.hmac_secret.is_some()
    {
        return Err(invalid(
            key("ingest.token"),
            "Kannel cannot sign its delivery reports: with the kannel dialect set a token (it travels in the dlr-url)",
        ));
    }
    Ok(())
}

fn validate_endpoint(e: &EndpointConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
        return Err(invalid(
            key("endpoint.url"),
            "must be an http:// or https:// URL",
        ));
    }
    let tls_files = e.ca_file.is_some() || e.client_cert_file.is_some();
    if tls_files && e.url.starts_with("http://") {
        return Err(invalid(
            key("endpoint.url"),
            "is http://: the TLS files would go unused; use https://",
        ));
    }
    // Credentials in clear only to this machine (a local relay or sidecar).
    if e.auth.is_some() && e.url.starts_with("http://") && !is_loopback_url(&e.url) {
        return Err(invalid(
            key("endpoint.url"),
            "is http:// to another host: the auth would travel in clear; use https://",
        ));
    }
    if e.client_cert_file.is_some() != e.client_key_file.is_some() {
        return Err(invalid(
            key("endpoint.client_key_file"),
            "client_cert_file and client_key_file go together",
        ));
    }
    for (k, f) in [
        ("endpoint.ca_file", &e.ca_file),
        ("endpoint.client_cert_file", &e.client_cert_file),
        ("endpoint.client_key_file", &e.client_key_file),
    ] {
        if let Some(path) = f
            && !path.is_file()
        {
            return Err(invalid(
                key(k),
                format!("{} is not a readable file", path.display()),
            ));
        }
    }
    let empty = |v: &str| v.trim().is_empty();
    match &e.auth {
        Some(AuthConfig::Bearer { token }) if empty(token) => {
            Err(invalid(key("endpoint.auth.token"), "must not be empty"))
        }
        Some(AuthConfig::Basic { username, .. }) if empty(username) => {
            Err(invalid(key("endpoint.auth.username"), "must not be empty"))
        }
        Some(AuthConfig::ApiKey { header, value })
            if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() || empty(value) =>
        {
            Err(invalid(
                key("endpoint.auth"),
                "api_key needs a valid header name and a non-empty value",
            ))
        }
        _ => Ok(()),
    }
}

fn validate_smtp(m: &SmtpRelayConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if m.host.trim().is_empty() {
        return Err(invalid(key("smtp.host"), "must not be empty"));
    }
    if !["starttls", "tls", "plain"].contains(&m.security.as_str()) {
        return Err(invalid(
            key("smtp.security"),
            "must be starttls, tls or plain",
        ));
    }
    if m.security == "plain"
        && m.username.is_some()
        && !is_loopback_url(&format!("smtp://{}", m.host))
    {
        return Err(invalid(
            key("smtp.security"),
            "plain with AUTH to another host would send the password in clear; use starttls or tls",
        ));
    }
    if m.username.is_some() != m.password.is_some() {
        return Err(invalid(
            key("smtp.password"),
            "username and password go together",
        ));
    }
    if !m.from.contains('@') {
        return Err(invalid(key("smtp.from"), "must contain an address"));
    }
    if m.pool_size == 0 || m.command_timeout_ms == 0 || m.connect_timeout_ms == 0 {
        return Err(invalid(
            key("smtp.pool_size"),
            "pool_size and the timeouts must be at least 1",
        ));
    }
    if let Some(d) = &m.dkim
        && !d.private_key_file.is_file()
    {
        return Err(invalid(
            key("smtp.dkim.private_key_file"),
            format!("{} is not a readable file", d.private_key_file.display()),
        ));
    }
    Ok(())
}

fn validate_soap_channel(
    sc: &SoapChannelConfig,
    policy: &PolicyConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    if sc.version != "1.1" && sc.version != "1.2" {
        return Err(invalid(key("soap.version"), "must be \"1.1\" or \"1.2\""));
    }
    if !(1..=clm_contracts::soap::MAX_BUNDLE).contains(&sc.bundle_size) {
        return Err(invalid(
            key("soap.bundle_size"),
            "must be between 1 and 1000",
        ));
    }
    if sc.reconcile_attempts == 0 {
        return Err(invalid(
            key("soap.reconcile_attempts"),
            "must be at least 1: a bundle whose answer was lost is asked about, never resent blindly",
        ));
    }
    if sc.parallel_bundles == 0 || sc.request_timeout_ms == 0 {
        return Err(invalid(
            key("soap.parallel_bundles"),
            "parallel_bundles and request_timeout_ms must be at least 1",
        ));
    }
    if (policy.concurrency as usize) < sc.bundle_size {
        return Err(invalid(
            key("policy.concurrency"),
            format!(
                "must be at least soap.bundle_size ({}): every item waiting for its bundle holds a slot",
                sc.bundle_size
            ),
        ));
    }
    let worst = sc.worst_case_ms();
    if policy.timeout_ms <= worst {
        return Err(invalid(
            key("policy.timeout_ms"),
            format!(
                "must be above {worst} ms: the wait for a bundle, the call and the status queries after a lost answer (soap.*) must fit in one attempt"
            ),
        ));
    }
    Ok(())
}

/// `http://127.0.0.1…`, `http://[::1]…`, `http://localhost…`.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn validate_dwh(r: &DwhConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if let Some(src) = &r.source
        && !(src.starts_with("postgres://")
            || src.starts_with("postgresql://")
            || src.starts_with("sqlite:"))
    {
        return Err(invalid(
            key("responses.source"),
            "must be a postgres:// URL (Greenplum, PostgreSQL) or sqlite://PATH",
        ));
    }
    if let Some(src) = &r.source
        && src.starts_with("postgres")
        && let Err(e) = sqlx::postgres::PgConnectOptions::from_str(src)
    {
        return Err(invalid(
            key("responses.source"),
            format!("is not a usable PostgreSQL URL: {e}"),
        ));
    }
    const HOUR: u64 = 3_600_000;
    if !(1..=HOUR).contains(&r.poll_ms) {
        return Err(invalid(
            key("responses.poll_ms"),
            "must be between 1 and 3600000 (an hour)",
        ));
    }
    if !(100..=HOUR).contains(&r.settle_ms) {
        return Err(invalid(
            key("responses.settle_ms"),
            "must be between 100 and 3600000: rows whose writers commit later than this after created_at are only found by the rescan",
        ));
    }
    if r.lookback_ms > 7 * 24 * HOUR || r.rescan_ms > 24 * HOUR {
        return Err(invalid(
            key("responses.lookback_ms"),
            "lookback_ms is at most a week and rescan_ms at most a day",
        ));
    }
    if r.lookback_ms != 0 && r.lookback_ms < r.settle_ms {
        return Err(invalid(
            key("responses.lookback_ms"),
            "must be 0 (no rescan) or at least settle_ms",
        ));
    }
    if r.batch == 0 || r.batch > 10_000 {
        return Err(invalid(
            key("responses.batch"),
            "must be between 1 and 10000",
        ));
    }
    Ok(())
}

/// `CLM_HUB__CHANNELS__SMS__POLICY__RATE=50` → `channels.sms.policy.rate = 50`.
fn env_provider(vars: &[(String, String)], as_string: &[Vec<String>]) -> impl figment::Provider {
    // Figment's Env reads the process environment; we take a captured list instead so tests
    // and `load` callers control exactly what is seen. Values are typed as figment's Env types them.
    let mut dict = figment::value::Dict::new();
    for (k, v) in vars {
        let path = env_path(k);
        let value = if as_string.contains(&path) {
            figment::value::Value::from(v.clone())
        } else {
            parse_env_value(v)
        };
        insert_path(&mut dict, &path, value);
    }
    Serialized::defaults(dict)
}

/// `CLM_HUB__CHANNELS__SMS__POLICY__RATE` → `["channels", "sms", "policy", "rate"]`.
fn env_path(key: &str) -> Vec<String> {
    key["CLM_HUB__".len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    use figment::value::{Dict, Value};
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = dict
                .entry(head.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            } else {
                let mut inner = Dict::new();
                insert_path(&mut inner, rest, value);
                *entry = Value::from(inner);
            }
        }
    }
}

/// Environment values are typed like figment's `Env`: numbers, booleans, else strings.
fn parse_env_value(v: &str) -> figment::value::Value {
    use figment::value::Value;
    v.parse::<Value>()
        .unwrap_or_else(|_| Value::from(v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_file_means_the_embedded_default_in_sandbox() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(c.sandbox);
        for id in super::WITH_CONNECTOR {
            assert!(c.channel(id).is_enabled(), "{id}");
        }
        // Every channel has a connector now; the embedded default runs them all.
        assert!(c.channel(ChannelId::Email).is_enabled());
        assert!(c.store_url().starts_with("sqlite://"));
        // Tuning a channel from the environment does not switch it off.
        let c = Config::load(None, env(&[("CLM_HUB__CHANNELS__WINK__POLICY__RATE", "5")])).unwrap();
        assert!(c.channel(ChannelId::Wink).is_enabled());
    }

    #[test]
    fn credentials_go_in_clear_only_to_this_machine() {
        assert!(is_loopback_url("http://127.0.0.1:9/crm"));
        assert!(is_loopback_url("http://localhost/x"));
        assert!(is_loopback_url("http://[::1]:80/"));
        assert!(!is_loopback_url("http://crm.example/x"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.example/"));
        assert!(!is_loopback_url("http://user@10.0.0.1/"));
    }

    #[test]
    fn http_channels_need_an_endpoint_and_eissd_a_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::load(Some(&path), env(&[])).map_err(|e| e.to_string())
        };
        let sms = "[channels.sms]\nenabled = false\n";
        // A file without sandbox: unnamed channels stay off.
        let c = load(sms).unwrap();
        assert!(!c.channel(ChannelId::Wink).is_enabled());
        let err = load(&format!("{sms}[channels.wink]\nenabled = true\n")).unwrap_err();
        assert!(err.contains("channels.wink.endpoint"), "{err}");
        let ok = load(&format!(
            "{sms}[channels.wink]\nenabled = true\n[channels.wink.endpoint]\nurl = \"https://wink.example/api\"\nauth = {{ kind = \"bearer\", token = \"t\" }}\n"
        ))
        .unwrap();
        let auth = ok
            .channel(ChannelId::Wink)
            .endpoint
            .as_ref()
            .unwrap()
            .auth
            .clone();
        assert_eq!(format!("{auth:?}"), "Some(Bearer(***))");
        let err = load(&format!(
            "{sms}[channels.wink.endpoint]\nurl = \"https://w\"\nclient_cert_file = \"/nonexistent.pem\"\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("channels.wink.endpoint.client_key_file"),
            "{err}"
        );
        let err = load(&format!(
            "{sms}[channels.elk.endpoint]\nurl = \"https://e\"\nca_file = \"/nonexistent.pem\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("channels.elk.endpoint.ca_file"), "{err}");
        let err = load(&format!(
            "{sms}[channels.eissd]\nenabled = true\n[channels.eissd.endpoint]\nurl = \"http://eissd\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("channels.eissd.responses.source"), "{err}");
        let err = load(&format!(
            "{sms}[channels.eissd.responses]\nsource = \"mysql://dwh\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("channels.eissd.responses.source"), "{err}");
        let err = load(&format!("{sms}[channels.sms.responses]\nbatch = 5\n")).unwrap_err();
        assert!(err.contains("channels.sms.responses"), "{err}");
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let c = Config::load(
            None,
            env(&[
                ("CLM_HUB__CHANNELS__SMS__POLICY__RATE", "42.5"),
                ("CLM_HUB__SERVER__LISTEN", "127.0.0.1:9999"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.channel(ChannelId::Sms).policy.rate, 42.5);
        assert_eq!(c.server.listen.port(), 9999);
    }

    #[test]
    fn a_bad_value_is_named_by_its_key() {
        let err = Config::load(None, env(&[("CLM_HUB__CHANNELS__SMS__POLICY__RATE", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("channels.sms.policy.rate"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "sandbox = true\n[server]\nlisten = \"127.0.0.1:1\"\nlissen = 3\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("lissen"), "{err}");
    }

    #[test]
    fn a_file_without_sandbox_needs_every_enabled_channel_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, "[channels.sms]\nenabled = true\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("channels.sms.gateway"), "{err}");
    }

    #[test]
    fn a_public_listener_needs_tokens() {
        let err = Config::load(None, env(&[("CLM_HUB__SERVER__LISTEN", "0.0.0.0:8080")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.api_token"), "{err}");
        let err = Config::load(
            None,
            env(&[
                ("CLM_HUB__SERVER__LISTEN", "0.0.0.0:8080"),
                ("CLM_HUB__SERVER__API_TOKEN", "s3cret"),
            ]),
        )
        .unwrap_err()
        .to_string();
        // The first enabled channel with a webhook route is named (all of them need one).
        assert!(
            err.contains("channels.") && err.contains(".ingest.token"),
            "{err}"
        );
    }

    #[test]
    fn the_committed_production_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hub.toml");
        let c = Config::load(
            Some(&path),
            env(&[
                ("CLM_HUB__SERVER__API_TOKEN", "t0ken"),
                ("CLM_HUB__CHANNELS__SMS__INGEST__TOKEN", "12345"),
                ("CLM_HUB__CHANNELS__WINK__INGEST__TOKEN", "w"),
                ("CLM_HUB__CHANNELS__ELK__INGEST__TOKEN", "e"),
                ("CLM_HUB__CHANNELS__EMAIL__INGEST__HMAC_SECRET", "m"),
                (
                    "CLM_HUB__CHANNELS__EMAIL__TRACKING__SECRET",
                    "a-long-tracking-key",
                ),
            ]),
        )
        .unwrap();
        assert!(!c.sandbox);
        for id in super::WITH_CONNECTOR {
            assert!(c.channel(id).is_enabled(), "{id}");
        }
        assert!(c.channel(ChannelId::Eissd).responses.is_some());
        assert_eq!(c.server.api_token.as_deref(), Some("t0ken"));
        // A numeric-looking secret stays a string.
        assert_eq!(
            c.channel(ChannelId::Sms).ingest.token.as_deref(),
            Some("12345")
        );
        assert!(c.store_url().starts_with("postgres://"));
    }

    #[test]
    fn empty_secrets_and_unreachable_report_addresses_are_refused() {
        let err = Config::load(None, env(&[("CLM_HUB__CHANNELS__SMS__INGEST__TOKEN", " ")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("channels.sms.ingest.token"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"0.0.0.0:8080\"\napi_token = \"t\"\n\
             [channels.sms]\nenabled = true\ningest = { token = \"x\" }\n\
             [channels.sms.gateway]\ndialect = \"kannel\"\nurl = \"http://gw/\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("server.public_url"), "{err}");
        let err = Config::load(
            Some(&path),
            env(&[
                ("CLM_HUB__SERVER__PUBLIC_URL", "http://hub.example:8080"),
                ("CLM_HUB__CHANNELS__SMS__GATEWAY__FROM", "RostelecomOffers"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("channels.sms.gateway.from"), "{err}");
        Config::load(
            Some(&path),
            env(&[("CLM_HUB__SERVER__PUBLIC_URL", "http://hub.example:8080")]),
        )
        .unwrap();
    }

    #[test]
    fn a_window_must_parse() {
        let err = Config::load(
            None,
            env(&[
                ("CLM_HUB__CHANNELS__SMS__POLICY__WINDOW__START", "9am"),
                ("CLM_HUB__CHANNELS__SMS__POLICY__WINDOW__END", "21:00"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("channels.sms.policy.window"), "{err}");
    }
}
