//! Callbacks to the hub's response service: `SubmitResponses` envelopes for the items a bundle
//! accepted, sent in the background once the bundle's answer went out, in envelopes of
//! `bundle_size` responses, retried with backoff on transport errors, HTTP 5xx (and 408, 429) and
//! retryable (`Server`) faults, and counted per outcome the hub answered.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use clm_contracts::soap::codec::{Body, Limits, WsSecurity, envelope, parse_envelope};
use clm_contracts::soap::{
    CrmResponse, CrmResponseKind, ResponseOutcome, SUBMIT_RESPONSES_ACTION, SourceSystem,
    SubmitResponses, SubmitResponsesResponse,
};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Correlate, CrmCallbacks, CrmKind};
use crate::channel::redact_url;

/// Attempts per envelope, and the backoff before the second one (then doubled): 5 attempts over
/// some 3.75 s.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Envelopes in flight at once, so a slow hub cannot make the mock open unbounded connections.
const CONCURRENCY: usize = 16;

/// The sender's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) sent: u64,
    pub(crate) failed: u64,
    pub(crate) retries: u64,
    pub(crate) responses: u64,
    pub(crate) recorded: u64,
    pub(crate) duplicate: u64,
    pub(crate) unknown_message: u64,
    pub(crate) invalid: u64,
}

/// Items accepted by one bundle, to be reported.
pub(crate) struct Plan {
    pub(crate) config: Arc<CrmCallbacks>,
    pub(crate) source: SourceSystem,
    pub(crate) bundle_id: String,
    /// (message id, CRM id), in the bundle's order.
    pub(crate) items: Vec<(String, String)>,
}

/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Callbacks(Arc<Inner>);

struct Inner {
    kind: CrmKind,
    client: reqwest::Client,
    permits: Semaphore,
    sent: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    responses: AtomicU64,
    recorded: AtomicU64,
    duplicate: AtomicU64,
    unknown_message: AtomicU64,
    invalid: AtomicU64,
    /// Warned once that callbacks have nowhere to go.
    warned: AtomicBool,
    shutdown: CancellationToken,
    /// Cancelled by a reset (pending callbacks are dropped) and replaced.
    pending: Mutex<CancellationToken>,
    tasks: TaskTracker,
}

/// What one attempt came to.
enum Attempt {
    Answered(SubmitResponsesResponse),
    Retry(String),
    GiveUp(String),
}

impl Callbacks {
    /// Needs a rustls crypto provider installed (see `CrmMock::detached`).
    pub(crate) fn new(kind: CrmKind, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .pool_idle_timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()?;
        Ok(Callbacks(Arc::new(Inner {
            kind,
            client,
            permits: Semaphore::new(CONCURRENCY),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            duplicate: AtomicU64::new(0),
            unknown_message: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            pending: Mutex::new(shutdown.child_token()),
            shutdown,
            tasks: TaskTracker::new(),
        })))
    }

    pub(crate) fn counts(&self) -> Counts {
        let i = &self.0;
        Counts {
            sent: i.sent.load(Relaxed),
            failed: i.failed.load(Relaxed),
            retries: i.retries.load(Relaxed),
            responses: i.responses.load(Relaxed),
            recorded: i.recorded.load(Relaxed),
            duplicate: i.duplicate.load(Relaxed),
            unknown_message: i.unknown_message.load(Relaxed),
            invalid: i.invalid.load(Relaxed),
        }
    }

