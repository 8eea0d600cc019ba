//! What the mock received: a bounded buffer of records, the idempotency memory (`message_id` →
//! the channel's id), and counters that are never truncated.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use clm_contracts::ChannelId;
use clm_contracts::channels::elk::Surface;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::wire::Target;

/// One send request as the mock saw it, whatever it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedRequest {
    pub at: DateTime<Utc>,
    pub channel: ChannelId,
    /// What the mock answered; 0 for a request held without an answer (timeout fault).
    pub status: u16,
    /// The request's `message_id`, when the body carried a UUID there.
    pub message_id: Option<Uuid>,
    /// The channel's id answered to an accepted send (the same for a repeated `message_id`).
    pub external_id: Option<String>,
    /// Accepted, but the `message_id` had been accepted before.
    pub duplicate: bool,
    /// `ErrorBody.error` of a non-2xx answer.
    pub error: Option<String>,
    /// The request body: its JSON, or its text as a JSON string when it was not JSON.
    pub body: serde_json::Value,
}

/// Counters since start or the last reset; unlike the records, never truncated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelStats {
    /// Requests to the send endpoint.
    pub requests: u64,
    /// Requests answered 2xx (repeats of a `message_id` included).
    pub accepted: u64,
    /// Requests refused for themselves: 401 (auth), 400 (body).
    pub rejected: u64,
    /// Requests per answered status (0: held without an answer).
    pub by_status: BTreeMap<u16, u64>,
    /// Requests answered 429 by the throttle, rate limit or script.
    pub throttled: u64,
    /// Requests answered with an injected error status.
    pub errors: u64,
    /// Requests held without an answer (timeout fault).
    pub held: u64,
    /// Accepted repeats of a `message_id` (each repeat counts).
    pub duplicates: u64,
    /// Responses delivered: webhooks answered 2xx, DWH rows committed (duplicate copies
    /// included).
    pub responses_sent: u64,
    /// Responses given up on after retries, or without a destination.
    pub responses_failed: u64,
    /// Extra copies of webhooks sent by `duplicate_rate`.
    pub responses_duplicated: u64,
}

/// How a request was answered, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Accepted,
    Rejected,
    Throttled,
    Error,
    Held,
}

/// A record as kept: the body stays raw until someone asks.
pub(crate) struct Record {
    pub(crate) at: DateTime<Utc>,
    pub(crate) status: u16,
    pub(crate) class: Class,
    pub(crate) message_id: Option<Uuid>,
    pub(crate) external_id: Option<String>,
    pub(crate) duplicate: bool,
    pub(crate) error: Option<String>,
    pub(crate) body: Bytes,
}

/// What the idempotency memory keeps per accepted `message_id`.
struct Accepted {
    external_id: String,
    accepted_at: DateTime<Utc>,
    surface: Option<Surface>,
    count: u32,
}

/// Statuses are counted in a flat array indexed by status; anything above lands in the last slot.
const STATUS_SLOTS: usize = 600;

pub(crate) struct Recorder {
    channel: ChannelId,
    capacity: usize,
    requests: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    throttled: AtomicU64,
    errors: AtomicU64,
    held: AtomicU64,
    duplicates: AtomicU64,
    by_status: Box<[AtomicU64]>,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    records: VecDeque<Record>,
    accepted: HashMap<Uuid, Accepted>,
}

impl Recorder {
    pub(crate) fn new(channel: ChannelId, capacity: usize) -> Self {
        Recorder {
            channel,
            capacity,
            requests: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            held: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            log: Mutex::new(Log::default()),
        }
    }

    /// Accepts `message_id`: the channel's id it was given before, or `new_id()` for a first
    /// send. Returns the id, when it was first accepted, and whether this is a repeat.
    pub(crate) fn accept(
        &self,
        message_id: Uuid,
        surface: Option<Surface>,
        new_id: impl FnOnce() -> String,
    ) -> (String, DateTime<Utc>, bool) {
        let mut log = self.log();
        match log.accepted.get_mut(&message_id) {
            Some(seen) => {
                seen.count = seen.count.saturating_add(1);
                (seen.external_id.clone(), seen.accepted_at, true)
            }
            None => {
                let external_id = new_id();
                let accepted_at = Utc::now();
                log.accepted.insert(
                    message_id,
                    Accepted {
                        external_id: external_id.clone(),
                        accepted_at,
                        surface,
                        count: 1,
                    },
                );
                (external_id, accepted_at, false)
            }
        }
    }

    /// The message a response is about: what was accepted for `message_id`, or just the id.
    pub(crate) fn target(&self, message_id: Uuid) -> Target {
        let log = self.log();
        let seen = log.accepted.get(&message_id);
        Target {
            message_id,
            external_id: seen.map(|s| s.external_id.clone()),
            surface: seen.and_then(|s| s.surface),
        }
    }

