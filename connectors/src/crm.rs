//! The CRM channels over SOAP (`wsdl/`): SAP CRM directly (`sap_crm`), Amdocs CRM 7.5 and CRM B2C
//! through the CRM ESB (`amdocs`, `crm_b2c`; the target system is part of the message).
//!
//! # Bundles
//! Each [`Connector::send`] hands its communication to the connector's bundler and waits for that
//! item's outcome. The bundler sends a `SendCommunications` bundle when `bundle_size` items are
//! waiting or `bundle_wait` after the first one arrived, whichever comes first, with up to
//! `parallel_bundles` bundles in flight; every item gets the outcome of its own `ItemResult`.
//! The dispatcher's policy stack applies per item as for every channel (rate, concurrency,
//! breaker, per-item timeout around the wait, the call and the reconciliation).
//!
//! # Classification (STYLE: one place, explicit)
//! - `ItemResult` `Accepted` or `Duplicate` (the CRM has it already: a resend after a lost
//!   answer) → sent, the CRM's id as external id; `Rejected` → failed, with its code and text.
//! - SOAP `Client` fault → every item failed; `Server` fault (or a `ClmFault` marked retryable),
//!   HTTP 5xx without a fault, connection errors → retry; HTTP 429 → retry, throttled.
//! - No answer within `request_timeout` after the request went out, or the connection broke after
//!   it: the CRM may have the bundle. It is **not** resent blindly: the connector asks
//!   `GetCommunicationStatus` for the bundle's ids (up to `reconcile_attempts` times, with
//!   backoff): `Accepted` → sent, `Rejected` → failed, `Unknown` (the CRM never got it) → retry,
//!   which resends safely. If every status query fails, the items end `unknown`. Each item's
//!   attempt log records the timeout and every status query made for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clm_contracts::soap::{
    Attribute, CommunicationItem, GetCommunicationStatus, ItemState, ItemStatus, ItemStatusCode,
    SendCommunications, TargetSystem,
};
use clm_contracts::{ChannelId, Communication};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, warn};

use crate::Connector;
use crate::json_http::{BuildError, Endpoint};
use crate::outcome::{
    Outcome, answer_excerpt, classify_http_error, parse_retry_after, read_capped,
};
use crate::soap::{Body, FaultCode, Limits, SoapVersion, WsSecurity, envelope, parse_envelope};

/// Everything a CRM connector needs; built by the hub from `channels.<id>`.
#[derive(Debug, Clone)]
pub struct CrmConfig {
    /// The service URL (the SOAP endpoint itself; nothing is appended), auth (`Basic` or none)
    /// and TLS.
    pub endpoint: Endpoint,
    /// A WS-Security UsernameToken in every request's header, instead of or besides Basic.
    pub ws_security: Option<WsSecurity>,
    pub version: SoapVersion,
    /// Most items per bundle (1..=1000).
    pub bundle_size: usize,
    /// Longest the first item of a bundle waits for more.
    pub bundle_wait: Duration,
    /// Bundles in flight at once.
    pub parallel_bundles: usize,
    /// One HTTP exchange's time limit (send or status query).
    pub request_timeout: Duration,
    /// Status queries after a send that ended without an answer.
    pub reconcile_attempts: u32,
    /// The dispatcher's per-attempt timeout around [`Connector::send`] (longer than
    /// [`CrmConfig::worst_case`]). What it leaves beyond the worst case is how long an item may
    /// wait for a free bundle slot: one that gets none in time comes back as a retry, never
    /// sent, instead of running into the dispatcher's timeout as `unknown`.
    pub attempt_timeout: Duration,
}

impl CrmConfig {
    /// The longest one item can take in the connector: waiting for its bundle, the send, and
    /// every reconciliation query with its backoff. The dispatcher's per-attempt timeout must be
    /// longer, or it would cut reconciliation short.
    pub fn worst_case(&self) -> Duration {
        worst_case(
            self.bundle_wait,
            self.request_timeout,
            self.reconcile_attempts,
        )
    }
}

/// The longest one item can take in a CRM connector with these settings (see
/// [`CrmConfig::worst_case`]); the hub's config check uses the same.
pub fn worst_case(bundle_wait: Duration, request_timeout: Duration, queries: u32) -> Duration {
    let backoff: Duration = (0..queries).map(reconcile_backoff).sum();
    bundle_wait
        .saturating_add(request_timeout.saturating_mul(1 + queries))
        .saturating_add(backoff)
}

