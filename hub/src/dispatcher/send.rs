//! One claimed batch through the policy stack, and one attempt's outcome into a [`Finish`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clm_connectors::Outcome;
use clm_contracts::{Classification, Status};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::channel::Channel;
use super::give_back;
use super::service::{self, AttemptService};
use crate::channels::Gate;
use crate::config::TimeoutPolicy;
use crate::policy::backoff::retry_delay;
use crate::policy::breaker::Admit;
use crate::state::Shared;
use crate::store::{AttemptRow, Claimed, Finish};

/// Longest reason or answer excerpt stored with an attempt.
const MAX_REASON: usize = 4096;

/// Longest throttle or breaker wait held in memory; longer ones give the claims back.
const HOLD_AT_MOST: Duration = Duration::from_secs(2);

fn chrono_after(d: Duration) -> DateTime<Utc> {
    let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    Utc::now()
        .checked_add_signed(d)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Finishes without an attempt (expired, cancelled, out of attempts).
fn finish_unsent(c: &Claimed, status: Status, reason: String) -> Finish {
    Finish {
        id: c.comm.id,
        claim: c.claim.clone(),
        campaign_id: c.comm.campaign_id.clone(),
        channel: c.comm.channel,
        attempt: None,
        status,
        reason: Some(reason),
        external_id: None,
        next_attempt_at: None,
        attempts: c.attempts,
    }
}

/// What the checks of the stack's first layers say about one claimed communication now.
enum Verdict {
    Send,
    Finish(Box<Finish>),
    /// Back to the store, due then.
    GiveBack(DateTime<Utc>, &'static str),
    /// The channel is paused: everything claimed goes back.
    Paused,
}

/// Layers 1 (attempts left, validity, cancellation) and 2 (pause, send window). Made before the
/// waits and again after them, right before the send: a wait may outlast an expiry, a cancel, a
/// pause or the window's end.
fn check(shared: &Shared, ch: &Channel, c: &Claimed, now: DateTime<Utc>) -> Verdict {
    // Claims of a hub that died mid-send come back with their attempt counted; a message that
    // keeps being abandoned must not be retried forever.
    let cap = ch
        .policy
        .max_attempts
        .saturating_mul(THROTTLED_ATTEMPTS_FACTOR);
    if c.attempts >= cap {
        ch.counters.failed.fetch_add(1, Ordering::Relaxed);
        let why = format!("gave up after {} attempts", c.attempts);
        return Verdict::Finish(Box::new(finish_unsent(c, Status::Failed, why)));
    }
    if c.comm.expires_at.is_some_and(|e| e <= now) {
        ch.counters.expired.fetch_add(1, Ordering::Relaxed);
        let why = "expires_at passed before the channel took it".to_owned();
        return Verdict::Finish(Box::new(finish_unsent(c, Status::Expired, why)));
    }
    if shared.is_cancelled(&c.comm.campaign_id) {
        ch.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        return Verdict::Finish(Box::new(finish_unsent(
            c,
            Status::Cancelled,
            "campaign cancelled".into(),
        )));
    }
    if ch.is_paused() {
        return Verdict::Paused;
    }
    if let Some(w) = &ch.window
        && let Some(open) = w.next_open(now, c.comm.timezone.as_deref())
    {
        return Verdict::GiveBack(open, "outside the send window");
    }
    Verdict::Send
}

/// Decrements the channel's in-flight count however the send task ends (a panic included), so
/// graceful shutdown never waits for a send that is gone.
struct InFlight(Arc<Channel>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_finished();
    }
}

/// What became of a claimed communication after [`check`].
enum Settled {
    Send(Box<Claimed>),
    /// Finished or given back; on to the next.
    Done,
    /// The channel is paused: this one and the rest of the claim went back.
    Stop,
}

async fn settle(
    shared: &Shared,
    ch: &Channel,
    c: Claimed,
    queue: &mut std::vec::IntoIter<Claimed>,
) -> Settled {
    match check(shared, ch, &c, Utc::now()) {
        Verdict::Send => Settled::Send(Box::new(c)),
        Verdict::Finish(f) => {
            shared.finisher.submit(*f).await;
            Settled::Done
        }
        Verdict::GiveBack(due, why) => {
            give_back(shared, vec![c], due, why).await;
            Settled::Done
        }
        Verdict::Paused => {
            let rest: Vec<Claimed> = std::iter::once(c).chain(queue.by_ref()).collect();
            give_back(shared, rest, Utc::now(), "channel paused").await;
            Settled::Stop
        }
    }
}

/// The channel's gate (its plug-in's, e.g. e-mail's suppression list) over a claimed batch:
/// what it refuses fails here, before any attempt; when it cannot decide, the whole batch goes
/// back to the store for a moment.
async fn gated(shared: &Shared, ch: &Channel, claimed: Vec<Claimed>) -> Vec<Claimed> {
    match ch.plugin.gate(shared, &claimed).await {
        Gate::Open => claimed,
        Gate::Closed { wait, why } => {
            give_back(shared, claimed, chrono_after(wait), why).await;
            Vec::new()
        }
        Gate::Refuse(refused) => {
            let mut reasons: std::collections::HashMap<usize, String> =
                refused.into_iter().collect();
            let mut rest = Vec::with_capacity(claimed.len());
            for (i, c) in claimed.into_iter().enumerate() {
                match reasons.remove(&i) {
                    Some(reason) => {
                        ch.counters.failed.fetch_add(1, Ordering::Relaxed);
                        shared
                            .finisher
                            .submit(finish_unsent(&c, Status::Failed, reason))
                            .await;
                    }
                    None => rest.push(c),
                }
            }
            rest
        }
    }
}

/// The lease of one claimed batch. Its items wait in memory (rate, throttle, a free slot) while
/// the lease runs; a claim whose lease ran out may already be another claim's, so:
/// - while an item waits, the lease is renewed before it gets short;
/// - right before a send, the lease must still cover the whole attempt, and the item must still
///   be this claim's; otherwise it is not sent (the reaper, or its new claim, has it).
struct Lease {
    claim: String,
    until: DateTime<Utc>,
    /// What a renewal extends it by.
    length: Duration,
    /// The attempt's timeout plus room for clocks and the reaper's round: the least a lease
    /// must have left for a send to start.
    needed: Duration,
    /// Ids the claim still held at the last renewal (`None`: not renewed yet, all of them).
    held: Option<std::collections::HashSet<uuid::Uuid>>,
    /// No renewal before this, after one failed (the store is unavailable).
    quiet_until: Instant,
}

impl Lease {
    fn new(claimed: &[Claimed], length: Duration, timeout: Duration) -> Option<Lease> {
        let first = claimed.first()?;
        let room = (length / 10).max(Duration::from_secs(1));
        Some(Lease {
            claim: first.claim.clone(),
            until: first.lease_until,
            length,
            needed: timeout + room,
            held: None,
            quiet_until: Instant::now(),
        })
    }

    /// How long until the lease must be renewed.
    fn renew_in(&self) -> Duration {
        let left = (self.until - Utc::now()).to_std().unwrap_or_default();
        let due = left.saturating_sub(self.needed * 2);
        due.max(self.quiet_until.saturating_duration_since(Instant::now()))
    }

    async fn renew(&mut self, shared: &Shared) {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(self.length).unwrap_or(chrono::Duration::MAX);
        match shared.store.renew_claim(&self.claim, until, now).await {
            Ok(held) => {
                self.until = until;
                self.held = Some(held);
            }
            Err(e) => {
                warn!(error = %e, "could not renew a claim's lease; its items wait");
                self.quiet_until = Instant::now() + Duration::from_secs(1);
            }
        }
    }

    /// Whether the lease still has room for a whole attempt.
    fn long_enough(&self) -> bool {
        (self.until - Utc::now()).to_std().unwrap_or_default() > self.needed
    }

    /// Whether the claim still held `c` at the last renewal.
    fn holds(&self, c: &Claimed) -> bool {
        self.held.as_ref().is_none_or(|h| h.contains(&c.comm.id))
    }

    /// Waits for `fut`, renewing the lease whenever it gets short meanwhile.
    async fn hold<F: std::future::Future>(&mut self, shared: &Shared, fut: F) -> F::Output {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                out = &mut fut => return out,
                _ = tokio::time::sleep(self.renew_in()) => self.renew(shared).await,
            }
        }
    }
}

