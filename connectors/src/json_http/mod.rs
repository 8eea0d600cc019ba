//! The HTTP(S) JSON channels `wink`, `elk` and `eissd`: one connector type, the channel picks the
//! request mapping and the answer type (`clm_contracts::channels`, `contracts/README.md`).
//!
//! - Send: `POST {base_url}{SEND_PATH}` with the channel's `SendRequest` as JSON and the configured
//!   auth header (bearer token, basic, or an API key in a named header). `http://` base URLs are
//!   allowed (local mocks); `https://` uses rustls (ring) with the operating system's trust store
//!   plus the certificates of `ca_file`, and a client certificate for mutual TLS when configured.
//! - Answer: 2xx is sent (the channel's id, when its answer is readable, becomes the external id);
//!   anything else goes through the shared [`classify_http_error`], with the error body's
//!   `error: message` as the recorded answer. At most 64 KiB of an answer is read; a longer one
//!   is not read further and counts as unreadable (no redirect is followed either).
//! - Responses: [`parse_webhook`] for Wink and ELK webhooks, [`row_report`] for EISSD's DWH rows.
//!
//! No answer, reason or error ever carries the request URL or a credential.

mod client;
mod request;
mod webhook;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use clm_contracts::channels::{ErrorBody, eissd, elk, wink};
use clm_contracts::{ChannelId, Communication};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};

use crate::Connector;
use crate::outcome::{
    CappedBody, Outcome, answer_excerpt, classify_http_error, classify_transport_error,
    parse_retry_after, read_capped,
};

pub use webhook::{parse_webhook, row_report};

/// Where and how to reach one channel; built by the hub from `channels.<id>`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://host[:port][/prefix]` (or `http://` for a local mock); the send path is appended.
    pub base_url: String,
    pub auth: Auth,
    pub tls: TlsFiles,
    /// Connect timeout; the per-attempt timeout is the dispatcher's.
    pub connect_timeout: Duration,
    /// Idle connections kept open to the channel.
    pub pool_size: usize,
}

/// How the hub proves who it is on every request; also the config's type
/// (`channels.<id>.endpoint.auth`): `{ kind = "bearer", token = "…" }`,
/// `{ kind = "basic", username = "…", password = "…" }`,
/// `{ kind = "api_key", header = "X-Api-Key", value = "…" }` or
/// `{ kind = "ws_security", username = "…", password = "…" }`.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// Nothing (not a config value: leave `auth` out instead).
    #[serde(skip)]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer { token: String },
    /// `Authorization: Basic <base64(username:password)>`.
    Basic { username: String, password: String },
    /// `<header>: <value>`, e.g. `X-API-Key: …`.
    ApiKey { header: String, value: String },
    /// A WS-Security UsernameToken (`PasswordText`) in every SOAP request's header (the CRM
    /// channels); no HTTP header.
    WsSecurity { username: String, password: String },
}

