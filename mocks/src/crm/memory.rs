//! What a CRM mock knows: the bundles it received (a bounded buffer), every item it accepted or
//! rejected (never truncated: the status operation answers from it), and the counters.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use clm_contracts::soap::{
    CommunicationItem, ItemResult, ItemState, ItemStatus, ItemStatusCode, TargetSystem,
};
use serde::{Deserialize, Serialize};

/// One `SendCommunications` bundle the mock handled (answered, or accepted and held by
/// `accept_then_hang`). Bundles refused by a fault, auth or the schema are only counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedBundle {
    pub at: DateTime<Utc>,
    pub bundle_id: String,
    /// ESB: `AMDOCS` or `CRM_B2C`; SAP CRM: none.
    pub target_system: Option<String>,
    /// SOAP version of the request: `"1.1"` or `"1.2"`.
    pub version: String,
    /// Accepted but never answered (`accept_then_hang`).
    pub held: bool,
    /// The items in the bundle's order, with what the mock answered for each.
    pub items: Vec<ReceivedItem>,
}

/// One item of a received bundle, as sent, with the mock's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedItem {
    pub message_id: String,
    pub campaign_id: String,
    pub customer_id: String,
    pub recipient: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub offer_code: Option<String>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    /// `Attribute`s as `[name, value]`, in order.
    pub attributes: Vec<(String, String)>,
    /// `Accepted`, `Duplicate` or `Rejected`.
    pub status: String,
    pub crm_id: Option<String>,
    pub error_code: Option<String>,
}

impl ReceivedItem {
    fn new(item: &CommunicationItem, result: &ItemResult) -> Self {
        ReceivedItem {
            message_id: item.message_id.clone(),
            campaign_id: item.campaign_id.clone(),
            customer_id: item.customer_id.clone(),
            recipient: item.recipient.clone(),
            subject: item.subject.clone(),
            text: item.text.clone(),
            offer_code: item.offer_code.clone(),
            valid_from: item.valid_from,
            valid_until: item.valid_until,
            attributes: item
                .attributes
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect(),
            status: result.status.as_str().to_owned(),
            crm_id: result.crm_id.clone(),
            error_code: result.error_code.clone(),
        }
    }
}

/// Counters since start or the last reset; unlike the bundles kept, never truncated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CrmStats {
    /// POSTs to the SOAP endpoint, whatever they got.
    pub requests: u64,
    /// `SendCommunications` bundles handled (answered or held by `accept_then_hang`).
    pub bundles: u64,
    /// `GetCommunicationStatus` queries answered.
    pub status_queries: u64,
    /// Items in handled bundles.
    pub items_received: u64,
    /// Items answered `Accepted`: distinct message ids the CRM now has.
    pub items_accepted: u64,
    /// Items answered `Duplicate` (accepted before; each resend counts).
    pub items_duplicate: u64,
    /// Items answered `Rejected` by a rejection rule.
    pub items_rejected: u64,
    /// `Client` / `Sender` faults answered: injected, and requests refused for themselves.
    pub client_faults: u64,
    /// `Server` / `Receiver` faults answered (injected, target faults, `error_rate`).
    pub server_faults: u64,
    /// Plain HTTP 500 answers (`http_500`).
    pub http_500: u64,
    /// Requests held without an answer (`hang`, `accept_then_hang`).
    pub held: u64,
    /// Requests slowed down by a `slow` fault.
    pub slow: u64,
    /// Requests refused for missing or wrong credentials (also in `client_faults`).
    pub unauthorized: u64,
    /// Requests refused as unreadable, for the wrong service or operation, or with a header
    /// not understood (also in `client_faults`, or a `VersionMismatch`/`MustUnderstand` fault).
    pub invalid: u64,
    /// `SubmitResponses` envelopes the hub answered with a `SubmitResponsesResponse`.
    pub callbacks_sent: u64,
    /// Envelopes given up on (retries exhausted, a `Client` fault, an unreadable answer, no
    /// URL).
    pub callbacks_failed: u64,
    /// Attempts after the first.
    pub callback_retries: u64,
    /// Responses in the envelopes the hub answered.
    pub responses_sent: u64,
    /// The hub's answers per response: `Recorded`, `Duplicate`, `UnknownMessage`, `Invalid`.
    pub responses_recorded: u64,
    pub responses_duplicate: u64,
    pub responses_unknown_message: u64,
    pub responses_invalid: u64,
}

