//! Retry delays: exponential backoff with jitter, honouring the channel's `Retry-After`.

use std::time::Duration;

use rand::Rng;

/// Delay before attempt `attempt + 1` after `attempt` failed (1-based): `initial · 2^(attempt-1)`
/// capped at `max`, then "equal jitter" (uniform in the upper half, so retries of a burst spread
/// out but never come back immediately), and never earlier than `retry_after`.
pub fn retry_delay(
    attempt: u32,
    initial: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let base = initial.saturating_mul(1_u32 << exp.min(31)).min(max);
    let half = base / 2;
    let jitter = if half.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_nanos(
            rng.random_range(0..=u64::try_from(half.as_nanos()).unwrap_or(u64::MAX)),
        )
    };
    let delay = half + jitter;
    match retry_after {
        Some(ra) if ra > delay => ra,
        _ => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_double_within_jitter_and_cap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(60));
        for attempt in 1..=10 {
            let d = retry_delay(attempt, i, m, None, &mut rng);
            let base = (i * 2_u32.pow(attempt - 1)).min(m);
            assert!(
                d >= base / 2 && d <= base,
                "attempt {attempt}: {d:?} vs {base:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_a_lower_bound() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let d = retry_delay(
            1,
            Duration::from_secs(1),
            Duration::from_secs(60),
            Some(Duration::from_secs(30)),
            &mut rng,
        );
        assert_eq!(d, Duration::from_secs(30));
        let d = retry_delay(
            8,
            Duration::from_secs(1),
            Duration::from_secs(600),
            Some(Duration::from_secs(1)),
            &mut rng,
        );
        assert!(d >= Duration::from_secs(64));
    }
}
