//! The order a hub stops in, so that nothing taken is lost and nothing sent is unrecorded:
//! 1. stop consuming (what was delivered but not stored goes back to the queue);
//! 2. stop taking work: dispatchers give back unsent claims and wait for in-flight sends;
//!    housekeeping and the families' jobs stop;
//! 3. every send has submitted its outcome: the finisher writes them;
//! 4. a short grace for the reports of the last sends, then the listener stops and the outbox
//!    publishes what those outcomes announced;
//! 5. the store closes.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::channels::Job;
use crate::store::Store;

/// How long the HTTP listener keeps taking reports after the last in-flight send ended.
const REPORT_GRACE: Duration = Duration::from_millis(500);

/// How long the listener may take to finish its open requests.
const SERVER_STOP: Duration = Duration::from_secs(10);

/// Every task of a running hub, and how to stop each.
pub(super) struct Tasks {
    pub intake_stop: CancellationToken,
    pub amqp_intake: Option<JoinHandle<()>>,
    pub dispatchers: Vec<JoinHandle<()>>,
    pub housekeeping: JoinHandle<()>,
    pub jobs: Vec<Job>,
    pub finisher_stop: CancellationToken,
    pub finisher: JoinHandle<()>,
    pub server_stop: CancellationToken,
    pub server: JoinHandle<std::io::Result<()>>,
    pub outbox_stop: CancellationToken,
    pub publisher: JoinHandle<()>,
    pub store: Store,
}

impl Tasks {
    /// Stops everything in order (the dispatchers, housekeeping and jobs have seen the hub's
    /// shutdown token already).
    pub(super) async fn stop(self) {
        self.intake_stop.cancel();
        if let Some(i) = self.amqp_intake {
            let _ = i.await;
        }
        for d in self.dispatchers {
            let _ = d.await;
        }
        let _ = self.housekeeping.await;
        for job in self.jobs {
            if let Err(e) = job.task.await {
                warn!(job = %job.name, error = %e, "a background job ended abnormally");
            }
        }
        self.finisher_stop.cancel();
        let _ = self.finisher.await;
        tokio::time::sleep(REPORT_GRACE).await;
        self.server_stop.cancel();
        self.outbox_stop.cancel();
        let _ = self.publisher.await;
        match tokio::time::timeout(SERVER_STOP, self.server).await {
            Ok(Ok(Err(e))) => warn!(error = %e, "HTTP server ended with an error"),
            Err(_) => warn!("HTTP server did not stop within 10 s"),
            _ => {}
        }
        self.store.close().await;
    }
}