/// The counters the request side keeps; the callback side has its own.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) bundles: AtomicU64,
    pub(crate) status_queries: AtomicU64,
    pub(crate) items_received: AtomicU64,
    pub(crate) items_accepted: AtomicU64,
    pub(crate) items_duplicate: AtomicU64,
    pub(crate) items_rejected: AtomicU64,
    pub(crate) client_faults: AtomicU64,
    pub(crate) server_faults: AtomicU64,
    pub(crate) http_500: AtomicU64,
    pub(crate) held: AtomicU64,
    pub(crate) slow: AtomicU64,
    pub(crate) unauthorized: AtomicU64,
    pub(crate) invalid: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn stats(&self) -> CrmStats {
        CrmStats {
            requests: self.requests.load(Relaxed),
            bundles: self.bundles.load(Relaxed),
            status_queries: self.status_queries.load(Relaxed),
            items_received: self.items_received.load(Relaxed),
            items_accepted: self.items_accepted.load(Relaxed),
            items_duplicate: self.items_duplicate.load(Relaxed),
            items_rejected: self.items_rejected.load(Relaxed),
            client_faults: self.client_faults.load(Relaxed),
            server_faults: self.server_faults.load(Relaxed),
            http_500: self.http_500.load(Relaxed),
            held: self.held.load(Relaxed),
            slow: self.slow.load(Relaxed),
            unauthorized: self.unauthorized.load(Relaxed),
            invalid: self.invalid.load(Relaxed),
            ..CrmStats::default()
        }
    }

    fn reset(&self) {
        for counter in [
            &self.requests,
            &self.bundles,
            &self.status_queries,
            &self.items_received,
            &self.items_accepted,
            &self.items_duplicate,
            &self.items_rejected,
            &self.client_faults,
            &self.server_faults,
            &self.http_500,
            &self.held,
            &self.slow,
            &self.unauthorized,
            &self.invalid,
        ] {
            counter.store(0, Relaxed);
        }
    }
}

/// How one item is to be rejected (a rejection rule matched).
pub(crate) struct Rejection {
    pub(crate) code: String,
    pub(crate) text: String,
}

/// What the CRM knows of one message id (per target system).
enum Known {
    Accepted { crm_id: String, times: u32 },
    Rejected { text: String },
}

/// Key of the item memory: the target system (none for SAP CRM) and the lowercased message id
/// (a UUID in either case is the same id).
type Key = (Option<TargetSystem>, String);

fn key(target: Option<TargetSystem>, message_id: &str) -> Key {
    (target, message_id.to_ascii_lowercase())
}

pub(crate) struct Memory {
    /// Items kept in `bundles` at most (whole bundles are dropped, oldest first).
    capacity: usize,
    inner: Mutex<Inner>,
    pub(crate) counters: Counters,
}

#[derive(Default)]
struct Inner {
    bundles: VecDeque<ReceivedBundle>,
    kept_items: usize,
    known: HashMap<Key, Known>,
}

impl Memory {
    pub(crate) fn new(capacity: usize) -> Self {
        Memory {
            capacity,
            inner: Mutex::new(Inner::default()),
            counters: Counters::default(),
        }
    }

