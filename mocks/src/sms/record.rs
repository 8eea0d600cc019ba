//! What the mock received: a bounded buffer of records, and counters that are never truncated.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use clm_contracts::sms::Coding;
use serde::{Deserialize, Serialize};

/// Which wire dialect a request came in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Kannel `GET`/`POST /cgi-bin/sendsms`.
    #[default]
    Kannel,
    /// `POST /api/sms`.
    Json,
}

/// One request as the mock saw it, whatever it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReceivedSms {
    pub at: DateTime<Utc>,
    pub dialect: Dialect,
    pub from: String,
    pub to: String,
    /// Decoded text (Kannel: by `charset`, or UTF-16BE for `coding=2` without one).
    pub text: String,
    /// Kannel: the `coding` the client sent; JSON: what `segment` chooses for the text.
    pub coding: Coding,
    pub parts: u32,
    /// JSON: `client_ref`; Kannel: the `id` query parameter inside `dlr-url`, if any.
    pub client_ref: Option<String>,
    /// What the mock answered; 0 for a request held without an answer (timeout fault).
    pub status: u16,
    /// The SMSC message id of an accepted message (Kannel: the first part's).
    pub message_id: Option<String>,
    /// Kannel `validity` / JSON `validity_minutes`.
    pub validity_minutes: Option<u32>,
    /// Where delivery reports go, as the client asked (Kannel: before `%` substitution).
    pub dlr_url: Option<String>,
}

impl Default for ReceivedSms {
    fn default() -> Self {
        ReceivedSms {
            at: DateTime::<Utc>::default(),
            dialect: Dialect::Kannel,
            from: String::new(),
            to: String::new(),
            text: String::new(),
            coding: Coding::Gsm7,
            parts: 0,
            client_ref: None,
            status: 0,
            message_id: None,
            validity_minutes: None,
            dlr_url: None,
        }
    }
}

/// Counters since start or the last reset; unlike the records, never truncated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmsStats {
    /// Requests to either dialect's send endpoint.
    pub total: u64,
    /// Requests answered 2xx.
    pub accepted: u64,
    /// Requests per answered status (0: held without an answer).
    pub by_status: BTreeMap<u16, u64>,
    /// Delivery reports the receiver took (2xx).
    pub dlr_sent: u64,
    /// Delivery reports given up on after retries.
    pub dlr_failed: u64,
    /// Client refs accepted more than once.
    pub duplicates: u64,
}

/// Statuses are counted in a flat array indexed by status; anything above lands in the last slot.
const STATUS_SLOTS: usize = 600;

pub(crate) struct Recorder {
    capacity: usize,
    total: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    by_status: Box<[AtomicU64]>,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    records: VecDeque<ReceivedSms>,
    /// Accepted sends per client ref.
    refs: HashMap<String, u32>,
}

impl Recorder {
    pub(crate) fn new(capacity: usize) -> Self {
        Recorder {
            capacity,
            total: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            log: Mutex::new(Log::default()),
        }
    }

    pub(crate) fn record(&self, sms: ReceivedSms) {
        let status = sms.status;
        let accepted = (200..300).contains(&status);
        {
            let mut log = self.log();
            if accepted && let Some(client_ref) = &sms.client_ref {
                let count = match log.refs.get_mut(client_ref) {
                    Some(count) => {
                        *count += 1;
                        *count
                    }
                    None => {
                        log.refs.insert(client_ref.clone(), 1);
                        1
                    }
                };
                if count == 2 {
                    self.duplicates.fetch_add(1, Relaxed);
                }
            }
            if self.capacity > 0 {
                if log.records.len() >= self.capacity {
                    log.records.pop_front();
                }
                log.records.push_back(sms);
            }
        }
        // Counted after the record is stored, so whoever sees the count also sees the record.
        self.by_status[usize::from(status).min(STATUS_SLOTS - 1)].fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        if accepted {
            self.accepted.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }

    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates.load(Relaxed)
    }

    pub(crate) fn accepted_ref_count(&self, client_ref: &str) -> u32 {
        self.log().refs.get(client_ref).copied().unwrap_or(0)
    }

    /// The newest `limit` records (all with `None`), oldest first.
    pub(crate) fn received(&self, limit: Option<usize>) -> Vec<ReceivedSms> {
        let log = self.log();
        let skip = limit.map_or(0, |l| log.records.len().saturating_sub(l));
        log.records.iter().skip(skip).cloned().collect()
    }

    /// Counters; the DLR counters are filled in by the caller.
    pub(crate) fn stats(&self) -> SmsStats {
        let by_status = self
            .by_status
            .iter()
            .enumerate()
            .filter_map(|(status, n)| {
                let n = n.load(Relaxed);
                (n > 0).then(|| (u16::try_from(status).unwrap_or(u16::MAX), n))
            })
            .collect();
        SmsStats {
            total: self.total.load(Relaxed),
            accepted: self.accepted(),
            by_status,
            dlr_sent: 0,
            dlr_failed: 0,
            duplicates: self.duplicates(),
        }
    }

    pub(crate) fn reset(&self) {
        {
            let mut log = self.log();
            log.records.clear();
            log.refs.clear();
        }
        for counter in [&self.total, &self.accepted, &self.duplicates]
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

    fn sms(client_ref: &str, status: u16) -> ReceivedSms {
        ReceivedSms {
            client_ref: Some(client_ref.to_owned()),
            status,
            ..ReceivedSms::default()
        }
    }

    #[test]
    fn buffer_keeps_the_newest_but_counters_keep_everything() {
        let recorder = Recorder::new(2);
        for (i, status) in [202, 503, 202].into_iter().enumerate() {
            recorder.record(sms(&i.to_string(), status));
        }
        let kept: Vec<_> = recorder
            .received(None)
            .into_iter()
            .map(|r| r.client_ref.unwrap())
            .collect();
        assert_eq!(kept, ["1", "2"]);
        let stats = recorder.stats();
        assert_eq!((stats.total, stats.accepted), (3, 2));
        assert_eq!(stats.by_status, BTreeMap::from([(202, 2), (503, 1)]));
    }

    #[test]
    fn only_accepted_repeats_are_duplicates() {
        let recorder = Recorder::new(10);
        recorder.record(sms("a", 503));
        recorder.record(sms("a", 202));
        assert_eq!(recorder.duplicates(), 0);
        recorder.record(sms("a", 202));
        recorder.record(sms("a", 202));
        assert_eq!(recorder.duplicates(), 1);
        assert_eq!(recorder.accepted_ref_count("a"), 3);
        recorder.reset();
        assert_eq!(recorder.stats(), SmsStats::default());
        assert!(recorder.received(None).is_empty());
    }

    #[test]
    fn limit_returns_the_newest_oldest_first() {
        let recorder = Recorder::new(10);
        for r in ["a", "b", "c"] {
            recorder.record(sms(r, 202));
        }
        let last: Vec<_> = recorder
            .received(Some(2))
            .into_iter()
            .map(|r| r.client_ref.unwrap())
            .collect();
        assert_eq!(last, ["b", "c"]);
    }
}
