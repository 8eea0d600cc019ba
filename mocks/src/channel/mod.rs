//! Mocks of the HTTP JSON channels `wink`, `elk` and `eissd` (`clm_contracts::channels`), one
//! [`ChannelMock`] per channel, with the same fault injection as the SMS mock, auth, automatic
//! responses and a control API.
//!
//! # Layout
//! - [`ChannelMock`] (here): starts the server, and is the handle tests hold; the settings types.
//! - `wire`: per channel: the strict request parse, the answer, ids, response kinds and bodies.
//! - `send`: `POST {SEND_PATH}`: faults → auth → body → accept (idempotent on `message_id`).
//! - `state`: settings (faults, auth, responses) behind one small lock, decided per request.
//! - `record`: [`ReceivedRequest`] records (bounded), the idempotency map and [`ChannelStats`]
//!   counters (never truncated).
//! - `responder`: responses in the background: webhooks (wink, elk), signed and retried, or rows
//!   of the EISSD DWH table (`dwh`).
//! - `control`: `/control/<channel>/…`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use clm_contracts::ChannelId;
//! use clm_mocks::{ChannelMock, ChannelMockConfig, ResponsesConfig};
//! let responses = ResponsesConfig {
//!     webhook_url: Some("http://127.0.0.1:8080/ingest/wink".into()),
//!     ..ResponsesConfig::typical(ChannelId::Wink)
//! };
//! let config = ChannelMockConfig { responses, ..ChannelMockConfig::default() };
//! let wink = ChannelMock::start(ChannelId::Wink, "127.0.0.1:0".parse()?, config).await?;
//! // point the connector at wink.base_url() …
//! wink.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod control;
mod dwh;
mod record;
mod responder;
mod send;
mod state;
mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use axum::Router;
use axum::routing::post;
use clm_contracts::ChannelId;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use record::{ChannelStats, ReceivedRequest};
pub use responder::TOKEN_HEADER;

use state::Shared;

/// Records kept by default; the counters are never truncated.
pub const DEFAULT_CAPACITY: usize = 200_000;

/// The channels a [`ChannelMock`] can stand for.
pub const CHANNELS: [ChannelId; 3] = [ChannelId::Wink, ChannelId::Elk, ChannelId::Eissd];

/// The credentials a mock requires on sends (401 with `{"error":"unauthorized"}` otherwise).
#[derive(Clone, PartialEq, Eq)]
pub enum ExpectedAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic base64(username:password)`.
    Basic { username: String, password: String },
    /// `<header>: <value>`, e.g. `X-API-Key: k`.
    ApiKey { header: String, value: String },
}

impl fmt::Debug for ExpectedAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach a log line.
        match self {
            ExpectedAuth::Bearer(_) => f.write_str("Bearer(***)"),
            ExpectedAuth::Basic { username, .. } => write!(f, "Basic({username}:***)"),
            ExpectedAuth::ApiKey { header, .. } => write!(f, "ApiKey({header}: ***)"),
        }
    }
}

/// How a mock starts. `Default`: no auth, default capacity, no faults, no responses, no DWH.
/// `Debug` hides the secrets: the auth's, the response token and HMAC secret, and the password of
/// `dwh_url`.
#[derive(Clone, Default)]
pub struct ChannelMockConfig {
    /// When set, sends must carry these credentials (401 otherwise).
    pub auth: Option<ExpectedAuth>,
    /// Records kept (oldest dropped first); 0 means [`DEFAULT_CAPACITY`].
    pub capacity: usize,
    pub faults: crate::Faults,
    pub responses: ResponsesConfig,
    /// eissd only: the DWH the response rows are written to, `sqlite://PATH` (created if missing,
    /// WAL) or `postgres://…`. The table is created from the contract's DDL when missing.
    pub dwh_url: Option<String>,
}

impl fmt::Debug for ChannelMockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelMockConfig")
            .field("auth", &self.auth)
            .field("capacity", &self.capacity)
            .field("faults", &self.faults)
            .field("responses", &self.responses)
            .field("dwh_url", &self.dwh_url.as_deref().map(redact_url))
            .finish()
    }
}

/// What the control API and `Debug` show in place of a secret. A `PUT responses` that sends it as
/// `token` or `hmac_secret` keeps the secret in force, so a `GET`-edit-`PUT` round trip works.
pub const REDACTED: &str = "***";

