//! A channel's rate limit shared by every hub instance: GCRA (the generic cell rate algorithm,
//! as governor uses locally) over one schedule in Redis, so the channel's rate holds however
//! many instances send.
//!
//! # Batches, and why the global rate still holds
//! One Redis round trip per message would cap a channel near the round-trip rate, so the script
//! hands out *reservations*: `want` consecutive slots of the shared schedule at once, each slot
//! `1/rate` after the previous one. The instance then lets each permit go at its slot's own time
//! (as the shared GCRA would have), not all at once, so:
//! - the schedule in Redis is what bounds the rate: across all instances, at most
//!   `rate · t + burst + want` slots are ever handed out by time `t`;
//! - a batch is at most 50 ms of the channel's rate (`rate / 20`, 1..=1000 permits), so an
//!   instance reserves at most 50 ms ahead and others wait at most that long for their turn;
//! - a permit not used within [`STALE`] of its slot is dropped, so permits held back cannot
//!   pile up into a burst later: over any window `W` the instances send at most
//!   `rate · (W + STALE) + burst` (a few percent over 10 s at worst, none when sending keeps up);
//! - an instance that leaves permits unused (idle, or slower than the rate) asks for no more
//!   than it used last time, so it does not starve the others by reserving what it wastes.
//!
//! # When Redis is unavailable
//! The limiter sends within a local governor limit of `rate · fallback_share` (the caller picks
//! the share: 1/expected instances, or 0.5), says so once in the log and in [`degraded`], and asks
//! Redis again at most once a second, once the connection's monitor sees Redis answer.
//!
//! [`degraded`]: SharedLimiter::degraded

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use clm_contracts::ChannelId;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{info, warn};

use super::connection::RedisCoordination;
use super::{CoordError, Coordination};

/// A permit this late after its slot is dropped rather than used (see the module doc).
pub const STALE: Duration = Duration::from_millis(100);
/// How long a degraded limiter stays on its local limit before asking Redis again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Most permits reserved in one round trip (the script's clock check assumes no more).
const MAX_BATCH: u32 = 1000;
/// Longest single wait for the shared schedule before asking again.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// KEYS[1]: the channel's theoretical arrival time (TAT, µs of the server's clock, so instance
/// clocks do not matter). ARGV: interval_us (1/rate), tolerance_us (burst · interval), want.
/// If the schedule is no more than `tolerance` ahead of now, reserve `want` slots (TAT moves by
/// want · interval) and return {want, offset of the first slot's conformance from now, ≤ 0 if
/// already}; else return {0, µs until it is}. A schedule further ahead than any grant (at most
/// [`MAX_BATCH`] slots) can put it, and over a minute ahead, means the server's clock stepped
/// back: it starts again from now.
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local ahead = math.max(tolerance + 1000 * interval, 60000000)
if tat < now or tat > now + ahead then tat = now end
if tat - now > tolerance then
  return {0, math.ceil(tat - tolerance - now)}
end
local new_tat = tat + want * interval
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {want, math.floor(tat + interval - tolerance - now)}
",
    )
});

/// One channel's rate limit: shared through Redis, or governor's alone on a single instance.
pub struct SharedLimiter {
    channel: ChannelId,
    mode: Mode,
}

enum Mode {
    Local(DefaultDirectRateLimiter),
    Shared(Box<Shared>),
}

struct Shared {
    coord: RedisCoordination,
    key: String,
    interval_us: f64,
    tolerance_us: f64,
    max_batch: u32,
    stock: Mutex<Stock>,
    /// One refill at a time; the others wait for its permits.
    refill: tokio::sync::Mutex<()>,
    fallback: DefaultDirectRateLimiter,
    fallback_rate: f64,
    degraded: AtomicBool,
    retry_at: Mutex<Instant>,
    round_trips: AtomicU64,
}