impl CrmConfig {
    /// Longest an item may wait before its bundle's request starts: its bundle's gathering,
    /// then whatever the attempt's timeout leaves beyond the worst case, less a margin for the
    /// answer to reach the dispatcher first.
    fn queue_limit(&self) -> Duration {
        let spare = self.attempt_timeout.saturating_sub(self.worst_case());
        self.bundle_wait + spare.saturating_sub(QUEUE_MARGIN.min(spare / 2))
    }
}

/// Room left between an item's queue limit and the dispatcher's timeout.
const QUEUE_MARGIN: Duration = Duration::from_millis(500);

/// An item's fate between the caller and the bundler: whichever moves it first from `QUEUED`
/// decides whether it is sent (`TAKEN`, by the bundler) or not (`WITHDRAWN`, by its caller at
/// its queue limit).
const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

type Fate = Arc<std::sync::atomic::AtomicU8>;

fn reconcile_backoff(n: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << n.min(6)))
}

type Reply = (oneshot::Sender<Outcome>, Fate);

/// The connector of one CRM channel.
pub struct CrmConnector {
    channel: ChannelId,
    tx: mpsc::Sender<(CommunicationItem, Reply)>,
    sender: Arc<Sender>,
}

struct Sender {
    channel: ChannelId,
    target: Option<TargetSystem>,
    config: CrmConfig,
    client: reqwest::Client,
    url: reqwest::Url,
}

impl CrmConnector {
    /// Builds the HTTP client and starts the bundler (on the current Tokio runtime).
    pub fn new(channel: ChannelId, config: CrmConfig) -> Result<CrmConnector, BuildError> {
        let target = match channel {
            ChannelId::SapCrm => None,
            ChannelId::Amdocs | ChannelId::CrmB2c => TargetSystem::for_channel(channel),
            other => return Err(BuildError::Channel(other)),
        };
        let client = crate::json_http::build_client(&config.endpoint)?;
        let url = reqwest::Url::parse(&config.endpoint.base_url)
            .map_err(|e| BuildError::BaseUrl(e.to_string()))?;
        let bundle_size = config.bundle_size.clamp(1, clm_contracts::soap::MAX_BUNDLE);
        let (tx, rx) = mpsc::channel(bundle_size * 4);
        let sender = Arc::new(Sender {
            channel,
            target,
            config: CrmConfig {
                bundle_size,
                ..config
            },
            client,
            url,
        });
        tokio::spawn(bundler(Arc::clone(&sender), rx));
        Ok(CrmConnector {
            channel,
            tx,
            sender,
        })
    }
}

#[async_trait]
impl Connector for CrmConnector {
    fn channel(&self) -> ChannelId {
        self.channel
    }

    fn reconciles(&self) -> bool {
        true
    }

    /// One `GetCommunicationStatus` per 1000 ids (the hub's later reconciliation of items whose
    /// in-attempt status queries all failed).
    async fn reconcile(&self, ids: &[uuid::Uuid]) -> Result<Vec<(uuid::Uuid, Outcome)>, String> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(clm_contracts::soap::MAX_BUNDLE) {
            let query = GetCommunicationStatus {
                target_system: self.sender.target,
                message_ids: chunk.iter().map(ToString::to_string).collect(),
            };
            let xml = envelope(
                self.sender.config.version,
                &query,
                self.sender.config.ws_security.as_ref(),
            );
            match self.sender.exchange(query.soap_action(), xml).await {
                Exchange::Answer(Body::GetCommunicationStatusResponse(_, answer)) => {
                    for s in &answer.statuses {
                        let Ok(id) = s.message_id.parse::<uuid::Uuid>() else {
                            continue;
                        };
                        if chunk.contains(&id) {
                            out.push((id, reconciled("reconciled later: status query", Some(s))));
                        }
                    }
                }
                Exchange::Answer(Body::Fault(f)) => {
                    return Err(format!(
                        "status query fault {:?}: {}",
                        f.code,
                        excerpt(&f.reason)
                    ));
                }
                Exchange::Answer(other) => {
                    return Err(format!("status query answered {}", other.element_name()));
                }
                Exchange::Failed(o) => return Err(format!("status query failed: {}", o.answer())),
                Exchange::Lost(what) => return Err(format!("status query lost: {what}")),
            }
        }
        Ok(out)
    }

    async fn send(&self, comm: &Communication) -> Outcome {
        use std::sync::atomic::Ordering;
        let (reply, mut answer) = oneshot::channel();
        let fate: Fate = Arc::new(std::sync::atomic::AtomicU8::new(QUEUED));
        let limit = tokio::time::Instant::now() + self.sender.config.queue_limit();
        if self
            .tx
            .send((item(comm), (reply, Arc::clone(&fate))))
            .await
            .is_err()
        {
            return Outcome::Retry {
                after: None,
                reason: "the connector is shutting down".into(),
                answer: String::new(),
                throttled: false,
            };
        }
        let lost = |_| Outcome::Unknown {
            reason: "the bundle's task ended without an outcome".into(),
            answer: String::new(),
        };
        tokio::select! {
            biased;
            o = &mut answer => return o.unwrap_or_else(lost),
            _ = tokio::time::sleep_until(limit) => {}
        }
        if fate
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Outcome::Retry {
                after: None,
                reason: "no free bundle slot in time (parallel_bundles busy); not sent".into(),
                answer: String::new(),
                throttled: false,
            };
        }
        // Its bundle is out: the answer (or the reconciliation) decides.
        answer.await.unwrap_or_else(lost)
    }
}

