//! Automatic delivery reports: fire-and-forget tasks, bounded in concurrency, retried a few times,
//! counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use clm_contracts::sms::wire::JsonDlr;
use reqwest::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::kannel::{self, ReportFields};

/// How Kannel-dialect reports travel. JSON-dialect reports are always POSTed as JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlrMethod {
    /// `GET` the substituted `dlr-url`, as Kannel does.
    #[default]
    Get,
    /// `POST` to the `dlr-url` without its query, the substituted query as a form body.
    Post,
}

/// Automatic delivery reports. Per message a draw decides: delivered (`delivered_share`),
/// undelivered (`undelivered_share`) or no report at all (the rest).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DlrConfig {
    pub enabled: bool,
    pub delivered_share: f64,
    pub undelivered_share: f64,
    /// Delay between the answer to the send and the report.
    pub delay_ms: u64,
    pub method: DlrMethod,
    /// How long a report that the receiver refuses (connection refused, 408, 429, 5xx) is tried
    /// again, with backoff from 50 ms doubling to 5 s: as Kannel does with `http-request-retry`,
    /// so a hub restarting for a few seconds loses no report.
    pub retry_for_ms: u64,
}

impl Default for DlrConfig {
    fn default() -> Self {
        DlrConfig {
            enabled: true,
            delivered_share: 1.0,
            undelivered_share: 0.0,
            delay_ms: 0,
            method: DlrMethod::Get,
            retry_for_ms: 60_000,
        }
    }
}

impl DlrConfig {
    /// Checks the shares; the error names the field that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (name, share) in [
            ("delivered_share", self.delivered_share),
            ("undelivered_share", self.undelivered_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{name} must be between 0 and 1, got {share}"));
            }
        }
        if self.delivered_share + self.undelivered_share > 1.0 + f64::EPSILON {
            return Err("delivered_share + undelivered_share must not exceed 1".to_owned());
        }
        Ok(())
    }

    /// Which report a message gets, if any.
    pub(crate) fn draw(&self) -> Option<DlrOutcome> {
        if !self.enabled {
            return None;
        }
        let r = rand::random::<f64>();
        if r < self.delivered_share {
            Some(DlrOutcome::Delivered)
        } else if r < self.delivered_share + self.undelivered_share {
            Some(DlrOutcome::Undelivered)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DlrOutcome {
    Delivered,
    Undelivered,
}

/// A report to send: Kannel sends one per part, the JSON dialect one per message.
pub(crate) enum DlrJob {
    Kannel {
        /// `dlr-url` with its `%` escapes still in.
        template: String,
        part_ids: Vec<String>,
        outcome: DlrOutcome,
        to: String,
        from: String,
        method: DlrMethod,
    },
    Json {
        url: String,
        report: JsonDlr,
    },
}

/// The backoff before a report's second attempt, doubling up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Reports in flight at once, so a slow receiver cannot make the mock open unbounded connections.
const CONCURRENCY: usize = 64;

/// Sends reports in the background; cheap to clone.
#[derive(Clone)]
pub(crate) struct DlrSender(Arc<Inner>);

struct Inner {
    client: reqwest::Client,
    permits: Semaphore,
    sent: AtomicU64,
    failed: AtomicU64,
    shutdown: CancellationToken,
}

impl DlrSender {
    /// Needs a rustls crypto provider installed (see `SmsMock::start`).
    pub(crate) fn new(shutdown: CancellationToken) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .pool_idle_timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()?;
        Ok(DlrSender(Arc::new(Inner {
            client,
            permits: Semaphore::new(CONCURRENCY),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            shutdown,
        })))
    }

    /// Reports taken by the receiver, and reports given up on.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.0.sent.load(Relaxed), self.0.failed.load(Relaxed))
    }

    pub(crate) fn reset_counts(&self) {
        self.0.sent.store(0, Relaxed);
        self.0.failed.store(0, Relaxed);
    }

    /// Sends `job` after `delay`, retrying a refused report for `retry_for`, without blocking
    /// the caller; dropped on shutdown.
    pub(crate) fn spawn(&self, delay: Duration, retry_for: Duration, job: DlrJob) {
        let this = self.clone();
        tokio::spawn(async move {
            let shutdown = this.0.shutdown.clone();
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = this.run(delay, retry_for, job) => {}
            }
        });
    }

    async fn run(&self, delay: Duration, retry_for: Duration, job: DlrJob) {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let client = &self.0.client;
        match job {
            DlrJob::Kannel {
                template,
                part_ids,
                outcome,
                to,
                from,
                method,
            } => {
                for smsc_id in &part_ids {
                    let fields = ReportFields {
                        outcome,
                        smsc_id,
                        to: &to,
                        from: &from,
                        done_at: chrono::Utc::now(),
                    };
                    let url = kannel::substitute(&template, &fields);
                    match method {
                        DlrMethod::Get => self.deliver(retry_for, || client.get(&url)).await,
                        DlrMethod::Post => {
                            let (base, query) = url.split_once('?').unwrap_or((&url, ""));
                            self.deliver(retry_for, || {
                                client
                                    .post(base)
                                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                                    .body(query.to_owned())
                            })
                            .await;
                        }
                    }
                }
            }
            DlrJob::Json { url, report } => {
                self.deliver(retry_for, || client.post(&url).json(&report))
                    .await
            }
        }
    }

    /// One report, retried on transport errors, 408, 429 and 5xx with exponential backoff for
    /// as long as `retry_for` (at least one attempt).
    async fn deliver(&self, retry_for: Duration, request: impl Fn() -> reqwest::RequestBuilder) {
        let give_up_at = tokio::time::Instant::now() + retry_for;
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        let mut attempts = 0_u32;
        loop {
            if attempts > 0 {
                if tokio::time::Instant::now() + backoff > give_up_at {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            attempts += 1;
            let result = {
                // The permit bounds requests in flight, not reports waiting for their backoff.
                let Ok(_permit) = self.0.permits.acquire().await else {
                    return;
                };
                request().send().await
            };
            match result {
                Ok(response) if response.status().is_success() => {
                    self.0.sent.fetch_add(1, Relaxed);
                    return;
                }
                Ok(response) => {
                    let status = response.status();
                    last = status.to_string();
                    let retryable = status.is_server_error()
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                    if !retryable {
                        break;
                    }
                }
                // Without the URL: it carries the recipient.
                Err(error) => last = error.without_url().to_string(),
            }
        }
        self.0.failed.fetch_add(1, Relaxed);
        tracing::debug!(last = %last, attempts, "delivery report given up");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_decide_the_outcome() {
        let all_undelivered = DlrConfig {
            delivered_share: 0.0,
            undelivered_share: 1.0,
            ..DlrConfig::default()
        };
        assert_eq!(all_undelivered.draw(), Some(DlrOutcome::Undelivered));
        assert_eq!(DlrConfig::default().draw(), Some(DlrOutcome::Delivered));
        let none = DlrConfig {
            delivered_share: 0.0,
            ..DlrConfig::default()
        };
        assert_eq!(none.draw(), None);
        let disabled = DlrConfig {
            enabled: false,
            ..DlrConfig::default()
        };
        assert_eq!(disabled.draw(), None);
    }

    #[test]
    fn shares_above_one_are_rejected() {
        let bad = DlrConfig {
            delivered_share: 0.7,
            undelivered_share: 0.7,
            ..DlrConfig::default()
        };
        assert!(bad.validate().is_err());
        assert!(DlrConfig::default().validate().is_ok());
    }
}
