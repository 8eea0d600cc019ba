//! A circuit breaker per channel: after `threshold` consecutive channel failures it opens for
//! `open_for`; then one probe goes through (half-open); its success closes it, its failure opens
//! it again. Throttling answers (429) do not count: the channel is alive, just busy.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    open_until: Option<Instant>,
    probe_in_flight: bool,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

/// Permission to send, or when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Half-open: this send is the probe.
    Probe,
    No {
        until: Instant,
    },
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold,
            open_for,
            inner: Mutex::new(Inner {
                failures: 0,
                open_until: None,
                probe_in_flight: false,
            }),
        }
    }

    pub fn admit(&self, now: Instant) -> Admit {
        let mut s = self.inner.lock().expect("breaker lock");
        match s.open_until {
            None => Admit::Yes,
            Some(until) if now < until => Admit::No { until },
            Some(_) if s.probe_in_flight => Admit::No {
                until: now + Duration::from_millis(100),
            },
            Some(_) => {
                s.probe_in_flight = true;
                Admit::Probe
            }
        }
    }

    pub fn on_success(&self) {
        let mut s = self.inner.lock().expect("breaker lock");
        s.failures = 0;
        s.open_until = None;
        s.probe_in_flight = false;
    }

    /// Neither success nor channel failure (a 4xx refusal, a throttle): ends a probe without
    /// judging the channel.
    pub fn on_neutral(&self) {
        let mut s = self.inner.lock().expect("breaker lock");
        if s.probe_in_flight {
            s.probe_in_flight = false;
            s.open_until = None;
            s.failures = 0;
        }
    }

    /// Returns true when this failure opened the breaker.
    pub fn on_failure(&self, now: Instant) -> bool {
        let mut s = self.inner.lock().expect("breaker lock");
        s.failures = s.failures.saturating_add(1);
        let reopen = s.probe_in_flight;
        s.probe_in_flight = false;
        if reopen || (s.open_until.is_none() && s.failures >= self.threshold) {
            s.open_until = Some(now + self.open_for);
            return true;
        }
        false
    }

    /// Half-open with its one probe still out: nothing else may go until it answers.
    pub fn probing(&self) -> bool {
        self.inner.lock().expect("breaker lock").probe_in_flight
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        let s = self.inner.lock().expect("breaker lock");
        match s.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_then_probes_once_and_closes() {
        let b = Breaker::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(!b.on_failure(t0));
        assert!(!b.on_failure(t0));
        assert!(b.on_failure(t0));
        assert!(matches!(b.admit(t0), Admit::No { .. }));
        tokio::time::advance(Duration::from_secs(11)).await;
        let t1 = Instant::now();
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert_eq!(b.admit(t1), Admit::Probe);
        assert!(
            matches!(b.admit(t1), Admit::No { .. }),
            "only one probe at a time"
        );
        b.on_success();
        assert_eq!(b.admit(t1), Admit::Yes);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let b = Breaker::new(1, Duration::from_secs(5));
        b.on_failure(Instant::now());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        assert!(b.on_failure(Instant::now()));
        assert_eq!(b.state(Instant::now()), BreakerState::Open);
    }

    #[test]
    fn successes_reset_the_count() {
        let b = Breaker::new(2, Duration::from_secs(5));
        let now = Instant::now();
        b.on_failure(now);
        b.on_success();
        assert!(!b.on_failure(now));
        assert_eq!(b.state(now), BreakerState::Closed);
    }
}