/// Automatic responses to accepted messages: webhooks to `webhook_url` (wink, elk) or rows of
/// the DWH table (eissd). Every field has a default, so a control request may send only the
/// fields it changes. `Debug` and [`ResponsesConfig::redacted`] hide `token` and `hmac_secret`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesConfig {
    /// Contract kind names sent for every accepted message, in order: wink `delivered`, `shown`,
    /// `clicked`, `dismissed`; elk `delivered`, `read`, `offer_accepted`, `offer_declined`;
    /// eissd `accepted`, `declined`, `interested`, `opted_out`. Empty: no responses.
    pub kinds: Vec<String>,
    /// Before the first response (so it never overtakes the answer to the send), then between
    /// responses. 50 by default.
    pub delay_ms: u64,
    /// wink, elk: where webhooks are POSTed, normally the hub's `/ingest/<channel>`.
    pub webhook_url: Option<String>,
    /// Sent as header `X-CLM-Token`.
    pub token: Option<String>,
    /// When set, webhooks carry `X-CLM-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    pub hmac_secret: Option<String>,
    /// Share (0..=1) of webhooks sent twice, with the same `event_id`, to exercise the hub's
    /// dedupe. eissd ignores it: the table's primary key keeps a `response_id` unique.
    pub duplicate_rate: f64,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        ResponsesConfig {
            kinds: Vec::new(),
            delay_ms: 50,
            webhook_url: None,
            token: None,
            hmac_secret: None,
            duplicate_rate: 0.0,
        }
    }
}

impl fmt::Debug for ResponsesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponsesConfig")
            .field("kinds", &self.kinds)
            .field("delay_ms", &self.delay_ms)
            .field("webhook_url", &self.webhook_url.as_deref().map(redact_url))
            .field("token", &self.token.as_ref().map(|_| Redacted))
            .field("hmac_secret", &self.hmac_secret.as_ref().map(|_| Redacted))
            .field("duplicate_rate", &self.duplicate_rate)
            .finish()
    }
}

/// Debugs as `***`.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl ResponsesConfig {
    /// The usual life of a message: wink `delivered, shown, clicked`; elk
    /// `delivered, read, offer_accepted`; eissd `interested`. No destination is set.
    pub fn typical(channel: ChannelId) -> Self {
        let kinds: &[&str] = match channel {
            ChannelId::Wink => &["delivered", "shown", "clicked"],
            ChannelId::Elk => &["delivered", "read", "offer_accepted"],
            ChannelId::Eissd => &["interested"],
            _ => &[],
        };
        ResponsesConfig {
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
            ..ResponsesConfig::default()
        }
    }

    /// Checks the values for `channel`; the error names the field (and the kind) that is wrong.
    pub fn validate(&self, channel: ChannelId) -> Result<(), String> {
        for kind in &self.kinds {
            wire::Kind::parse(channel, kind)?;
        }
        if !(0.0..=1.0).contains(&self.duplicate_rate) {
            return Err(format!(
                "duplicate_rate must be between 0 and 1, got {}",
                self.duplicate_rate
            ));
        }
        if let Some(url) = &self.webhook_url
            && reqwest::Url::parse(url).is_err()
        {
            return Err(format!("webhook_url is not a URL: {}", redact_url(url)));
        }
        Ok(())
    }

    /// A copy with `token` and `hmac_secret` shown as [`REDACTED`] when set (`None` stays
    /// `None`): what the control API returns.
    pub fn redacted(&self) -> ResponsesConfig {
        let hide = |secret: &Option<String>| secret.as_ref().map(|_| REDACTED.to_owned());
        ResponsesConfig {
            token: hide(&self.token),
            hmac_secret: hide(&self.hmac_secret),
            ..self.clone()
        }
    }

    /// `self` with a `token` or `hmac_secret` of [`REDACTED`] replaced by `current`'s (which may
    /// be `None`): how the control API applies a `PUT` of what a `GET` returned.
    pub(crate) fn keeping_secrets_of(self, current: &ResponsesConfig) -> ResponsesConfig {
        let keep = |given: Option<String>, current: &Option<String>| match given {
            Some(given) if given == REDACTED => current.clone(),
            given => given,
        };
        ResponsesConfig {
            token: keep(self.token, &current.token),
            hmac_secret: keep(self.hmac_secret, &current.hmac_secret),
            ..self
        }
    }
}

