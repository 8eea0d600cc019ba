//! Responses to accepted messages, in the background: webhooks POSTed to the hub (wink, elk),
//! signed and retried, or rows written to the EISSD DWH table. Never blocks an answer; bounded in
//! requests in flight; counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use clm_contracts::ChannelId;
use clm_contracts::channels::{SIGNATURE_HEADER, SIGNATURE_PREFIX};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ResponsesConfig;
use super::dwh::{Dwh, Row};
use super::wire::{self, Kind, Target};

/// Header carrying the shared ingest token (the hub's `/ingest` reads it; the token also goes as
/// `Authorization: Bearer`, the form `contracts/README.md` names).
pub const TOKEN_HEADER: &str = "X-CLM-Token";

/// Attempts per webhook, and the backoff before the second one (then doubled): 5 attempts over
/// some 7.5 s, longer when the receiver asks for it with `Retry-After` (up to [`MAX_RETRY_AFTER`]).
const WEBHOOK_ATTEMPTS: u32 = 5;
const WEBHOOK_FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Attempts per DWH row, and the backoff before the second one (then doubled).
const ROW_ATTEMPTS: u32 = 5;
const ROW_FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Requests in flight at once, so a slow receiver cannot make the mock open unbounded connections.
const CONCURRENCY: usize = 64;

/// Responses delivered, given up on, and duplicate copies sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) sent: u64,
    pub(crate) failed: u64,
    pub(crate) duplicated: u64,
}

/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Responder(Arc<Inner>);

struct Inner {
    channel: ChannelId,
    client: reqwest::Client,
    permits: Semaphore,
    dwh: Option<Dwh>,
    sent: AtomicU64,
    failed: AtomicU64,
    duplicated: AtomicU64,
    /// Warned once that responses have nowhere to go.
    warned: AtomicBool,
    shutdown: CancellationToken,
    /// Cancelled by a reset (pending responses of earlier messages are dropped) and replaced.
    pending: Mutex<CancellationToken>,
    tasks: TaskTracker,
}

/// One response, ready to go.
enum Job {
    Webhook {
        url: String,
        body: Bytes,
        event_id: String,
    },
    Row(Row),
}

impl Responder {
    /// Needs a rustls crypto provider installed (see `ChannelMock::start`).
    pub(crate) fn new(
        channel: ChannelId,
        dwh: Option<Dwh>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .pool_idle_timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()?;
        Ok(Responder(Arc::new(Inner {
            channel,
            client,
            permits: Semaphore::new(CONCURRENCY),
            dwh,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            pending: Mutex::new(shutdown.child_token()),
            shutdown,
            tasks: TaskTracker::new(),
        })))
    }

    pub(crate) fn counts(&self) -> Counts {
        Counts {
            sent: self.0.sent.load(Relaxed),
            failed: self.0.failed.load(Relaxed),
            duplicated: self.0.duplicated.load(Relaxed),
        }
    }

    /// Drops pending responses and zeroes the counters.
    pub(crate) fn reset(&self) {
        {
            let mut pending = self
                .0
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            pending.cancel();
            *pending = self.0.shutdown.child_token();
        }
        for counter in [&self.0.sent, &self.0.failed, &self.0.duplicated] {
            counter.store(0, Relaxed);
        }
    }

