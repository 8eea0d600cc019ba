//! Fault injection, shared by every mock: what a request gets instead of a normal answer.
//!
//! The order faults apply in is fixed and written in [`FaultState::decide`]: script, throttle,
//! rate limit, timeout, error rate. Faults stand for the channel's infrastructure, so they answer
//! before credentials and the request itself are looked at.

use std::collections::VecDeque;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Faults a mock injects, the same for every mock and dialect. Every field has a default, so a control
/// request may send only the fields it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share (0..=1) of requests answered with `error_status`.
    pub error_rate: f64,
    /// Status of injected errors (400..=599); 503 by default.
    pub error_status: u16,
    /// Added before every answer.
    pub latency_ms: u64,
    /// Share (0..=1) of requests that never get an answer: they are held until the client gives
    /// up or the mock shuts down.
    pub timeout_rate: f64,
    /// While set, every request gets 429 with `Retry-After`.
    pub throttle: Option<Throttle>,
    /// Statuses the next requests get, in order, before any other fault applies. A 2xx means a
    /// normal answer, 429 comes with `Retry-After: 1`, 0 holds the request without an answer.
    pub script: Vec<u16>,
    /// Requests per second beyond which requests get 429 with `Retry-After: 1` (token bucket,
    /// burst = max(1, rate / 10)).
    pub max_rate: Option<f64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            error_status: 503,
            latency_ms: 0,
            timeout_rate: 0.0,
            throttle: None,
            script: Vec::new(),
            max_rate: None,
        }
    }
}

/// Throttling: every request is answered 429 with `Retry-After: retry_after_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Throttle {
    pub retry_after_secs: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            retry_after_secs: 1,
        }
    }
}

impl Faults {
    /// Checks the values; the error names the field that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("timeout_rate", self.timeout_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        if !(400..=599).contains(&self.error_status) {
            return Err(format!(
                "error_status must be 400..=599, got {}",
                self.error_status
            ));
        }
        if let Some(bad) = self
            .script
            .iter()
            .find(|s| **s != 0 && !(100..=599).contains(*s))
        {
            return Err(format!("script statuses must be 0 or 100..=599, got {bad}"));
        }
        match self.max_rate {
            Some(rate) if !(rate > 0.0 && rate.is_finite()) => {
                Err(format!("max_rate must be a positive number, got {rate}"))
            }
            _ => Ok(()),
        }
    }

    /// Brings every value into range, for callers of the library that skip [`Faults::validate`].
    fn sanitized(mut self) -> Self {
        let clamp = |r: f64| if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        self.error_rate = clamp(self.error_rate);
        self.timeout_rate = clamp(self.timeout_rate);
        if !(400..=599).contains(&self.error_status) {
            self.error_status = 503;
        }
        self.script.retain(|s| *s == 0 || (100..=599).contains(s));
        self.max_rate = self.max_rate.filter(|r| *r > 0.0 && r.is_finite());
        self
    }
}

/// What the faults decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// No fault: the dialect checks the request and answers it.
    Normal,
    /// Answer with this status and a realistic error body.
    Error(u16),
    /// 429 with `Retry-After`.
    Throttled { retry_after_secs: u64 },
    /// Never answer.
    Hold,
}

/// The faults in force plus what they consume: the rest of the script and the token bucket.
pub(crate) struct FaultState {
    faults: Faults,
    script: VecDeque<u16>,
    bucket: Option<TokenBucket>,
}

impl FaultState {
    pub(crate) fn new(faults: Faults) -> Self {
        let mut state = FaultState {
            faults: Faults::default(),
            script: VecDeque::new(),
            bucket: None,
        };
        state.set(faults);
        state
    }

    /// Replaces the faults; the script starts over and the token bucket starts full.
    pub(crate) fn set(&mut self, faults: Faults) {
        let mut faults = faults.sanitized();
        self.script = std::mem::take(&mut faults.script).into();
        self.bucket = faults
            .max_rate
            .map(|rate| TokenBucket::new(rate, Instant::now()));
        self.faults = faults;
    }