/// `url` with its password (`scheme://user:***@host/…`, or a `password=` query parameter) shown
/// as [`REDACTED`], for logs and start-up lines. Returned as given when it has no password; an
/// unparsable URL with user info (`…@…`) loses everything between `://` and the last `@`.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let query_password = parsed
                .query_pairs()
                .any(|(key, _)| key.eq_ignore_ascii_case("password"));
            if parsed.password().is_none() && !query_password {
                return url.to_owned();
            }
            if parsed.password().is_some() {
                // Fails only for URLs that cannot have a password, and this one has one.
                let _ = parsed.set_password(Some(REDACTED));
            }
            if query_password {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(key, value)| {
                        let value = if key.eq_ignore_ascii_case("password") {
                            REDACTED.to_owned()
                        } else {
                            value.into_owned()
                        };
                        (key.into_owned(), value)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(start), Some(at)) if at > start + 3 => {
                format!("{}{REDACTED}{}", &url[..start + 3], &url[at..])
            }
            _ => url.to_owned(),
        },
    }
}

/// A running mock of `wink`, `elk` or `eissd`. Serves until [`ChannelMock::shutdown`] or until
/// dropped.
pub struct ChannelMock {
    channel: ChannelId,
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl ChannelMock {
    /// Starts a mock of `channel` (wink, elk or eissd) on `bind` (port 0 picks a free port). With
    /// a SQLite `dwh_url` the file and table are created now (an error if that fails); a
    /// PostgreSQL DWH is connected lazily, and its table created on the first row if needed.
    pub async fn start(
        channel: ChannelId,
        bind: SocketAddr,
        config: ChannelMockConfig,
    ) -> anyhow::Result<ChannelMock> {
        check_channel(channel)?;
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let mut mock = Self::detached(channel, addr, config).await?;
        let app = mock.router();
        let shutdown = mock.shared.shutdown.clone();
        mock.server = Some(tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(error) = serve.await {
                tracing::warn!(%error, %channel, "channel mock server stopped");
            }
        }));
        tracing::debug!(%addr, %channel, "channel mock listening");
        Ok(mock)
    }

    /// A mock without a server of its own: serve [`ChannelMock::router`] on `addr` yourself (the
    /// URLs the handle gives point there). [`ChannelMock::shutdown`] releases held requests and
    /// drops pending responses.
    pub async fn detached(
        channel: ChannelId,
        addr: SocketAddr,
        config: ChannelMockConfig,
    ) -> anyhow::Result<ChannelMock> {
        check_channel(channel)?;
        // reqwest is built without a crypto provider; the first caller installs ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Err(reason) = config.responses.validate(channel) {
            bail!("{channel} mock responses: {reason}");
        }
        if let Err(reason) = config.faults.validate() {
            bail!("{channel} mock faults: {reason}");
        }
        let dwh = match (&config.dwh_url, channel) {
            (Some(url), ChannelId::Eissd) => Some(dwh::Dwh::open(url).await?),
            (Some(_), _) => bail!("dwh_url is for the eissd mock only, not {channel}"),
            (None, _) => None,
        };
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared::new(channel, config, dwh, shutdown)?);
        Ok(ChannelMock {
            channel,
            addr,
            shared,
            server: None,
        })
    }

    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL the connector appends the contract's `SEND_PATH` to.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR{SEND_PATH}`.
    pub fn send_url(&self) -> String {
        format!("http://{}{}", self.addr, wire::send_path(self.channel))
    }

    /// `http://ADDR/control/<channel>`, the prefix of the control API.
    pub fn control_url(&self) -> String {
        format!("http://{}/control/{}", self.addr, self.channel)
    }

    /// Replaces the faults (out-of-range values are clamped); a script starts over.
    pub fn set_faults(&self, faults: crate::Faults) {
        self.shared.set_faults(faults);
    }

    /// The faults in force, with what is left of the script.
    pub fn faults(&self) -> crate::Faults {
        self.shared.faults()
    }

    /// Replaces the response settings for messages accepted from now on. Kinds the channel does
    /// not have are skipped (with a warning); [`ResponsesConfig::validate`] reports them.
    pub fn set_responses(&self, responses: ResponsesConfig) {
        self.shared.set_responses(responses);
    }

    pub fn responses(&self) -> ResponsesConfig {
        self.shared.responses().as_ref().clone()
    }

    /// Replaces the credentials sends must carry (`None`: any).
    pub fn set_auth(&self, auth: Option<ExpectedAuth>) {
        self.shared.set_auth(auth);
    }

    /// Every record kept, oldest first.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.shared.recorder.received(None)
    }

    /// Sends answered 2xx since start or reset (repeats of a `message_id` included).
    pub fn accepted_count(&self) -> u64 {
        self.shared.recorder.accepted()
    }

    /// How many times `message_id` was accepted.
    pub fn accepted_ref_count(&self, message_id: Uuid) -> u32 {
        self.shared.recorder.accepted_ref_count(message_id)
    }

    /// Sends accepted for a `message_id` accepted before (each repeat counts).
    pub fn duplicates(&self) -> u64 {
        self.shared.recorder.duplicates()
    }

    /// Waits until at least `n` sends were accepted; false on timeout.
    pub async fn wait_for_accepted(&self, n: u64, timeout: Duration) -> bool {
        poll_until(timeout, || self.accepted_count() >= n).await
    }

    pub fn stats(&self) -> ChannelStats {
        self.shared.stats()
    }

    /// Waits until at least `n` responses were delivered (webhook answered 2xx, row committed);
    /// false on timeout.
    pub async fn wait_for_responses(&self, n: u64, timeout: Duration) -> bool {
        poll_until(timeout, || self.shared.responder.counts().sent >= n).await
    }

    /// Sends one response of `kind` for `message_id` now (in the background, retried), as
    /// `POST /control/<channel>/respond` does. Returns the event or response id; an error for a
    /// kind the channel does not have, or when there is no destination.
    pub fn respond(&self, message_id: Uuid, kind: &str) -> Result<String, String> {
        self.shared.respond_now(message_id, kind)
    }

    /// Clears records, counters, the idempotency memory and faults, and drops pending responses.
    /// Auth and response settings stay.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// The mock's routes (`SEND_PATH` and the control API) bound to this mock's state, to be
    /// served by another server too.
    pub fn router(&self) -> Router {
        router(self.shared.clone())
    }

    /// Stops serving: held requests are released, pending responses dropped, and open
    /// connections given up to 5 s to finish.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(server) = self.server.take() {
            crate::util::stop_within_grace(server).await;
        }
        self.shared.responder.close().await;
    }
}