    /// Handles a bundle's items in order and records the bundle: `Accepted` with a fresh CRM id
    /// (`new_id`), `Duplicate` with the same id for a message id accepted before (in this bundle
    /// too), `Rejected` where `reject` says so. Returns the results and the items accepted now
    /// (message id, CRM id), for callbacks.
    pub(crate) fn accept_bundle(
        &self,
        target: Option<TargetSystem>,
        items: &[CommunicationItem],
        mut new_id: impl FnMut() -> String,
        reject: impl Fn(&CommunicationItem) -> Option<Rejection>,
        record: impl FnOnce(Vec<ReceivedItem>) -> ReceivedBundle,
    ) -> (Vec<ItemResult>, Vec<(String, String)>) {
        let mut inner = self.inner();
        let mut results = Vec::with_capacity(items.len());
        let mut fresh = Vec::new();
        for item in items {
            let key = key(target, &item.message_id);
            let result = match inner.known.get_mut(&key) {
                Some(Known::Accepted { crm_id, times }) => {
                    *times = times.saturating_add(1);
                    Counters::bump(&self.counters.items_duplicate);
                    ItemResult {
                        message_id: item.message_id.clone(),
                        status: ItemStatusCode::Duplicate,
                        crm_id: Some(crm_id.clone()),
                        error_code: None,
                        error_text: None,
                    }
                }
                _ => match reject(item) {
                    Some(rejection) => {
                        Counters::bump(&self.counters.items_rejected);
                        inner.known.insert(
                            key,
                            Known::Rejected {
                                text: rejection.text.clone(),
                            },
                        );
                        ItemResult {
                            message_id: item.message_id.clone(),
                            status: ItemStatusCode::Rejected,
                            crm_id: None,
                            error_code: Some(rejection.code),
                            error_text: Some(rejection.text),
                        }
                    }
                    None => {
                        let crm_id = new_id();
                        Counters::bump(&self.counters.items_accepted);
                        inner.known.insert(
                            key,
                            Known::Accepted {
                                crm_id: crm_id.clone(),
                                times: 1,
                            },
                        );
                        fresh.push((item.message_id.clone(), crm_id.clone()));
                        ItemResult {
                            message_id: item.message_id.clone(),
                            status: ItemStatusCode::Accepted,
                            crm_id: Some(crm_id),
                            error_code: None,
                            error_text: None,
                        }
                    }
                },
            };
            results.push(result);
        }
        let bundle = record(
            items
                .iter()
                .zip(&results)
                .map(|(item, result)| ReceivedItem::new(item, result))
                .collect(),
        );
        let n = bundle.items.len();
        if self.capacity > 0 {
            inner.kept_items += n;
            inner.bundles.push_back(bundle);
            while inner.kept_items > self.capacity && inner.bundles.len() > 1 {
                if let Some(old) = inner.bundles.pop_front() {
                    inner.kept_items -= old.items.len();
                }
            }
        }
        // Counted under the lock, after the record is stored: whoever sees the count sees the
        // bundle.
        Counters::bump(&self.counters.bundles);
        self.counters
            .items_received
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Relaxed);
        (results, fresh)
    }

    /// What the CRM knows of each id: `Accepted` with its CRM id, `Rejected` with the error
    /// text, `Unknown` when it never received it.
    pub(crate) fn status(&self, target: Option<TargetSystem>, ids: &[String]) -> Vec<ItemStatus> {
        let inner = self.inner();
        ids.iter()
            .map(|id| match inner.known.get(&key(target, id)) {
                Some(Known::Accepted { crm_id, .. }) => ItemStatus {
                    message_id: id.clone(),
                    state: ItemState::Accepted,
                    crm_id: Some(crm_id.clone()),
                    error_text: None,
                },
                Some(Known::Rejected { text }) => ItemStatus {
                    message_id: id.clone(),
                    state: ItemState::Rejected,
                    crm_id: None,
                    error_text: Some(text.clone()),
                },
                None => ItemStatus {
                    message_id: id.clone(),
                    state: ItemState::Unknown,
                    crm_id: None,
                    error_text: None,
                },
            })
            .collect()
    }

    /// How many times `message_id` was accepted (first acceptance and every `Duplicate`), over
    /// every target system.
    pub(crate) fn accepted_count(&self, message_id: &str) -> u32 {
        let inner = self.inner();
        [None, Some(TargetSystem::Amdocs), Some(TargetSystem::CrmB2c)]
            .into_iter()
            .filter_map(|t| match inner.known.get(&key(t, message_id)) {
                Some(Known::Accepted { times, .. }) => Some(*times),
                _ => None,
            })
            .fold(0, u32::saturating_add)
    }

    /// The newest `limit` bundles (all with `None`), oldest first.
    pub(crate) fn bundles(&self, limit: Option<usize>) -> Vec<ReceivedBundle> {
        let inner = self.inner();
        let skip = limit.map_or(0, |l| inner.bundles.len().saturating_sub(l));
        inner.bundles.iter().skip(skip).cloned().collect()
    }

    pub(crate) fn reset(&self) {
        let mut inner = self.inner();
        *inner = Inner::default();
        self.counters.reset();
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, customer: &str) -> CommunicationItem {
        CommunicationItem {
            message_id: id.to_owned(),
            campaign_id: "c".into(),
            customer_id: customer.to_owned(),
            recipient: None,
            subject: None,
            text: None,
            offer_code: None,
            valid_from: None,
            valid_until: None,
            attributes: vec![],
        }
    }

    fn bundle(items: Vec<ReceivedItem>) -> ReceivedBundle {
        ReceivedBundle {
            at: Utc::now(),
            bundle_id: "b".into(),
            target_system: None,
            version: "1.1".into(),
            held: false,
            items,
        }
    }

    #[test]
    fn accepted_duplicate_rejected_and_truthful_status() {
        let memory = Memory::new(100);
        let mut n = 0;
        let mut ids = || {
            n += 1;
            format!("X-{n}")
        };
        let reject = |i: &CommunicationItem| {
            (i.customer_id == "bad").then(|| Rejection {
                code: "R".into(),
                text: "no".into(),
            })
        };
        let items = [item("A", "ok"), item("b", "bad"), item("a", "ok")];
        let (results, fresh) = memory.accept_bundle(None, &items, &mut ids, reject, bundle);
        let statuses: Vec<_> = results.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [
                ItemStatusCode::Accepted,
                ItemStatusCode::Rejected,
                ItemStatusCode::Duplicate
            ]
        );
        assert_eq!(results[2].crm_id.as_deref(), Some("X-1"));
        assert_eq!(fresh, [("A".to_owned(), "X-1".to_owned())]);
        assert_eq!(memory.accepted_count("a"), 2);
        let status = memory.status(None, &["a".into(), "B".into(), "c".into()]);
        let states: Vec<_> = status.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [ItemState::Accepted, ItemState::Rejected, ItemState::Unknown]
        );
        // Another target system is another CRM.
        let other = memory.status(Some(TargetSystem::Amdocs), &["a".into()]);
        assert_eq!(other[0].state, ItemState::Unknown);
        let stats = memory.counters.stats();
        assert_eq!(
            (
                stats.bundles,
                stats.items_received,
                stats.items_accepted,
                stats.items_duplicate,
                stats.items_rejected
            ),
            (1, 3, 1, 1, 1)
        );
        memory.reset();
        assert_eq!(memory.accepted_count("a"), 0);
        assert!(memory.bundles(None).is_empty());
    }

    #[test]
    fn the_buffer_drops_old_bundles_but_keeps_what_the_crm_knows() {
        let memory = Memory::new(2);
        for id in ["a", "b", "c"] {
            memory.accept_bundle(
                None,
                &[item(id, "x")],
                || format!("X-{id}"),
                |_| None,
                bundle,
            );
        }
        let kept = memory.bundles(None);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].items[0].message_id, "b");
        assert_eq!(memory.bundles(Some(1))[0].items[0].message_id, "c");
        assert_eq!(memory.accepted_count("a"), 1);
    }
}
