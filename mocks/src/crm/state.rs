//! The state every handler shares: fault (rejection rules included), auth and callback settings
//! behind one small lock, what the CRM knows, the callback sender, the CRM id counter and the shutdown token.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::HeaderMap;
use clm_contracts::soap::codec::WsSecurity;
use clm_contracts::soap::{CommunicationItem, TargetSystem};
use tokio_util::sync::CancellationToken;

use super::callbacks::Callbacks;
use super::faults::{CrmFault, FaultState, Op, Rules};
use super::memory::{CrmStats, Memory, Rejection};
use super::{CrmCallbacks, CrmFaults, CrmKind, CrmMockConfig, DEFAULT_CAPACITY};
use crate::util::{base64, same, scheme_value};

pub(crate) struct Shared {
    pub(crate) kind: CrmKind,
    /// Where the mock is served (the URLs of the handle point there).
    pub(crate) addr: SocketAddr,
    control: Mutex<Control>,
    pub(crate) memory: Memory,
    pub(crate) callbacks: Callbacks,
    /// The next CRM id's number; never reset, so ids stay unique for the mock's life.
    next_id: AtomicU64,
    /// Four hex digits drawn at start, in every CRM id: ids of an earlier run never come back.
    run: String,
    pub(crate) shutdown: CancellationToken,
}

struct Control {
    faults: FaultState,
    auth: Option<(String, String)>,
    /// Behind an `Arc`: every bundle takes a copy.
    callbacks: Arc<CrmCallbacks>,
}

/// What one request gets from the settings, taken in a single lock.
pub(crate) struct Decision {
    pub(crate) fault: CrmFault,
    pub(crate) latency: Duration,
}

impl Shared {
    pub(crate) fn new(
        kind: CrmKind,
        addr: SocketAddr,
        config: CrmMockConfig,
    ) -> anyhow::Result<Self> {
        let capacity = if config.capacity == 0 {
            DEFAULT_CAPACITY
        } else {
            config.capacity
        };
        let shutdown = CancellationToken::new();
        Ok(Shared {
            kind,
            addr,
            control: Mutex::new(Control {
                faults: FaultState::new(config.faults),
                auth: config.auth,
                callbacks: Arc::new(config.callbacks),
            }),
            memory: Memory::new(capacity),
            callbacks: Callbacks::new(kind, shutdown.clone())?,
            next_id: AtomicU64::new(1),
            run: format!("{:04X}", rand::random::<u16>()),
            shutdown,
        })
    }

    /// Draws the fault for one request of `op` for `target`.
    pub(crate) fn decide(&self, op: Op, target: Option<TargetSystem>) -> Decision {
        let mut control = self.control();
        Decision {
            fault: control.faults.decide(op, target),
            latency: control.faults.latency(),
        }
    }

    /// Whether the request carries the configured credentials, as HTTP Basic or as a
    /// UsernameToken; true when none are configured.
    pub(crate) fn authorized(&self, headers: &HeaderMap, token: Option<&WsSecurity>) -> bool {
        let control = self.control();
        let Some((username, password)) = &control.auth else {
            return true;
        };
        let basic = base64(format!("{username}:{password}").as_bytes());
        let by_basic =
            scheme_value(headers, "basic").is_some_and(|given| same(given, basic.as_bytes()));
        let by_token = token.is_some_and(|t| {
            // Both compared, so the time taken does not tell which one was wrong.
            let user = same(t.username.as_bytes(), username.as_bytes());
            let pass = same(t.password.as_bytes(), password.as_bytes());
            user & pass
        });
        by_basic || by_token
    }

    /// Waits out the injected latency; returns early on shutdown.
    pub(crate) async fn pause(&self, latency: Duration) {
        crate::faults::pause(latency, &self.shutdown).await;
    }

    /// Holds a request that must not be answered, until shutdown (or the client gives up and the
    /// server drops the handler).
    pub(crate) async fn hold(&self) {
        crate::faults::hold(&self.shutdown).await;
    }

    /// A fresh CRM id in the style of the CRM: `SAP-…`, `AMD-…`, `B2C-…`.
    pub(crate) fn new_crm_id(&self, target: Option<TargetSystem>) -> String {
        let n = self.next_id.fetch_add(1, Relaxed);
        let prefix = match (self.kind, target) {
            (CrmKind::Esb, Some(TargetSystem::CrmB2c)) => "B2C",
            (CrmKind::Esb, _) => "AMD",
            (CrmKind::SapCrm, _) => "SAP",
        };
        format!("{prefix}-{}-{n:06}", self.run)
    }