impl SharedLimiter {
    /// `rate` permits a second with bursts of `burst`, for `channel`. With Redis, the limit is
    /// shared by every instance; while Redis is unavailable each instance keeps to
    /// `rate · fallback_share` (in `(0, 1]`).
    pub fn new(
        coord: &Coordination,
        channel: ChannelId,
        rate: f64,
        burst: u32,
        fallback_share: f64,
    ) -> SharedLimiter {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let burst = burst.max(1);
        let mode = match coord {
            Coordination::Local => Mode::Local(governor_limiter(rate, burst)),
            Coordination::Redis(redis) => {
                let share = if fallback_share > 0.0 && fallback_share <= 1.0 {
                    fallback_share
                } else {
                    0.5
                };
                let interval_us = 1e6 / rate;
                let fallback_burst = ((f64::from(burst) * share).floor() as u32).max(1);
                Mode::Shared(Box::new(Shared {
                    coord: redis.clone(),
                    key: redis.key(&format!("rate:{channel}")),
                    interval_us,
                    tolerance_us: f64::from(burst) * interval_us,
                    max_batch: ((rate / 20.0).ceil() as u32).clamp(1, MAX_BATCH),
                    stock: Mutex::new(Stock::default()),
                    refill: tokio::sync::Mutex::new(()),
                    fallback: governor_limiter(rate * share, fallback_burst),
                    fallback_rate: rate * share,
                    degraded: AtomicBool::new(false),
                    retry_at: Mutex::new(Instant::now()),
                    round_trips: AtomicU64::new(0),
                }))
            }
        };
        SharedLimiter { channel, mode }
    }

    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// Waits for one permit. Never fails: without Redis it waits on the local fallback limit.
    pub async fn until_ready(&self) {
        match &self.mode {
            Mode::Local(l) => l.until_ready().await,
            Mode::Shared(s) => s.until_ready(self.channel).await,
        }
    }

    /// Sending on the local fallback limit because Redis is unavailable.
    pub fn degraded(&self) -> bool {
        match &self.mode {
            Mode::Local(_) => false,
            Mode::Shared(s) => s.degraded.load(Ordering::Acquire),
        }
    }

    /// Redis round trips made for permits so far (batching keeps this far below the permits).
    pub fn round_trips(&self) -> u64 {
        match &self.mode {
            Mode::Local(_) => 0,
            Mode::Shared(s) => s.round_trips.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    async fn until_ready(&self, channel: ChannelId) {
        loop {
            if let Some(at) = self.take() {
                sleep_until(at).await;
                return;
            }
            if self.on_fallback() {
                self.fallback.until_ready().await;
                return;
            }
            let _refilling = self.refill.lock().await;
            // Another caller may have refilled, or failed, while this one waited for the lock.
            if self.stock.lock().expect("stock lock").left > 0 || self.on_fallback() {
                continue;
            }
            let want = self
                .stock
                .lock()
                .expect("stock lock")
                .next_want(self.max_batch);
            match self.reserve(want).await {
                Ok((0, wait_us)) => {
                    self.recovered(channel);
                    let wait = Duration::from_micros(wait_us.max(1) as u64).min(MAX_WAIT);
                    sleep(wait).await;
                }
                Ok((granted, offset_us)) => {
                    self.recovered(channel);
                    let mut stock = self.stock.lock().expect("stock lock");
                    stock.fill(Instant::now(), offset_us as f64, self.interval_us, granted);
                }
                Err(e) => self.failed(channel, &e),
            }
        }
    }

    fn take(&self) -> Option<Instant> {
        self.stock.lock().expect("stock lock").take(Instant::now())
    }

    /// On the local limit, and not yet time to ask Redis again.
    fn on_fallback(&self) -> bool {
        if !self.degraded.load(Ordering::Acquire) {
            return false;
        }
        let due = *self.retry_at.lock().expect("retry lock") <= Instant::now();
        !(due && self.coord.is_healthy())
    }

    async fn reserve(&self, want: u32) -> Result<(u32, i64), CoordError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let (key, interval, tolerance) = (&self.key, self.interval_us, self.tolerance_us);
        self.coord
            .call(|mut c| async move {
                GCRA.key(key)
                    .arg(interval)
                    .arg(tolerance)
                    .arg(want)
                    .invoke_async::<(u32, i64)>(&mut c)
                    .await
            })
            .await
    }

    fn recovered(&self, channel: ChannelId) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            info!(channel = %channel, "shared rate limit back in force");
        }
    }

    fn failed(&self, channel: ChannelId, e: &CoordError) {
        *self.retry_at.lock().expect("retry lock") = Instant::now() + RETRY_EVERY;
        if !self.degraded.swap(true, Ordering::AcqRel) {
            warn!(channel = %channel, local_rate = self.fallback_rate, error = %e, "shared rate limit unavailable; sending within the local fallback rate");
        }
    }
}