pub async fn dispatch_batch(
    shared: &Arc<Shared>,
    ch: &Arc<Channel>,
    claimed: Vec<Claimed>,
    lease_length: Duration,
    shutdown: &CancellationToken,
) {
    let claimed = gated(shared, ch, claimed).await;
    let timeout = Duration::from_millis(ch.policy.timeout_ms);
    let Some(mut lease) = Lease::new(&claimed, lease_length, timeout) else {
        return;
    };
    let mut queue = claimed.into_iter();
    while let Some(c) = queue.next() {
        let c = match settle(shared, ch, c, &mut queue).await {
            Settled::Send(c) => *c,
            Settled::Done => continue,
            Settled::Stop => return,
        };
        // 3. rate limit
        tokio::select! {
            _ = lease.hold(shared, ch.limiter.until_ready()) => {}
            _ = shutdown.cancelled() => {
                let rest: Vec<Claimed> = std::iter::once(c).chain(queue).collect();
                give_back(shared, rest, Utc::now(), "hub shutting down").await;
                return;
            }
        }
        // 4. channel throttle (429 seen)
        if let Some(wait) = ch.throttled_for() {
            if wait > HOLD_AT_MOST {
                let rest: Vec<Claimed> = std::iter::once(c).chain(queue).collect();
                give_back(shared, rest, chrono_after(wait), "channel throttled").await;
                return;
            }
            lease.hold(shared, tokio::time::sleep(wait)).await;
        }
        // 5. concurrency
        let mut svc = ch.service.clone();
        tokio::select! {
            _ = lease.hold(shared, service::ready(&mut svc)) => {}
            _ = shutdown.cancelled() => {
                let rest: Vec<Claimed> = std::iter::once(c).chain(queue).collect();
                give_back(shared, rest, Utc::now(), "hub shutting down").await;
                return;
            }
        }
        // The waits may have outlasted an expiry, a cancel, a pause or the window: look again.
        let c = match settle(shared, ch, c, &mut queue).await {
            Settled::Send(c) => *c,
            Settled::Done => continue,
            Settled::Stop => return,
        };
        // The lease must cover the whole attempt, and the item must still be this claim's: a
        // claim that ran out may have been reaped and claimed again, and sending on it would
        // send the communication twice.
        if !lease.long_enough() {
            lease.renew(shared).await;
        }
        if !lease.long_enough() || !lease.holds(&c) {
            debug!(communication_id = %c.comm.id, "not sent: its claim's lease ran out; the reaper or its new claim has it");
            continue;
        }
        // 6. circuit breaker
        let probe = match ch.breaker.admit(Instant::now()) {
            Admit::Yes => false,
            Admit::Probe => true,
            Admit::No { until } => {
                let wait = until.saturating_duration_since(Instant::now());
                let rest: Vec<Claimed> = std::iter::once(c).chain(queue).collect();
                give_back(shared, rest, chrono_after(wait), "circuit breaker open").await;
                return;
            }
        };
        ch.send_started();
        let guard = InFlight(Arc::clone(ch));
        let shared = Arc::clone(shared);
        let ch = Arc::clone(ch);
        tokio::spawn(async move {
            use futures_util::FutureExt;
            let attempted = std::panic::AssertUnwindSafe(attempt(&ch, &c, probe, svc))
                .catch_unwind()
                .await;
            let (finish, opened, outcome) = match attempted {
                Ok(done) => done,
                // A bug, not the channel's answer: whether the request went out is unknown, so
                // the communication is `unknown` (never resent blindly), and the breaker counts a
                // failure, which also ends a probe instead of leaving the channel half-open for
                // ever.
                Err(_) => panicked(&ch, &c),
            };
            ch.plugin.after_attempt(&shared, &c, &outcome).await;
            if opened {
                // Every instance holds off, not just this one.
                let open_for = Duration::from_millis(ch.policy.breaker.open_ms);
                shared.coord.open_breaker(ch.id, open_for).await;
            }
            shared.finisher.submit(finish).await;
            drop(guard);
        });
    }
}