    /// After shutdown was cancelled: waits (briefly) for the tasks to stop, then closes the DWH.
    pub(crate) async fn close(&self) {
        self.0.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.0.tasks.wait()).await;
        if let Some(dwh) = &self.0.dwh {
            dwh.close().await;
        }
    }

    /// Sends `config.kinds` for `target` in the background: the first after `delay_ms`, then one
    /// every `delay_ms`, each after the one before was delivered or given up on.
    pub(crate) fn schedule(&self, config: &Arc<ResponsesConfig>, target: Target) {
        if config.kinds.is_empty() {
            return;
        }
        let kinds: Vec<Kind> = config
            .kinds
            .iter()
            .filter_map(|k| Kind::parse(self.0.channel, k).ok())
            .collect();
        let (this, config) = (self.clone(), config.clone());
        self.spawn(async move {
            let delay = Duration::from_millis(config.delay_ms);
            for kind in kinds {
                tokio::time::sleep(delay).await;
                match this.job(&config, &target, kind) {
                    Some((_, job)) => this.deliver(&config, &target, job).await,
                    None => this.no_destination(),
                }
            }
        });
    }

    /// One response of `kind` for `target`, now; returns its event or response id.
    pub(crate) fn respond_now(
        &self,
        config: &Arc<ResponsesConfig>,
        target: Target,
        kind: Kind,
    ) -> Result<String, String> {
        let Some((id, job)) = self.job(config, &target, kind) else {
            return Err(match self.0.channel {
                ChannelId::Eissd => "no DWH configured (dwh_url)".to_owned(),
                _ => "no webhook_url configured".to_owned(),
            });
        };
        let (this, config) = (self.clone(), config.clone());
        self.spawn(async move { this.deliver(&config, &target, job).await });
        Ok(id)
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let pending = self
            .0
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.0.tasks.spawn(async move {
            tokio::select! {
                () = pending.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// The response to send, with its id; `None` when there is nowhere to send it.
    fn job(&self, config: &ResponsesConfig, target: &Target, kind: Kind) -> Option<(String, Job)> {
        match kind {
            Kind::Eissd(_) => {
                self.0.dwh.as_ref()?;
                let row = Row {
                    response_id: format!("r-{}", wire::fresh_uuid()),
                    message_id: target.message_id,
                    eissd_id: target.external_id.clone(),
                    kind: kind.as_str(),
                };
                Some((row.response_id.clone(), Job::Row(row)))
            }
            Kind::Wink(_) | Kind::Elk(_) => {
                let url = config.webhook_url.clone()?;
                let (event_id, body) = wire::webhook(target, kind)?;
                let job = Job::Webhook {
                    url,
                    body: Bytes::from(body),
                    event_id: event_id.clone(),
                };
                Some((event_id, job))
            }
        }
    }

    fn no_destination(&self) {
        self.0.failed.fetch_add(1, Relaxed);
        if !self.0.warned.swap(true, Relaxed) {
            let what = match self.0.channel {
                ChannelId::Eissd => "no DWH (dwh_url)",
                _ => "no webhook_url",
            };
            tracing::warn!(
                channel = %self.0.channel,
                "responses are configured but have {what}: counted as failed"
            );
        }
    }

    async fn deliver(&self, config: &ResponsesConfig, target: &Target, job: Job) {
        match job {
            Job::Row(row) => {
                let delivered = self.insert(&row).await;
                self.count(delivered);
                if !delivered {
                    tracing::warn!(
                        message_id = %row.message_id,
                        response_id = %row.response_id,
                        "eissd mock: response row given up"
                    );
                }
            }
            Job::Webhook {
                url,
                body,
                event_id,
            } => {
                let signature = config.hmac_secret.as_deref().map(|s| sign(s, &body));
                let headers = WebhookHeaders {
                    token: config.token.as_deref(),
                    signature: signature.as_deref(),
                };
                let copies = if config.duplicate_rate > 0.0
                    && rand::random::<f64>() < config.duplicate_rate
                {
                    self.0.duplicated.fetch_add(1, Relaxed);
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let result = self.post(&url, &headers, &body).await;
                    self.count(result.is_ok());
                    if let Err(last) = result {
                        tracing::warn!(
                            channel = %self.0.channel,
                            message_id = %target.message_id,
                            %event_id,
                            %last,
                            "webhook given up"
                        );
                    }
                }
            }
        }
    }

    fn count(&self, delivered: bool) {
        let counter = if delivered {
            &self.0.sent
        } else {
            &self.0.failed
        };
        counter.fetch_add(1, Relaxed);
    }

    /// One webhook, retried on transport errors, 408, 429 and 5xx with exponential backoff (or
    /// the receiver's `Retry-After`). `Err` holds the last failure.
    async fn post(
        &self,
        url: &str,
        headers: &WebhookHeaders<'_>,
        body: &Bytes,
    ) -> Result<(), String> {
        let mut backoff = WEBHOOK_FIRST_BACKOFF;
        let mut wait = Duration::ZERO;
        let mut last = String::new();
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(wait.max(backoff)).await;
                backoff *= 2;
            }
            let result = {
                // The permit bounds requests in flight, not webhooks waiting for their backoff.
                let Ok(_permit) = self.0.permits.acquire().await else {
                    return Err("closed".to_owned());
                };
                let mut request = self
                    .0
                    .client
                    .post(url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
                if let Some(token) = headers.token {
                    request = request
                        .header(TOKEN_HEADER, token)
                        .header(AUTHORIZATION, format!("Bearer {token}"));
                }
                if let Some(signature) = headers.signature {
                    request = request.header(SIGNATURE_HEADER, signature);
                }
                request.send().await
            };
            match result {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    last = status.to_string();
                    let retryable = status.is_server_error()
                        || status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::REQUEST_TIMEOUT;
                    if !retryable {
                        return Err(last);
                    }
                    wait = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map_or(Duration::ZERO, |secs| {
                            Duration::from_secs(secs).min(MAX_RETRY_AFTER)
                        });
                }
                Err(error) => {
                    last = error.without_url().to_string();
                    wait = Duration::ZERO;
                }
            }
        }
        Err(last)
    }

    /// One row, retried; true once committed.
    async fn insert(&self, row: &Row) -> bool {
        let Some(dwh) = &self.0.dwh else {
            return false;
        };
        let mut backoff = ROW_FIRST_BACKOFF;
        for attempt in 1..=ROW_ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            match dwh.insert(row).await {
                Ok(()) => return true,
                // A retry after a commit whose answer was lost: the row is there.
                Err(error)
                    if attempt > 1
                        && error
                            .as_database_error()
                            .is_some_and(|e| e.is_unique_violation()) =>
                {
                    return true;
                }
                Err(error) => {
                    tracing::debug!(%error, attempt, response_id = %row.response_id, "eissd mock: insert failed");
                }
            }
        }
        false
    }
}

struct WebhookHeaders<'a> {
    token: Option<&'a str>,
    signature: Option<&'a str>,
}

/// `sha256=<lowercase hex HMAC-SHA256 of body keyed with secret>`.
pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!(
        "{SIGNATURE_PREFIX}{}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