    pub(crate) fn record(&self, record: Record) {
        let (status, class, duplicate) = (record.status, record.class, record.duplicate);
        if self.capacity > 0 {
            let mut log = self.log();
            if log.records.len() >= self.capacity {
                log.records.pop_front();
            }
            log.records.push_back(record);
        }
        // Counted after the record is stored, so whoever sees the count also sees the record.
        self.by_status[usize::from(status).min(STATUS_SLOTS - 1)].fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        let counter = match class {
            Class::Accepted => &self.accepted,
            Class::Rejected => &self.rejected,
            Class::Throttled => &self.throttled,
            Class::Error => &self.errors,
            Class::Held => &self.held,
        };
        counter.fetch_add(1, Relaxed);
        if duplicate {
            self.duplicates.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }

    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates.load(Relaxed)
    }

    pub(crate) fn accepted_ref_count(&self, message_id: Uuid) -> u32 {
        self.log().accepted.get(&message_id).map_or(0, |a| a.count)
    }

    /// The newest `limit` records (all with `None`), oldest first.
    pub(crate) fn received(&self, limit: Option<usize>) -> Vec<ReceivedRequest> {
        let log = self.log();
        let skip = limit.map_or(0, |l| log.records.len().saturating_sub(l));
        log.records
            .iter()
            .skip(skip)
            .map(|r| ReceivedRequest {
                at: r.at,
                channel: self.channel,
                status: r.status,
                message_id: r.message_id,
                external_id: r.external_id.clone(),
                duplicate: r.duplicate,
                error: r.error.clone(),
                body: serde_json::from_slice(&r.body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&r.body).into_owned())
                }),
            })
            .collect()
    }

    /// Counters; the response counters are filled in by the caller.
    pub(crate) fn stats(&self) -> ChannelStats {
        let by_status = self
            .by_status
            .iter()
            .enumerate()
            .filter_map(|(status, n)| {
                let n = n.load(Relaxed);
                (n > 0).then(|| (u16::try_from(status).unwrap_or(u16::MAX), n))
            })
            .collect();
        ChannelStats {
            requests: self.requests.load(Relaxed),
            accepted: self.accepted(),
            rejected: self.rejected.load(Relaxed),
            by_status,
            throttled: self.throttled.load(Relaxed),
            errors: self.errors.load(Relaxed),
            held: self.held.load(Relaxed),
            duplicates: self.duplicates(),
            ..ChannelStats::default()
        }
    }

    pub(crate) fn reset(&self) {
        {
            let mut log = self.log();
            log.records.clear();
            log.accepted.clear();
        }
        for counter in [
            &self.requests,
            &self.accepted,
            &self.rejected,
            &self.throttled,
            &self.errors,
            &self.held,
            &self.duplicates,
        ]
        .into_iter()
        .chain(self.by_status.iter())
        {
            counter.store(0, Relaxed);
        }
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: u16, class: Class, body: &str) -> Record {
        Record {
            at: Utc::now(),
            status,
            class,
            message_id: None,
            external_id: None,
            duplicate: false,
            error: None,
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn buffer_keeps_the_newest_but_counters_keep_everything() {
        let recorder = Recorder::new(ChannelId::Wink, 2);
        recorder.record(record(200, Class::Accepted, r#"{"n":1}"#));
        recorder.record(record(503, Class::Error, r#"{"n":2}"#));
        recorder.record(record(400, Class::Rejected, "not json"));
        let kept = recorder.received(None);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].body["n"], 2);
        assert_eq!(kept[1].body, "not json");
        let stats = recorder.stats();
        assert_eq!(
            (stats.requests, stats.accepted, stats.errors, stats.rejected),
            (3, 1, 1, 1)
        );
        assert_eq!(
            stats.by_status,
            BTreeMap::from([(200, 1), (400, 1), (503, 1)])
        );
        assert_eq!(recorder.received(Some(1)).len(), 1);
    }

    #[test]
    fn a_repeated_message_id_gets_the_same_id() {
        let recorder = Recorder::new(ChannelId::Elk, 10);
        let id = Uuid::from_u128(7);
        let (first, at, repeat) = recorder.accept(id, Some(Surface::Mobile), || "e-1".into());
        assert_eq!((first.as_str(), repeat), ("e-1", false));
        let (again, at_again, repeat) = recorder.accept(id, None, || "e-2".into());
        assert_eq!((again.as_str(), repeat, at_again), ("e-1", true, at));
        assert_eq!(recorder.accepted_ref_count(id), 2);
        let target = recorder.target(id);
        assert_eq!(target.external_id.as_deref(), Some("e-1"));
        assert_eq!(target.surface, Some(Surface::Mobile));
        recorder.reset();
        assert_eq!(recorder.accepted_ref_count(id), 0);
        assert_eq!(recorder.stats(), ChannelStats::default());
    }
}
