//! The dispatcher: one task per enabled channel claims due communications from the store in
//! batches and passes each through the channel's policy stack to its connector; one finisher task
//! writes the outcomes back in batches.
//!
//! The policy stack, in order, and why this order:
//! 1. **validity and cancellation**: an expired communication or one of a cancelled campaign is
//!    finished without touching anything else;
//! 2. **send window** (quiet hours, recipient's zone): outside it, the communication goes back to
//!    the store due at the window's opening, holding no capacity while it waits;
//! 3. **rate limit** (governor GCRA, `rate` and `burst`), before anything that holds a resource,
//!    so waiting for a token holds no connection slot;
//! 4. **channel throttle**: after a 429 the whole channel waits for `Retry-After`;
//! 5. **concurrency limit** (`concurrency` permits: [`tower::limit::ConcurrencyLimit`] of the
//!    channel's attempt [`service`], waited for with the lease renewed meanwhile);
//! 6. **circuit breaker**: when open, the rest of the claim goes back to the store due when it
//!    half-opens; only one probe goes through while half-open;
//! 7. **per-attempt timeout** around the connector call ([`tower::timeout::Timeout`] of the same
//!    service; elapsed is `unknown`, or a retry where `on_timeout = "retry"`);
//! 8. **connector**, whose answer is classified once ([`clm_connectors::Outcome`]).
//!
//! Retries are durable: a retryable outcome puts the communication in `retry_wait` in the store
//! with its next due time (backoff with jitter, never before `Retry-After`), bounded by
//! `max_attempts` and `expires_at`, so they survive restarts and any instance may pick them up.

mod channel;
mod finisher;
mod send;
pub mod service;

pub use channel::{Channel, ChannelCounters};
pub use finisher::Finisher;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::state::Shared;
use crate::store::Claimed;

/// Runs one channel's dispatch loop until `shutdown`; then gives back what it claimed but did not
/// send, and waits for its in-flight sends.
pub async fn run_channel(shared: Arc<Shared>, channel: Arc<Channel>, shutdown: CancellationToken) {
    let cfg = &shared.config.dispatcher;
    let lease = Duration::from_secs(cfg.lease_secs)
        .max(Duration::from_millis(channel.policy.timeout_ms) * 3);
    let idle = Duration::from_millis(cfg.poll_ms);
    let mut store_backoff = Duration::from_millis(100);
    info!(channel = %channel.id, "dispatcher started");
    while !shutdown.is_cancelled() {
        if let Some(wait) = channel.blocked_for() {
            channel.sleep_or_wake(wait.min(idle * 4), &shutdown).await;
            continue;
        }
        // Claim no more than can start within about a second, so claims do not sit in memory
        // (and their leases do not run down) while the rate limit meters them out. Free
        // concurrency slots do not bound the claim: items wait for a slot in `dispatch_batch`, and
        // the next claim is made while the last items of this one are still in flight, so claims
        // stay large (one store round trip per batch, not per freed slot).
        let per_second = (channel.policy.rate.ceil() as u32).saturating_add(channel.policy.burst);
        // Nor more than the channel can finish within the lease even if every attempt runs to
        // its timeout, so no claim expires (and gets taken over) while it waits its turn here.
        let within_lease = u64::from(channel.policy.concurrency)
            .saturating_mul(lease.as_millis() as u64 / 2)
            / channel.policy.timeout_ms.max(1);
        let within_lease = u32::try_from(within_lease).unwrap_or(u32::MAX).max(1);
        // Nor more than the rate lets start within half the lease, so that a slow channel's
        // claims do not wait out their lease (they are renewed if they must, see `Lease`).
        let by_rate = (channel.policy.rate * lease.as_secs_f64() / 2.0).floor();
        let by_rate = channel
            .policy
            .burst
            .saturating_add(if by_rate >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                by_rate as u32
            })
            .max(1);
        let limit = cfg
            .claim_batch
            .min(per_second.max(1))
            .min(within_lease)
            .min(by_rate);
        let claimed = match shared
            .store
            .claim_due(channel.id, &shared.instance, limit, lease, Utc::now())
            .await
        {
            Ok(c) => {
                store_backoff = Duration::from_millis(100);
                c
            }
            Err(e) => {
                warn!(channel = %channel.id, error = %e, retry_in_ms = store_backoff.as_millis() as u64, "claim failed; store unavailable?");
                channel.sleep_or_wake(store_backoff, &shutdown).await;
                store_backoff = (store_backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if claimed.is_empty() {
            channel.sleep_or_wake(idle, &shutdown).await;
            continue;
        }
        send::dispatch_batch(&shared, &channel, claimed, lease, &shutdown).await;
    }
    channel.drain().await;
    info!(channel = %channel.id, "dispatcher stopped");
}

/// Gives claimed, unsent communications back to the store (window, throttle, breaker, shutdown).
pub(crate) async fn give_back(
    shared: &Shared,
    items: Vec<Claimed>,
    due: chrono::DateTime<Utc>,
    reason: &str,
) {
    if items.is_empty() {
        return;
    }
    let items: Vec<(Claimed, String)> = items.into_iter().map(|c| (c, reason.to_owned())).collect();
    let mut delay = Duration::from_millis(100);
    for _ in 0..10 {
        match shared.store.release(&items, due, Utc::now()).await {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e, count = items.len(), "could not give claims back; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    // The claims' leases run out and the reaper makes them due again: nothing is lost.
    warn!(
        count = items.len(),
        "claims left to expire; the reaper will reschedule them"
    );
}
