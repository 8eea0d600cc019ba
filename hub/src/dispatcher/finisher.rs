//! Writes attempt outcomes back to the store in batches: one transaction per batch instead of one
//! per message (the difference between ~1 000 and ~50 000 outcomes per second on SQLite).

use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::store::{Finish, Store};

/// Most outcomes written in one transaction.
const BATCH: usize = 1000;

#[derive(Clone)]
pub struct Finisher {
    tx: mpsc::Sender<Finish>,
}

impl Finisher {
    /// Starts the writer task; after `stop` it writes what is queued and ends.
    pub fn start(
        store: Store,
        stop: CancellationToken,
        on_written: impl Fn() + Send + Sync + 'static,
    ) -> (Finisher, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4 * BATCH);
        let task = tokio::spawn(write_loop(store, rx, stop, on_written));
        (Finisher { tx }, task)
    }

    pub async fn submit(&self, f: Finish) {
        if self.tx.send(f).await.is_err() {
            // Only after shutdown; the claim's lease runs out and it is retried, nothing is lost.
            warn!("outcome arrived after the finisher stopped; the claim will be reaped");
        }
    }
}

async fn write_loop(
    store: Store,
    mut rx: mpsc::Receiver<Finish>,
    stop: CancellationToken,
    on_written: impl Fn() + Send + Sync + 'static,
) {
    let mut buf = Vec::with_capacity(BATCH);
    loop {
        let stopping = tokio::select! {
            n = rx.recv_many(&mut buf, BATCH) => n == 0,
            _ = stop.cancelled() => true,
        };
        if stopping {
            while buf.len() < BATCH * 8 {
                match rx.try_recv() {
                    Ok(f) => buf.push(f),
                    Err(_) => break,
                }
            }
            if buf.is_empty() {
                return;
            }
        }
        let mut delay = Duration::from_millis(50);
        let mut tries = 0_u32;
        loop {
            tries += 1;
            match store.finish_batch(&buf, Utc::now()).await {
                Ok(_) => break,
                Err(e)
                    if (!e.is_retryable() && tries >= 5)
                        || (stop.is_cancelled() && tries >= 20) =>
                {
                    // Not a passing outage: the claims' leases run out and the reaper makes
                    // these due again, so they are retried rather than lost.
                    error!(error = %e, count = buf.len(), "giving up writing outcomes; claims will be reaped");
                    break;
                }
                Err(e) => {
                    // Keep the batch and retry: the store restarting must not lose outcomes.
                    error!(error = %e, count = buf.len(), retry_in_ms = delay.as_millis() as u64, "writing outcomes failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        buf.clear();
        on_written();
    }
}
