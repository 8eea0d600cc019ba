//! The per-attempt part of the policy stack as a [`tower::Service`]: the channel's connector
//! under a concurrency limit ([`tower::limit::ConcurrencyLimit`], `concurrency` permits) and a
//! timeout ([`tower::timeout::Timeout`], `timeout_ms`).
//!
//! The claim-level stages before it (validity, window, pause, rate, throttle, breaker) stay the
//! dispatcher's: they hand claims back to the store with a due time, which a service's
//! `poll_ready` cannot. What is left per attempt is exactly what tower's layers are for:
//! `ready()` takes a permit (the dispatcher waits for it while renewing its lease), `call` holds
//! it for the attempt and releases it when the answer (or the timeout) comes.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use clm_connectors::{Connector, Outcome};
use clm_contracts::Communication;
use tower::limit::ConcurrencyLimit;
use tower::timeout::Timeout;
use tower::timeout::error::Elapsed;
use tower::{BoxError, Service, ServiceBuilder};

/// One attempt: a communication for a connector. Borrowed, so an attempt costs no copy and the
/// connector's own future (boxed once, by `async_trait`) is the whole call.
pub struct Attempt<'a> {
    pub connector: &'a dyn Connector,
    pub comm: &'a Communication,
}

/// The connector as a service: an attempt in, its classified outcome out. It is always ready; a
/// connector's own back-pressure (its pool) is inside `send`.
#[derive(Clone, Copy)]
pub struct ConnectorService;

impl<'a> Service<Attempt<'a>> for ConnectorService {
    type Response = Outcome;
    type Error = Infallible;
    type Future = futures_util::future::Map<
        Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>,
        fn(Outcome) -> Result<Outcome, Infallible>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt<'a>) -> Self::Future {
        use futures_util::FutureExt;
        attempt.connector.send(attempt.comm).map(Ok)
    }
}

/// One channel's attempt service. Clones share the concurrency limit; each clone holds at most
/// one permit, taken by `ready()` and given back when its call ends (or the clone is dropped).
pub type AttemptService = ConcurrencyLimit<Timeout<ConnectorService>>;

/// A channel's attempt service.
pub fn attempt_service(concurrency: usize, timeout: Duration) -> AttemptService {
    ServiceBuilder::new()
        .concurrency_limit(concurrency)
        .timeout(timeout)
        .service(ConnectorService)
}

/// A permit is free: `svc` (a clone of the channel's service) now holds it.
pub async fn ready(svc: &mut AttemptService) {
    // The inner services are always ready and never fail to be: only the permit is waited for.
    let _ =
        std::future::poll_fn(|cx| <AttemptService as Service<Attempt<'_>>>::poll_ready(svc, cx))
            .await;
}

/// One attempt through a service made ready by [`ready`]. The timeout is `Unknown`: the channel
/// may have taken the communication.
pub async fn call(
    svc: &mut AttemptService,
    connector: &dyn Connector,
    comm: &Communication,
    timeout_ms: u64,
) -> Outcome {
    match svc.call(Attempt { connector, comm }).await {
        Ok(outcome) => outcome,
        Err(e) => unanswered(&e, timeout_ms),
    }
}

fn unanswered(e: &BoxError, timeout_ms: u64) -> Outcome {
    if e.is::<Elapsed>() {
        Outcome::Unknown {
            reason: format!("no answer within {timeout_ms} ms; the channel may have taken it"),
            answer: "timeout".into(),
        }
    } else {
        // Not reachable with an infallible connector service; unknown, never resent blindly.
        Outcome::Unknown {
            reason: format!("the attempt failed inside the hub: {e}"),
            answer: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers after `delay`, counting how many sends run at once.
    struct Slow {
        delay: Duration,
        running: AtomicUsize,
        most: AtomicUsize,
    }

    #[async_trait]
    impl Connector for Slow {
        fn channel(&self) -> clm_contracts::ChannelId {
            clm_contracts::ChannelId::Sms
        }

        async fn send(&self, _comm: &Communication) -> Outcome {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Outcome::Sent {
                external_id: None,
                answer: "ok".into(),
            }
        }
    }

    fn comm() -> Communication {
        serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "campaign_id": "c",
            "customer_id": "k",
            "channel": "sms",
            "recipient": "+79001234567",
            "content": {"text": "x"},
        }))
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_limit_run_at_once_and_a_slow_answer_is_unknown() {
        let slow = Arc::new(Slow {
            delay: Duration::from_millis(50),
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        });
        let svc = attempt_service(2, Duration::from_millis(100));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let mut s = svc.clone();
            let slow = Arc::clone(&slow);
            tasks.push(tokio::spawn(async move {
                ready(&mut s).await;
                call(&mut s, slow.as_ref(), &comm(), 100).await
            }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Outcome::Sent { .. }));
        }
        assert_eq!(
            slow.most.load(Ordering::SeqCst),
            2,
            "two permits, two at once"
        );

        let hung = Arc::new(Slow {
            delay: Duration::from_secs(60),
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        });
        let mut s = attempt_service(1, Duration::from_millis(100));
        ready(&mut s).await;
        let o = call(&mut s, hung.as_ref(), &comm(), 100).await;
        assert!(
            matches!(&o, Outcome::Unknown { reason, answer } if reason.contains("100 ms") && answer == "timeout"),
            "{o:?}"
        );
        // The timed-out call gave its permit back.
        let mut again = s.clone();
        tokio::time::timeout(Duration::from_secs(1), ready(&mut again))
            .await
            .expect("the permit came back");
    }
}