/// A communication as a bundle item.
fn item(comm: &Communication) -> CommunicationItem {
    CommunicationItem {
        message_id: comm.id.to_string(),
        campaign_id: comm.campaign_id.clone(),
        customer_id: comm.customer_id.clone(),
        recipient: Some(comm.recipient.clone()).filter(|r| !r.is_empty()),
        subject: comm.content.subject.clone(),
        text: comm.content.text.clone(),
        offer_code: comm.content.offer_code.clone(),
        valid_from: comm.not_before,
        valid_until: comm.expires_at,
        attributes: comm
            .attributes
            .iter()
            .map(|(k, v)| Attribute {
                name: k.clone(),
                value: v.clone(),
            })
            .collect(),
    }
}

/// Gathers items into bundles and sends them, `parallel_bundles` at a time.
async fn bundler(sender: Arc<Sender>, mut rx: mpsc::Receiver<(CommunicationItem, Reply)>) {
    let slots = Arc::new(Semaphore::new(sender.config.parallel_bundles.max(1)));
    let size = sender.config.bundle_size;
    let mut pending: Vec<(CommunicationItem, Reply)> = Vec::with_capacity(size);
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(first) => pending.push(first),
                None => return,
            }
        }
        let deadline = tokio::time::Instant::now() + sender.config.bundle_wait;
        while pending.len() < size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => pending.push(next),
                // Closed: send what we have, then stop.
                Ok(None) | Err(_) => break,
            }
        }
        let mut bundle = std::mem::replace(&mut pending, Vec::with_capacity(size));
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        // An item whose caller gave up meanwhile (the dispatcher's per-attempt timeout,
        // shutdown) is not sent: its attempt is already recorded, and sending it now would go
        // behind the dispatcher's back.
        // An item withdrawn at its queue limit is not sent either; the rest are taken here,
        // after which their callers wait for the answer whatever it takes.
        bundle.retain(|(_, (reply, fate))| {
            !reply.is_closed()
                && fate
                    .compare_exchange(
                        QUEUED,
                        TAKEN,
                        std::sync::atomic::Ordering::AcqRel,
                        std::sync::atomic::Ordering::Acquire,
                    )
                    .is_ok()
        });
        if bundle.is_empty() {
            drop(permit);
            continue;
        }
        let sender = Arc::clone(&sender);
        tokio::spawn(async move {
            sender.send_bundle(bundle).await;
            drop(permit);
        });
        if rx.is_closed() && rx.is_empty() {
            return;
        }
    }
}

/// What one HTTP exchange came to.
enum Exchange {
    Answer(Body),
    /// No usable answer: the outcome for every item.
    Failed(Outcome),
    /// The request went out and no answer came (timeout, connection broken after sending).
    Lost(String),
}

