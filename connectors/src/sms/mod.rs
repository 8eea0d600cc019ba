//! SMS gateway connector, two dialects chosen in config:
//! - [`kannel`]: Kannel's `sendsms` HTTP interface (GET with query parameters), GSM 7-bit or UCS-2
//!   (`coding=2`, text as UTF-16BE bytes), delivery reports through `dlr-url`;
//! - [`json`]: a JSON HTTP gateway returning a message id, delivery reports POSTed as JSON.
//!
//! Both pass the remaining validity (`expires_at`) to the gateway in minutes, and put our
//! communication id into the delivery-report route so reports correlate even when the gateway
//! gives no message id (Kannel never does) or the send answer was lost to a timeout.

pub mod json;
pub mod kannel;
pub mod parts;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use clm_contracts::{ChannelId, Communication};

use crate::Connector;
use crate::outcome::{Outcome, classify_transport_error};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Kannel,
    Json,
}

/// Everything the connector needs; built by the hub from `channels.sms.gateway`.
#[derive(Clone)]
pub struct SmsConfig {
    pub dialect: Dialect,
    /// `sendsms` URL (Kannel) or the JSON send endpoint.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Alpha sender name or short number.
    pub from: String,
    pub dlr_mask: u32,
    /// The hub's delivery-report route (`…/ingest/sms`); `None` asks for no reports.
    pub dlr_url: Option<String>,
    /// Token appended to the report route, for gateways that cannot sign (Kannel).
    pub dlr_token: Option<String>,
    /// Connect timeout; the per-attempt timeout is the dispatcher's.
    pub connect_timeout: Duration,
    /// Connections kept open to the gateway.
    pub pool_size: usize,
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials and tokens never reach a log line.
        f.debug_struct("SmsConfig")
            .field("dialect", &self.dialect)
            .field("url", &self.url)
            .field("from", &self.from)
            .field("dlr_url", &self.dlr_url)
            .finish_non_exhaustive()
    }
}

/// Most of a gateway's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub struct SmsConnector {
    config: SmsConfig,
    client: reqwest::Client,
}

impl SmsConnector {
    pub fn new(config: SmsConfig) -> Result<SmsConnector, reqwest::Error> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.pool_size)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            // A gateway that redirects is misconfigured, and following it would resend the
            // message (with its credentials) somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(SmsConnector { config, client })
    }

    pub fn config(&self) -> &SmsConfig {
        &self.config
    }

    /// The report route for one communication: our id, then the token if any.
    fn report_route(&self, comm: &Communication, extra_query: &str) -> Option<String> {
        let base = self.config.dlr_url.as_ref()?;
        let sep = if base.contains('?') { '&' } else { '?' };
        let mut url = format!("{base}{sep}id={}", comm.id);
        if !extra_query.is_empty() {
            url.push('&');
            url.push_str(extra_query);
        }
        if let Some(t) = &self.config.dlr_token {
            url.push_str("&token=");
            url.extend(form_urlencoded::byte_serialize(t.as_bytes()));
        }
        Some(url)
    }
}

/// Minutes left until `expires_at`, rounded up, at least 1; `None` without an expiry.
pub fn validity_minutes(comm: &Communication, now: DateTime<Utc>) -> Option<u32> {
    let exp = comm.expires_at?;
    let secs = (exp - now).num_seconds().max(60);
    Some(u32::try_from((secs + 59) / 60).unwrap_or(u32::MAX))
}

#[async_trait]
impl Connector for SmsConnector {
    fn channel(&self) -> ChannelId {
        ChannelId::Sms
    }

    async fn send(&self, comm: &Communication) -> Outcome {
        let now = Utc::now();
        let request = match self.config.dialect {
            Dialect::Kannel => {
                let route =
                    self.report_route(comm, clm_contracts::sms::wire::kannel::DLR_URL_QUERY);
                kannel::request(&self.client, &self.config, comm, route.as_deref(), now)
            }
            Dialect::Json => {
                let route = self.report_route(comm, "");
                json::request(&self.client, &self.config, comm, route, now)
            }
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return classify_transport_error(&e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::outcome::parse_retry_after(v, now));
        // Kannel answers `0: Accepted for delivery`, the JSON dialect a small object: more is
        // not read, and an answer over the cap is never parsed.
        let body = match crate::outcome::read_capped(response, MAX_ANSWER_BYTES).await {
            Ok(b) if b.over_cap => format!(
                "[answer over {} KiB, not read further] {}",
                MAX_ANSWER_BYTES / 1024,
                crate::outcome::answer_excerpt(status, &b.text())
            ),
            Ok(b) => b.text().into_owned(),
            // The gateway said 2xx: it has the message, whatever happened to the body.
            Err(_) if (200..300).contains(&status) => String::new(),
            Err(e) => return classify_transport_error(&e),
        };
        match self.config.dialect {
            Dialect::Kannel => kannel::classify(status, retry_after, &body),
            Dialect::Json => json::classify(status, retry_after, &body),
        }
    }
}