/// Permits reserved from the shared schedule and not yet used: `left` of them, the next one
/// conforming `next_us` after `base` (the local instant the grant arrived), then one every
/// `interval_us`.
#[derive(Debug)]
struct Stock {
    base: Instant,
    next_us: f64,
    interval_us: f64,
    left: u32,
    /// Of the last grant: how many were asked for, used, dropped as stale.
    wanted: u32,
    used: u32,
    dropped: u32,
}

impl Default for Stock {
    fn default() -> Stock {
        Stock {
            base: Instant::now(),
            next_us: 0.0,
            interval_us: 0.0,
            left: 0,
            wanted: 0,
            used: 0,
            dropped: 0,
        }
    }
}

impl Stock {
    fn fill(&mut self, base: Instant, offset_us: f64, interval_us: f64, granted: u32) {
        *self = Stock {
            base,
            next_us: offset_us,
            interval_us,
            left: granted,
            wanted: granted,
            used: 0,
            dropped: 0,
        };
    }

    /// The next permit's time, dropping those already more than [`STALE`] late.
    fn take(&mut self, now: Instant) -> Option<Instant> {
        while self.left > 0 {
            let at = self.base + Duration::from_micros(self.next_us.max(0.0) as u64);
            self.next_us += self.interval_us;
            self.left -= 1;
            if now > at + STALE {
                self.dropped += 1;
                continue;
            }
            self.used += 1;
            return Some(at);
        }
        None
    }

    /// How many to reserve next: twice the last batch when all of it was used (up to `max`),
    /// else only as many as were used.
    fn next_want(&self, max: u32) -> u32 {
        let want = if self.dropped == 0 {
            self.wanted.saturating_mul(2)
        } else {
            self.used
        };
        want.clamp(1, max)
    }
}

fn governor_limiter(rate: f64, burst: u32) -> DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(
        Quota::with_period(period)
            .expect("positive period")
            .allow_burst(burst),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_paced_one_interval_apart() {
        let mut s = Stock::default();
        let t0 = Instant::now();
        // Two permits conform already (negative offset), the third one interval later.
        s.fill(t0, -2000.0, 1000.0, 4);
        assert_eq!(s.take(t0), Some(t0));
        assert_eq!(s.take(t0), Some(t0));
        assert_eq!(s.take(t0), Some(t0));
        assert_eq!(s.take(t0), Some(t0 + Duration::from_millis(1)));
        assert_eq!(s.take(t0), None);
        assert_eq!(s.next_want(100), 8, "all used: ask for twice as many");
        assert_eq!(s.next_want(5), 5, "never more than a batch");
    }

    #[tokio::test(start_paused = true)]
    async fn late_permits_are_dropped_and_the_next_batch_shrinks() {
        let mut s = Stock::default();
        let t0 = Instant::now();
        s.fill(t0, 0.0, 10_000.0, 20);
        assert_eq!(s.take(t0), Some(t0));
        // 150 ms later: the permits of 0..=40 ms are more than 100 ms late.
        let later = t0 + Duration::from_millis(150);
        assert_eq!(s.take(later), Some(t0 + Duration::from_millis(50)));
        assert_eq!(s.dropped, 4);
        assert_eq!(s.next_want(100), 2, "only as many as were used");
    }
}