    /// The rejection rules in force.
    pub(crate) fn rules(&self) -> Arc<Rules> {
        self.control().faults.rules()
    }

    /// The rejection for `item` under `rules`, if one matches.
    pub(crate) fn rejection(
        &self,
        rules: &Rules,
        item: &CommunicationItem,
        target: Option<TargetSystem>,
    ) -> Option<Rejection> {
        let by_customer = rules.customers.contains(&item.customer_id);
        let by_share = rules.share > 0.0 && share_of(&item.message_id) < rules.share;
        if !(by_customer || by_share) {
            return None;
        }
        // Never the customer id or anything else from the item: the text may end up in logs.
        let (code, text) = match (self.kind, target) {
            (CrmKind::SapCrm, _) => ("CRM_MKT_042", "Business partner not found"),
            (CrmKind::Esb, Some(TargetSystem::CrmB2c)) => {
                ("B2C-CUST-404", "Customer is not eligible for the campaign")
            }
            (CrmKind::Esb, _) => ("AMD-OFR-0117", "Subscriber is not eligible for the offer"),
        };
        Some(Rejection {
            code: code.to_owned(),
            text: text.to_owned(),
        })
    }

    pub(crate) fn set_faults(&self, faults: CrmFaults) {
        let faults = if self.kind == CrmKind::SapCrm && !faults.target_faults.is_empty() {
            tracing::warn!(kind = %self.kind, "target_faults are for the ESB only: ignored");
            CrmFaults {
                target_faults: Default::default(),
                ..faults
            }
        } else {
            faults
        };
        self.control().faults.set(faults);
    }

    pub(crate) fn faults(&self) -> CrmFaults {
        self.control().faults.current()
    }

    pub(crate) fn set_callbacks(&self, callbacks: CrmCallbacks) {
        if let Err(reason) = callbacks.validate() {
            tracing::warn!(kind = %self.kind, %reason, "CRM mock callbacks: what is wrong is skipped");
        }
        self.control().callbacks = Arc::new(callbacks);
    }

    /// Replaces the callback settings as `PUT callbacks` does: a password of `"***"` keeps the
    /// one in force (read and replaced under one lock). Returns what is now in force.
    pub(crate) fn put_callbacks(&self, callbacks: CrmCallbacks) -> Arc<CrmCallbacks> {
        let mut control = self.control();
        let callbacks = Arc::new(callbacks.keeping_secrets_of(&control.callbacks));
        control.callbacks = callbacks.clone();
        callbacks
    }

    pub(crate) fn callbacks(&self) -> Arc<CrmCallbacks> {
        self.control().callbacks.clone()
    }

    pub(crate) fn set_auth(&self, auth: Option<(String, String)>) {
        self.control().auth = auth;
    }

    pub(crate) fn stats(&self) -> CrmStats {
        let c = self.callbacks.counts();
        CrmStats {
            callbacks_sent: c.sent,
            callbacks_failed: c.failed,
            callback_retries: c.retries,
            responses_sent: c.responses,
            responses_recorded: c.recorded,
            responses_duplicate: c.duplicate,
            responses_unknown_message: c.unknown_message,
            responses_invalid: c.invalid,
            ..self.memory.counters.stats()
        }
    }

    /// Clears bundles, what the CRM knows, counters and faults (rejection rules included), and
    /// drops pending callbacks; auth and callback settings stay.
    pub(crate) fn reset(&self) {
        self.set_faults(CrmFaults::default());
        self.callbacks.reset();
        self.memory.reset();
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A stable position of `message_id` in 0..1 (FNV-1a of the lowercased id), so `reject_share`
/// gives the same id the same verdict every time.
fn share_of(message_id: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in message_id.trim().bytes() {
        hash ^= u64::from(b.to_ascii_lowercase());
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % 10_000) as f64 / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_is_stable_and_spread() {
        assert_eq!(share_of("ABC"), share_of("abc"));
        let ids: Vec<String> = (0..2000).map(|i| format!("id-{i}")).collect();
        let below = ids.iter().filter(|id| share_of(id) < 0.25).count();
        assert!((350..650).contains(&below), "{below} of 2000 below 0.25");
    }
}