impl Drop for ChannelMock {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

fn check_channel(channel: ChannelId) -> anyhow::Result<()> {
    if CHANNELS.contains(&channel) {
        Ok(())
    } else {
        bail!("no channel mock for {channel}: only wink, elk and eissd")
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(wire::send_path(shared.channel), post(send::send))
        .merge(control::routes(shared.channel))
        .with_state(shared)
}

async fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_passwords_only() {
        for (url, shown) in [
            (
                "postgres://clm:s3cret@postgres:5432/clm",
                "postgres://clm:***@postgres:5432/clm",
            ),
            (
                "postgresql://u:p@dwh/db?sslmode=require",
                "postgresql://u:***@dwh/db?sslmode=require",
            ),
            (
                "postgres://dwh/db?user=u&password=s3cret",
                "postgres://dwh/db?user=u&password=***",
            ),
            (
                "http://u:s3cret@hub:8080/ingest",
                "http://u:***@hub:8080/ingest",
            ),
            ("postgres://clm@postgres/clm", "postgres://clm@postgres/clm"),
            (
                "sqlite://./data/eissd-dwh.db",
                "sqlite://./data/eissd-dwh.db",
            ),
            ("http://hub:8080/ingest/wink", "http://hub:8080/ingest/wink"),
            ("not a url://u:s3cret@host", "not a url://***@host"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn redacted_and_keeping_secrets_round_trip() {
        let current = ResponsesConfig {
            token: Some("t".into()),
            hmac_secret: Some("s".into()),
            ..ResponsesConfig::typical(ChannelId::Wink)
        };
        let shown = current.redacted();
        assert_eq!(shown.token.as_deref(), Some(REDACTED));
        assert_eq!(shown.hmac_secret.as_deref(), Some(REDACTED));
        assert_eq!(shown.kinds, current.kinds);
        assert_eq!(shown.clone().keeping_secrets_of(&current), current);
        assert_eq!(
            ResponsesConfig::default().redacted(),
            ResponsesConfig::default()
        );

        let replaced = ResponsesConfig {
            token: Some("new".into()),
            hmac_secret: None,
            ..shown
        }
        .keeping_secrets_of(&current);
        assert_eq!(replaced.token.as_deref(), Some("new"));
        assert_eq!(replaced.hmac_secret, None);
    }
}
