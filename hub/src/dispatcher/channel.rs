//! One channel's runtime: its connector, its policy pieces and its counters.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clm_connectors::Connector;
use clm_contracts::ChannelId;
use clm_contracts::api::ChannelCounters as CountersView;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::service::{AttemptService, attempt_service};
use crate::channels::{NoHooks, Plugin};
use crate::config::PolicyConfig;
use crate::coordination::SharedLimiter;
use crate::policy::breaker::{Breaker, BreakerState};
use crate::policy::window::SendWindow;

#[derive(Debug, Default)]
pub struct ChannelCounters {
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    pub unknown: AtomicU64,
    pub expired: AtomicU64,
    pub cancelled: AtomicU64,
    pub responses: AtomicU64,
    pub throttled: AtomicU64,
    pub breaker_opened: AtomicU64,
    /// `unknown` communications settled by a later status query (CRM channels).
    pub reconciled: AtomicU64,
    /// Sum and count of attempt durations, for the metrics' mean.
    pub attempt_ms_sum: AtomicU64,
    pub attempts: AtomicU64,
}

impl ChannelCounters {
    pub fn view(&self) -> CountersView {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersView {
            sent: g(&self.sent),
            retried: g(&self.retried),
            failed: g(&self.failed),
            unknown: g(&self.unknown),
            expired: g(&self.expired),
            cancelled: g(&self.cancelled),
            responses: g(&self.responses),
        }
    }
}

pub struct Channel {
    pub id: ChannelId,
    /// The family's hooks (gate, after-attempt, report parser, …).
    pub plugin: Arc<dyn Plugin>,
    pub policy: PolicyConfig,
    pub connector: Arc<dyn Connector>,
    /// The channel's rate limit: governor in-process, or GCRA in Redis shared by all instances.
    pub limiter: SharedLimiter,
    /// The per-attempt stack: the connector under the concurrency limit and the timeout.
    pub service: AttemptService,
    pub breaker: Breaker,
    pub window: Option<SendWindow>,
    pub counters: ChannelCounters,
    pub in_flight: AtomicU64,
    paused: AtomicBool,
    throttled_until: Mutex<Option<Instant>>,
    /// Breaker opened by another instance (shared through Redis).
    remote_breaker_until: Mutex<Option<Instant>>,
    wake: Notify,
    idle: Notify,
}

impl Channel {
    pub fn new(
        id: ChannelId,
        policy: PolicyConfig,
        connector: Arc<dyn Connector>,
        limiter: SharedLimiter,
    ) -> Channel {
        let window = policy
            .window
            .as_ref()
            .map(|w| SendWindow::parse(w).expect("validated at config load"));
        let service = attempt_service(
            policy.concurrency as usize,
            Duration::from_millis(policy.timeout_ms),
        );
        Channel {
            id,
            plugin: Arc::new(NoHooks),
            connector,
            service,
            limiter,
            breaker: Breaker::new(
                policy.breaker.failure_threshold,
                Duration::from_millis(policy.breaker.open_ms),
            ),
            window,
            counters: ChannelCounters::default(),
            in_flight: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            throttled_until: Mutex::new(None),
            remote_breaker_until: Mutex::new(None),
            wake: Notify::new(),
            idle: Notify::new(),
            policy,
        }
    }

    /// The channel with its family's hooks.
    pub fn with_plugin(mut self, plugin: Arc<dyn Plugin>) -> Channel {
        self.plugin = plugin;
        self
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        self.wake();
    }

    /// New work may be due (intake accepted some, a channel resumed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A 429 slows the whole channel: nothing is sent before `until`.
    pub fn throttle(&self, until: Instant) {
        let mut t = self.throttled_until.lock().expect("throttle lock");
        if t.is_none_or(|cur| cur < until) {
            *t = Some(until);
        }
        self.counters.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Another instance opened the breaker (seen through Redis) until `until`.
    pub fn set_remote_breaker(&self, until: Option<Instant>) {
        *self.remote_breaker_until.lock().expect("breaker lock") = until;
    }

    pub fn remote_breaker_for(&self) -> Option<Duration> {
        let t = self.remote_breaker_until.lock().expect("breaker lock");
        t.and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    pub fn throttled_for(&self) -> Option<Duration> {
        let t = self.throttled_until.lock().expect("throttle lock");
        t.and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// Why the loop should not claim now, as how long to wait: paused, throttled, breaker open.
    pub fn blocked_for(&self) -> Option<Duration> {
        if self.is_paused() {
            return Some(Duration::from_secs(1));
        }
        if let Some(d) = self.throttled_for() {
            return Some(d);
        }
        // Open, or half-open with the probe out: claiming now would only give it all back.
        if self.breaker.state(Instant::now()) == BreakerState::Open || self.breaker.probing() {
            return Some(Duration::from_millis(200));
        }
        if let Some(d) = self.remote_breaker_for() {
            return Some(d.min(Duration::from_secs(1)));
        }
        None
    }

    /// `disabled` is decided by the caller; here: paused / throttled / breaker_open / running.
    pub fn state(&self) -> &'static str {
        if self.is_paused() {
            "paused"
        } else if self.throttled_for().is_some() {
            "throttled"
        } else if self.breaker.state(Instant::now()) == BreakerState::Open
            || self.remote_breaker_for().is_some()
        {
            "breaker_open"
        } else {
            "running"
        }
    }

    pub async fn sleep_or_wake(&self, d: Duration, shutdown: &CancellationToken) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.wake.notified() => {}
            _ = shutdown.cancelled() => {}
        }
    }

    pub(crate) fn send_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn send_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no send of this channel is in flight.
    pub async fn drain(&self) {
        loop {
            let idle = self.idle.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}