impl Auth {
    /// The WS-Security credentials, for the SOAP header.
    pub fn ws_security(&self) -> Option<crate::soap::WsSecurity> {
        match self {
            Auth::WsSecurity { username, password } => Some(crate::soap::WsSecurity {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach a log line.
        const REDACTED: &str = "<redacted>";
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer { .. } => f.debug_struct("Bearer").field("token", &REDACTED).finish(),
            Auth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &REDACTED)
                .finish(),
            Auth::ApiKey { header, .. } => f
                .debug_struct("ApiKey")
                .field("header", header)
                .field("value", &REDACTED)
                .finish(),
            Auth::WsSecurity { username, .. } => f
                .debug_struct("WsSecurity")
                .field("username", username)
                .field("password", &REDACTED)
                .finish(),
        }
    }
}

/// PEM files for TLS. `ca_file`: one or more CA certificates trusted in addition to the system's.
/// `client_cert_file` (leaf first, then intermediates) and `client_key_file`: both or neither, the
/// client identity for mutual TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

/// Why a connector could not be built; the message names the setting (and file) and the problem,
/// never a secret.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("channel `{0}` has no connector of this kind")]
    Channel(ChannelId),
    #[error("base_url: {0}")]
    BaseUrl(String),
    #[error("auth: {0}")]
    Auth(String),
    #[error("{setting} `{}`: {problem}", path.display())]
    File {
        /// `ca_file`, `client_cert_file` or `client_key_file`.
        setting: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("tls: {0}")]
    Tls(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The HTTP client for an endpoint, as every HTTP channel builds it: rustls with the system
/// roots plus `ca_file`, the client identity, the pool, no redirects. Shared with the SOAP
/// channels ([`crate::crm`]).
pub fn build_client(endpoint: &Endpoint) -> Result<reqwest::Client, BuildError> {
    client::auth_header(&endpoint.auth)?;
    client::build(endpoint)
}

/// The auth header of an endpoint (`None` without auth, or when it is invalid, which
/// [`build_client`] refuses first).
pub fn auth_header_of(
    endpoint: &Endpoint,
) -> Option<(reqwest::header::HeaderName, reqwest::header::HeaderValue)> {
    client::auth_header(&endpoint.auth).ok().flatten()
}

/// Most bytes of a channel's answer read (the answers are small JSON); a longer one is not read
/// further and counts as an answer that could not be understood.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The connector of one HTTP JSON channel.
pub struct JsonHttpConnector {
    channel: ChannelId,
    url: reqwest::Url,
    auth: Option<(HeaderName, HeaderValue)>,
    client: reqwest::Client,
}

impl std::fmt::Debug for JsonHttpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonHttpConnector")
            .field("channel", &self.channel)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl JsonHttpConnector {
    pub fn new(channel: ChannelId, endpoint: Endpoint) -> Result<Self, BuildError> {
        let path = request::send_path(channel).ok_or(BuildError::Channel(channel))?;
        let url = send_url(&endpoint.base_url, path)?;
        let auth = client::auth_header(&endpoint.auth)?;
        let client = client::build(&endpoint)?;
        Ok(JsonHttpConnector {
            channel,
            url,
            auth,
            client,
        })
    }

    /// The URL requests go to (no credentials in it: `base_url` refuses them).
    pub fn send_url(&self) -> &str {
        self.url.as_str()
    }
}

/// `{base_url without trailing /}{path}`, refusing what would send the message somewhere odd.
fn send_url(base_url: &str, path: &str) -> Result<reqwest::Url, BuildError> {
    let mut url = reqwest::Url::parse(base_url.trim())
        .map_err(|e| BuildError::BaseUrl(format!("not an absolute http(s) URL ({e})")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(BuildError::BaseUrl(format!(
                "scheme `{other}` is not http or https"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(BuildError::BaseUrl("has no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BuildError::BaseUrl(
            "must not carry credentials (user:password@); configure auth instead".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(BuildError::BaseUrl(
            "must not have a query or a fragment; the send path is appended to it".into(),
        ));
    }
    let full = format!("{}{path}", url.path().trim_end_matches('/'));
    url.set_path(&full);
    Ok(url)
}

#[async_trait]
impl Connector for JsonHttpConnector {
    fn channel(&self) -> ChannelId {
        self.channel
    }

    async fn send(&self, comm: &Communication) -> Outcome {
        if comm.channel != self.channel {
            return Outcome::Fail {
                reason: format!(
                    "communication is for channel `{}`, this connector sends to `{}`",
                    comm.channel, self.channel
                ),
                answer: String::new(),
            };
        }
        let body = match request::body(self.channel, comm) {
            Ok(b) => b,
            Err(problem) => {
                return Outcome::Fail {
                    reason: format!("cannot make a {} request: {problem}", self.channel),
                    answer: String::new(),
                };
            }
        };
        let mut rb = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(body);
        if let Some((name, value)) = &self.auth {
            rb = rb.header(name.clone(), value.clone());
        }
        let response = match rb.send().await {
            Ok(r) => r,
            Err(e) => return classify_transport_error(&e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let body = read_capped(response, MAX_ANSWER_BYTES).await;
        classify(self.channel, status, retry_after, body)
    }
}

/// Classifies one HTTP answer of `channel`. `body` is the answer body or the error reading it.
fn classify(
    channel: ChannelId,
    status: u16,
    retry_after: Option<Duration>,
    body: Result<CappedBody, reqwest::Error>,
) -> Outcome {
    let body = match body {
        Ok(b) if b.over_cap => {
            // Not a small JSON answer: garbage, whatever its start says (it is not parsed).
            let mut answer = answer_excerpt(status, &b.text());
            answer.push_str(&format!(
                " [unreadable answer: longer than {} KiB, not read further]",
                MAX_ANSWER_BYTES / 1024
            ));
            if (200..300).contains(&status) {
                return Outcome::Sent {
                    external_id: None,
                    answer,
                };
            }
            return classify_http_error(status, retry_after, answer);
        }
        Ok(b) => b.text().into_owned(),
        Err(e) => {
            // The status line arrived: the channel has spoken, whatever happened to the body. A
            // 2xx means it has the message (resending would duplicate it).
            let why = classify_transport_error(&e).answer().to_owned();
            let answer = format!("{} (answer body could not be read: {why})", status);
            if (200..300).contains(&status) {
                return Outcome::Sent {
                    external_id: None,
                    answer,
                };
            }
            return classify_http_error(status, retry_after, answer);
        }
    };
    if (200..300).contains(&status) {
        let (external_id, problem) = answer_id(channel, &body);
        let mut answer = answer_excerpt(status, &body);
        if let Some(problem) = problem {
            answer.push_str(&format!(" [unreadable answer: {problem}]"));
        }
        return Outcome::Sent {
            external_id,
            answer,
        };
    }
    let answer = match serde_json::from_str::<ErrorBody>(&body) {
        Ok(ErrorBody {
            error,
            message: Some(message),
        }) => answer_excerpt(status, &format!("{error}: {message}")),
        Ok(ErrorBody {
            error,
            message: None,
        }) => answer_excerpt(status, &error),
        Err(_) => answer_excerpt(status, &body),
    };
    classify_http_error(status, retry_after, answer)
}

/// The channel's id from a 2xx answer, read tolerantly (unknown fields ignored), and what is wrong
/// with the answer when it is not the contract's.
fn answer_id(channel: ChannelId, body: &str) -> (Option<String>, Option<String>) {
    let parsed = match channel {
        ChannelId::Wink => serde_json::from_str::<wink::SendResponse>(body).map(|r| r.wink_id),
        ChannelId::Elk => serde_json::from_str::<elk::SendResponse>(body).map(|r| r.elk_id),
        ChannelId::Eissd => serde_json::from_str::<eissd::SendResponse>(body).map(|r| r.eissd_id),
        other => return (None, Some(format!("channel `{other}` has no answer type"))),
    };
    match parsed {
        Ok(id) if id.trim().is_empty() => (None, Some("the id is empty".into())),
        Ok(id) => (Some(id), None),
        Err(e) => {
            let msg = e.to_string();
            let msg: String = msg.chars().take(120).collect();
            (None, Some(msg))
        }
    }
}