    /// Drops pending callbacks and zeroes the counters.
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
        let i = &self.0;
        for counter in [
            &i.sent,
            &i.failed,
            &i.retries,
            &i.responses,
            &i.recorded,
            &i.duplicate,
            &i.unknown_message,
            &i.invalid,
        ] {
            counter.store(0, Relaxed);
        }
    }

    /// After shutdown was cancelled: waits (briefly) for the tasks to stop.
    pub(crate) async fn close(&self) {
        self.0.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.0.tasks.wait()).await;
    }

    /// Reports `plan` in the background once `answered` resolves (its sender is dropped when the
    /// bundle's answer was handed to the connection, or when the request ended without one):
    /// after `delay_ms`, every kind for every item, in envelopes of `bundle_size`.
    pub(crate) fn schedule(&self, plan: Plan, answered: oneshot::Receiver<()>) {
        let kinds: Vec<CrmResponseKind> = plan
            .config
            .kinds
            .iter()
            .filter_map(|k| k.parse().ok())
            .collect();
        if kinds.is_empty() || plan.items.is_empty() {
            return;
        }
        let this = self.clone();
        let pending = self
            .0
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.0.tasks.spawn(async move {
            tokio::select! {
                () = pending.cancelled() => {}
                () = this.report(plan, kinds, answered) => {}
            }
        });
    }

    async fn report(
        &self,
        plan: Plan,
        kinds: Vec<CrmResponseKind>,
        answered: oneshot::Receiver<()>,
    ) {
        // Never before the answer: the sender goes with the answer's body.
        let _ = answered.await;
        let config = &plan.config;
        let delay = Duration::from_millis(config.delay_ms);
        let correlate = config.correlate().unwrap_or(Correlate::MessageId);
        let Ok(version) = config.soap_version() else {
            return;
        };
        let security = config
            .auth
            .as_ref()
            .filter(|_| !config.basic)
            .map(|(u, p)| WsSecurity {
                username: u.clone(),
                password: p.clone(),
            });
        let mut responses = Vec::with_capacity(kinds.len() * plan.items.len());
        for kind in &kinds {
            for (message_id, crm_id) in &plan.items {
                let (message_id, crm_id) = match correlate {
                    Correlate::MessageId => (Some(message_id.clone()), None),
                    Correlate::CrmId => (None, Some(crm_id.clone())),
                    Correlate::Both => (Some(message_id.clone()), Some(crm_id.clone())),
                };
                responses.push(CrmResponse {
                    response_id: format!("R-{}", uuid::Uuid::new_v4().simple()),
                    message_id,
                    crm_id,
                    kind: *kind,
                    occurred_at: Utc::now(),
                    detail: None,
                });
            }
        }
        let size = config.bundle_size.clamp(1, clm_contracts::soap::MAX_BUNDLE);
        for chunk in responses.chunks(size) {
            tokio::time::sleep(delay).await;
            let message = SubmitResponses {
                source_system: plan.source,
                responses: chunk.to_vec(),
            };
            let Some(url) = &config.url else {
                self.0.failed.fetch_add(1, Relaxed);
                if !self.0.warned.swap(true, Relaxed) {
                    tracing::warn!(
                        kind = %self.0.kind,
                        "callbacks are configured but have no url: counted as failed"
                    );
                }
                continue;
            };
            let xml = envelope(version, &message, security.as_ref());
            let headers = Headers {
                content_type: version.content_type(Some(SUBMIT_RESPONSES_ACTION)),
                soap_action: version.soap_action_header(SUBMIT_RESPONSES_ACTION),
                basic: config.auth.as_ref().filter(|_| config.basic),
            };
            match self.deliver(url, &headers, xml).await {
                Ok(answer) => {
                    self.0.sent.fetch_add(1, Relaxed);
                    self.0
                        .responses
                        .fetch_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX), Relaxed);
                    for result in &answer.results {
                        let counter = match result.outcome {
                            ResponseOutcome::Recorded => &self.0.recorded,
                            ResponseOutcome::Duplicate => &self.0.duplicate,
                            ResponseOutcome::UnknownMessage => &self.0.unknown_message,
                            ResponseOutcome::Invalid => &self.0.invalid,
                        };
                        counter.fetch_add(1, Relaxed);
                    }
                    tracing::debug!(
                        kind = %self.0.kind,
                        bundle_id = %plan.bundle_id,
                        responses = chunk.len(),
                        "callbacks delivered"
                    );
                }
                Err(last) => {
                    self.0.failed.fetch_add(1, Relaxed);
                    tracing::warn!(
                        kind = %self.0.kind,
                        bundle_id = %plan.bundle_id,
                        url = %redact_url(url),
                        responses = chunk.len(),
                        %last,
                        "callbacks given up"
                    );
                }
            }
        }
    }

    /// One envelope, retried; `Err` holds the last failure.
    async fn deliver(
        &self,
        url: &str,
        headers: &Headers<'_>,
        xml: String,
    ) -> Result<SubmitResponsesResponse, String> {
        let body = bytes::Bytes::from(xml);
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                self.0.retries.fetch_add(1, Relaxed);
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            match self.attempt(url, headers, body.clone()).await {
                Attempt::Answered(answer) => return Ok(answer),
                Attempt::GiveUp(reason) => return Err(reason),
                Attempt::Retry(reason) => last = reason,
            }
        }
        Err(last)
    }

    async fn attempt(&self, url: &str, headers: &Headers<'_>, body: bytes::Bytes) -> Attempt {
        // The permit bounds requests in flight, not envelopes waiting for their backoff.
        let Ok(_permit) = self.0.permits.acquire().await else {
            return Attempt::GiveUp("closed".to_owned());
        };
        let mut request = self
            .0
            .client
            .post(url)
            .header(CONTENT_TYPE, &headers.content_type)
            .body(body);
        if let Some(action) = &headers.soap_action {
            request = request.header("SOAPAction", action);
        }
        if let Some((user, password)) = headers.basic {
            request = request.basic_auth(user, Some(password));
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Attempt::Retry(error.without_url().to_string()),
        };
        let status = response.status();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => return Attempt::Retry(error.without_url().to_string()),
        };
        let transient = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT;
        match parse_envelope(&bytes, Limits::DEFAULT) {
            Ok(parsed) => match parsed.body {
                Body::SubmitResponsesResponse(answer) if status.is_success() => {
                    Attempt::Answered(answer)
                }
                Body::Fault(fault) if fault.retryable() => {
                    Attempt::Retry(format!("{status}: retryable fault: {}", fault.reason))
                }
                Body::Fault(fault) => Attempt::GiveUp(format!("{status}: fault: {}", fault.reason)),
                other if transient => {
                    Attempt::Retry(format!("{status}: unexpected {}", other.element_name()))
                }
                other => Attempt::GiveUp(format!("{status}: unexpected {}", other.element_name())),
            },
            Err(_) if transient => Attempt::Retry(status.to_string()),
            Err(error) => Attempt::GiveUp(format!("{status}: unreadable answer: {error}")),
        }
    }
}

struct Headers<'a> {
    content_type: String,
    soap_action: Option<String>,
    basic: Option<&'a (String, String)>,
}