    /// The faults in force, with what is left of the script.
    pub(crate) fn current(&self) -> Faults {
        Faults {
            script: self.script.iter().copied().collect(),
            ..self.faults.clone()
        }
    }

    pub(crate) fn latency_ms(&self) -> u64 {
        self.faults.latency_ms
    }

    pub(crate) fn decide(&mut self) -> Outcome {
        // A script is the test saying exactly what comes next, so it wins over everything.
        if let Some(status) = self.script.pop_front() {
            return match status {
                0 => Outcome::Hold,
                200..=299 => Outcome::Normal,
                429 => Outcome::Throttled {
                    retry_after_secs: 1,
                },
                other => Outcome::Error(other),
            };
        }
        if let Some(throttle) = self.faults.throttle {
            return Outcome::Throttled {
                retry_after_secs: throttle.retry_after_secs,
            };
        }
        if let Some(bucket) = &mut self.bucket
            && !bucket.try_take(Instant::now())
        {
            return Outcome::Throttled {
                retry_after_secs: 1,
            };
        }
        if self.faults.timeout_rate > 0.0 && rand::random::<f64>() < self.faults.timeout_rate {
            return Outcome::Hold;
        }
        if self.faults.error_rate > 0.0 && rand::random::<f64>() < self.faults.error_rate {
            return Outcome::Error(self.faults.error_status);
        }
        Outcome::Normal
    }
}

/// Longest a request is held by the timeout fault: a cap, so held requests of a long run with
/// clients that never give up cannot pile up forever.
const MAX_HOLD: std::time::Duration = std::time::Duration::from_secs(300);

/// Waits out the injected latency; returns early on shutdown.
pub(crate) async fn pause(latency: std::time::Duration, shutdown: &CancellationToken) {
    if !latency.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(latency) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// Holds a request that must not be answered, until shutdown (or [`MAX_HOLD`]). When the client
/// gives up and closes the connection, the server drops this future.
pub(crate) async fn hold(shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(MAX_HOLD) => {}
        () = shutdown.cancelled() => {}
    }
}

/// A token bucket refilled continuously at `rate` per second, holding at most `burst` tokens.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, now: Instant) -> Self {
        let burst = (rate / 10.0).max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn script_comes_first_and_in_order() {
        let mut state = FaultState::new(Faults {
            script: vec![503, 200, 429, 0],
            error_rate: 1.0,
            error_status: 500,
            ..Faults::default()
        });
        assert_eq!(state.decide(), Outcome::Error(503));
        assert_eq!(state.decide(), Outcome::Normal);
        assert_eq!(
            state.decide(),
            Outcome::Throttled {
                retry_after_secs: 1
            }
        );
        assert_eq!(state.decide(), Outcome::Hold);
        assert_eq!(state.decide(), Outcome::Error(500));
        assert!(state.current().script.is_empty());
    }

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100.0, start);
        let allowed = (0..50).filter(|_| bucket.try_take(start)).count();
        assert_eq!(allowed, 10, "burst is rate / 10");
        assert!(bucket.try_take(start + Duration::from_millis(10)));
        assert!(!bucket.try_take(start + Duration::from_millis(10)));
    }

    #[test]
    fn slow_rates_still_allow_one_request() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(0.5, start);
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start + Duration::from_secs(1)));
        assert!(bucket.try_take(start + Duration::from_secs(3)));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = Faults {
            error_rate: 1.5,
            ..Faults::default()
        };
        assert!(bad.validate().unwrap_err().contains("error_rate"));
        let bad = Faults {
            error_status: 200,
            ..Faults::default()
        };
        assert!(bad.validate().unwrap_err().contains("error_status"));
        assert!(Faults::default().validate().is_ok());
    }

    #[test]
    fn sanitizing_clamps_what_the_library_caller_passed() {
        let state = FaultState::new(Faults {
            error_rate: 7.0,
            error_status: 42,
            script: vec![1000, 503],
            ..Faults::default()
        });
        let f = state.current();
        assert_eq!((f.error_rate, f.error_status), (1.0, 503));
        assert_eq!(f.script, vec![503]);
    }
}