/// The outcome of an attempt whose send panicked.
fn panicked(ch: &Channel, c: &Claimed) -> (Finish, bool, Outcome) {
    warn!(channel = %ch.id, communication_id = %c.comm.id, "the send panicked; outcome unknown");
    let opened = ch.breaker.on_failure(Instant::now());
    ch.counters.unknown.fetch_add(1, Ordering::Relaxed);
    let reason = "the send failed inside the hub (a bug); whether the channel got it is unknown";
    let outcome = Outcome::Unknown {
        reason: reason.into(),
        answer: String::new(),
    };
    let finish = Finish {
        id: c.comm.id,
        claim: c.claim.clone(),
        campaign_id: c.comm.campaign_id.clone(),
        channel: c.comm.channel,
        attempt: Some(AttemptRow {
            number: c.attempts + 1,
            started_at: Utc::now(),
            duration_ms: 0,
            classification: Classification::Unknown,
            answer: String::new(),
            reason: Some(reason.into()),
            external_id: None,
        }),
        status: Status::Unknown,
        reason: Some(reason.into()),
        external_id: None,
        next_attempt_at: None,
        attempts: c.attempts + 1,
    };
    (finish, opened, outcome)
}

/// 7–8: one timed attempt, classified, turned into the communication's next state.
///
/// `svc` holds the concurrency permit; the call gives it back when the answer or the timeout
/// comes (or when a panic drops the call).
async fn attempt(
    ch: &Channel,
    c: &Claimed,
    probe: bool,
    mut svc: AttemptService,
) -> (Finish, bool, Outcome) {
    let started_at = Utc::now();
    let t0 = Instant::now();
    let outcome = service::call(
        &mut svc,
        ch.connector.as_ref(),
        &c.comm,
        ch.policy.timeout_ms,
    )
    .await;
    // A timeout toward a channel configured as safe to resend becomes a retry.
    let outcome = match outcome {
        Outcome::Unknown { reason, answer } if ch.policy.on_timeout == TimeoutPolicy::Retry => {
            Outcome::Retry {
                after: None,
                reason,
                answer,
                throttled: false,
            }
        }
        o => o,
    };
    let duration = t0.elapsed();
    let c_ = &ch.counters;
    c_.attempts.fetch_add(1, Ordering::Relaxed);
    c_.attempt_ms_sum.fetch_add(
        u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );

    let mut opened = false;
    match &outcome {
        Outcome::Sent { .. } => ch.breaker.on_success(),
        o if o.is_channel_failure() => {
            if ch.breaker.on_failure(Instant::now()) {
                opened = true;
                c_.breaker_opened.fetch_add(1, Ordering::Relaxed);
                warn!(channel = %ch.id, open_ms = ch.policy.breaker.open_ms, probe, "circuit breaker opened");
            }
        }
        _ => ch.breaker.on_neutral(),
    }
    if let Outcome::Retry {
        throttled: true,
        after,
        ..
    } = &outcome
    {
        let wait = after.unwrap_or(Duration::from_secs(1));
        ch.throttle(Instant::now() + wait);
        debug!(channel = %ch.id, wait_ms = wait.as_millis() as u64, "channel throttled");
    }

    let number = c.attempts + 1;
    // What a channel answers is stored as it came, except what no store can hold (U+0000) and
    // beyond a bound: an answer must never make its outcome unwritable.
    let clean = |v: &str, max: usize| clm_contracts::communication::sanitize(v, max).into_owned();
    let (classification, reason, external_id) = match &outcome {
        Outcome::Sent { external_id, .. } => (
            Classification::Sent,
            None,
            external_id
                .as_deref()
                .map(|x| clean(x, crate::store::MAX_REFERENCE_LEN)),
        ),
        Outcome::Retry { reason, .. } => {
            (Classification::Retry, Some(clean(reason, MAX_REASON)), None)
        }
        Outcome::Fail { reason, .. } => {
            (Classification::Fail, Some(clean(reason, MAX_REASON)), None)
        }
        Outcome::Unknown { reason, .. } => (
            Classification::Unknown,
            Some(clean(reason, MAX_REASON)),
            None,
        ),
    };
    let row = AttemptRow {
        number,
        started_at,
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        classification,
        answer: clean(outcome.answer(), MAX_REASON),
        reason: reason.clone(),
        external_id: external_id.clone(),
    };
    let (status, reason, next) = next_state(ch, c, &outcome, number);
    let reason = reason.map(|r| clean(&r, MAX_REASON));
    match status {
        Status::Sent => c_.sent.fetch_add(1, Ordering::Relaxed),
        Status::RetryWait => c_.retried.fetch_add(1, Ordering::Relaxed),
        Status::Failed => c_.failed.fetch_add(1, Ordering::Relaxed),
        Status::Unknown => c_.unknown.fetch_add(1, Ordering::Relaxed),
        Status::Expired => c_.expired.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    let finish = Finish {
        id: c.comm.id,
        claim: c.claim.clone(),
        campaign_id: c.comm.campaign_id.clone(),
        channel: c.comm.channel,
        attempt: Some(row),
        status,
        reason,
        external_id,
        next_attempt_at: next,
        attempts: number,
    };
    (finish, opened, outcome)
}

/// Throttled retries are the channel's pacing, not the message's fault: they may take up to this
/// many times `max_attempts` before the message fails.
const THROTTLED_ATTEMPTS_FACTOR: u32 = 4;

fn next_state(
    ch: &Channel,
    c: &Claimed,
    outcome: &Outcome,
    number: u32,
) -> (Status, Option<String>, Option<DateTime<Utc>>) {
    match outcome {
        Outcome::Sent { .. } => (Status::Sent, None, None),
        Outcome::Fail { reason, .. } => (Status::Failed, Some(reason.clone()), None),
        Outcome::Unknown { reason, .. } => (Status::Unknown, Some(reason.clone()), None),
        Outcome::Retry {
            after,
            reason,
            throttled,
            ..
        } => {
            let p = &ch.policy;
            let limit = if *throttled {
                p.max_attempts.saturating_mul(THROTTLED_ATTEMPTS_FACTOR)
            } else {
                p.max_attempts
            };
            if number >= limit {
                return (
                    Status::Failed,
                    Some(format!("gave up after {number} attempts: {reason}")),
                    None,
                );
            }
            let delay = retry_delay(
                number,
                Duration::from_millis(p.backoff_initial_ms),
                Duration::from_millis(p.backoff_max_ms),
                *after,
                &mut rand::rng(),
            );
            let next = chrono_after(delay);
            if c.comm.expires_at.is_some_and(|e| e <= next) {
                return (
                    Status::Expired,
                    Some(format!(
                        "expires before the next attempt could be made: {reason}"
                    )),
                    None,
                );
            }
            (Status::RetryWait, Some(reason.clone()), Some(next))
        }
    }
}