impl Sender {
    async fn send_bundle(&self, bundle: Vec<(CommunicationItem, Reply)>) {
        let bundle_id = uuid::Uuid::now_v7().to_string();
        let (items, replies): (Vec<_>, Vec<_>) = bundle.into_iter().unzip();
        let ids: Vec<String> = items.iter().map(|i| i.message_id.clone()).collect();
        let request = SendCommunications {
            target_system: self.target,
            bundle_id: bundle_id.clone(),
            items,
        };
        debug!(channel = %self.channel, bundle = %bundle_id, items = ids.len(), "sending bundle");
        let xml = envelope(
            self.config.version,
            &request,
            self.config.ws_security.as_ref(),
        );
        let outcomes = match self.exchange(request.soap_action(), xml).await {
            Exchange::Answer(Body::SendCommunicationsResponse(_, answer)) => {
                let by_id: HashMap<&str, _> = answer
                    .results
                    .iter()
                    .map(|r| (r.message_id.as_str(), r))
                    .collect();
                ids.iter()
                    .map(|id| match by_id.get(id.as_str()) {
                        Some(r) => item_outcome(&bundle_id, r.status, r),
                        // The CRM answered for the bundle but not for this item: ask, do not guess.
                        None => Outcome::Unknown {
                            reason: "the CRM's answer had no result for this item".into(),
                            answer: format!("bundle {bundle_id}: no ItemResult"),
                        },
                    })
                    .collect()
            }
            Exchange::Answer(Body::Fault(f)) => {
                let answer = format!(
                    "bundle {bundle_id}: SOAP fault {:?}: {}",
                    f.code,
                    excerpt(&f.reason)
                );
                let outcome = if f.code == FaultCode::Client && !f.retryable() {
                    Outcome::Fail {
                        reason: "the CRM refused the bundle (Client fault)".into(),
                        answer,
                    }
                } else {
                    Outcome::Retry {
                        after: None,
                        reason: "the CRM failed on its side (Server fault)".into(),
                        answer,
                        throttled: false,
                    }
                };
                vec![outcome; ids.len()]
            }
            Exchange::Answer(other) => vec![
                Outcome::Unknown {
                    reason: "the CRM answered with another message than SendCommunicationsResponse"
                        .into(),
                    answer: format!("bundle {bundle_id}: {}", other.element_name()),
                };
                ids.len()
            ],
            Exchange::Failed(o) => vec![o; ids.len()],
            Exchange::Lost(what) => self.reconcile(&bundle_id, &ids, &what).await,
        };
        for ((reply, _), outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }

    /// Asks the CRM what it has of a bundle whose answer was lost.
    async fn reconcile(&self, bundle_id: &str, ids: &[String], lost: &str) -> Vec<Outcome> {
        let mut log = format!("bundle {bundle_id}: {lost}; reconciling");
        for n in 0..self.config.reconcile_attempts {
            if n > 0 {
                tokio::time::sleep(reconcile_backoff(n)).await;
            }
            let query = GetCommunicationStatus {
                target_system: self.target,
                message_ids: ids.to_vec(),
            };
            let xml = envelope(
                self.config.version,
                &query,
                self.config.ws_security.as_ref(),
            );
            match self.exchange(query.soap_action(), xml).await {
                Exchange::Answer(Body::GetCommunicationStatusResponse(_, answer)) => {
                    let by_id: HashMap<&str, &ItemStatus> = answer
                        .statuses
                        .iter()
                        .map(|s| (s.message_id.as_str(), s))
                        .collect();
                    log.push_str(&format!("; status query {} answered", n + 1));
                    return ids
                        .iter()
                        .map(|id| reconciled(&log, by_id.get(id.as_str()).copied()))
                        .collect();
                }
                Exchange::Answer(Body::Fault(f)) => {
                    log.push_str(&format!(
                        "; status query {} fault {:?}: {}",
                        n + 1,
                        f.code,
                        excerpt(&f.reason)
                    ));
                }
                Exchange::Answer(other) => {
                    log.push_str(&format!(
                        "; status query {} answered {}",
                        n + 1,
                        other.element_name()
                    ));
                }
                Exchange::Failed(o) => {
                    log.push_str(&format!("; status query {} failed: {}", n + 1, o.answer()));
                }
                Exchange::Lost(what) => {
                    log.push_str(&format!("; status query {} lost: {what}", n + 1));
                }
            }
        }
        warn!(channel = %self.channel, bundle = %bundle_id, items = ids.len(),
            "bundle answer lost and the CRM could not be asked; items left unknown");
        vec![
            Outcome::Unknown {
                reason: "the bundle's answer was lost and no status query succeeded".into(),
                answer: excerpt(&log),
            };
            ids.len()
        ]
    }

    /// One SOAP exchange: POST, read, classify transport and HTTP; parse the envelope.
    async fn exchange(&self, action: &str, xml: String) -> Exchange {
        let v = self.config.version;
        let mut req = self
            .client
            .post(self.url.clone())
            .timeout(self.config.request_timeout)
            .header(reqwest::header::CONTENT_TYPE, v.content_type(Some(action)))
            .body(xml);
        if let Some(sa) = v.soap_action_header(action) {
            req = req.header("SOAPAction", sa);
        }
        if let Some((name, value)) = crate::json_http::auth_header_of(&self.config.endpoint) {
            req = req.header(name, value);
        }
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => return transport(&e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        // No more than the envelope parser would take: a longer answer is not read further.
        let body = match read_capped(response, Limits::DEFAULT.max_bytes).await {
            Ok(b) => b,
            Err(e) => return transport(&e),
        };
        let answer = || {
            let mut a = answer_excerpt(status, &body.text());
            if body.over_cap {
                a.push_str(" [answer over the SOAP size limit, not read further]");
            }
            a
        };
        // A gateway in front of the CRM (the ESB) timed out or lost the backend's answer: the
        // CRM may have the bundle. Ask rather than resend.
        if status == 502 || status == 504 {
            return Exchange::Lost(answer());
        }
        // An answer over the cap is not parsed: it is classified like any answer that is not SOAP.
        let parsed = if body.over_cap {
            None
        } else {
            parse_envelope(&body.bytes, Limits::DEFAULT).ok()
        };
        match parsed {
            // A fault is a fault whatever the status (SOAP 1.1 sends it with 500, 1.2 with 400).
            Some(p) if matches!(p.body, Body::Fault(_)) || (200..300).contains(&status) => {
                Exchange::Answer(p.body)
            }
            _ if (200..300).contains(&status) => Exchange::Failed(Outcome::Unknown {
                reason: "the CRM answered 2xx with something that is not a SOAP answer".into(),
                answer: answer(),
            }),
            _ => Exchange::Failed(classify_http_error(status, retry_after, answer())),
        }
    }
}

fn transport(e: &reqwest::Error) -> Exchange {
    match crate::outcome::classify_transport_error(e) {
        // Reached the CRM or may have: find out instead of resending.
        Outcome::Unknown { answer, .. } => Exchange::Lost(answer),
        other => Exchange::Failed(other),
    }
}

fn item_outcome(
    bundle_id: &str,
    status: ItemStatusCode,
    r: &clm_contracts::soap::ItemResult,
) -> Outcome {
    let answer = format!(
        "bundle {bundle_id}: {status}{}{}",
        r.error_code
            .as_deref()
            .map(|c| format!(" {c}"))
            .unwrap_or_default(),
        r.error_text
            .as_deref()
            .map(|t| format!(": {}", excerpt(t)))
            .unwrap_or_default()
    );
    match status {
        ItemStatusCode::Accepted | ItemStatusCode::Duplicate => Outcome::Sent {
            external_id: r.crm_id.clone(),
            answer,
        },
        ItemStatusCode::Rejected => Outcome::Fail {
            reason: format!(
                "the CRM rejected it{}",
                r.error_code
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            ),
            answer,
        },
    }
}

fn reconciled(log: &str, status: Option<&ItemStatus>) -> Outcome {
    let Some(s) = status else {
        return Outcome::Unknown {
            reason: "the CRM's status answer did not mention this item".into(),
            answer: excerpt(log),
        };
    };
    let answer = excerpt(&format!("{log}: {}", s.state));
    match s.state {
        ItemState::Accepted => Outcome::Sent {
            external_id: s.crm_id.clone(),
            answer,
        },
        ItemState::Rejected => Outcome::Fail {
            reason: "the CRM rejected it (found by the status query)".into(),
            answer,
        },
        ItemState::Unknown => Outcome::Retry {
            after: None,
            reason: "the CRM never received it (status query): resending".into(),
            answer,
            throttled: false,
        },
    }
}

/// One line, at most 500 characters: attempt logs stay readable.
fn excerpt(s: &str) -> String {
    s.chars()
        .take(500)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
