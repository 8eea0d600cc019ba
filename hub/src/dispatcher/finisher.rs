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
        write_all(&store, std::mem::take(&mut buf), &stop).await;
        on_written();
    }
}

/// Writes one batch of outcomes. A passing failure (the store restarting, a deadlock, a lost
/// connection) is retried with the whole batch for as long as the hub runs: dropping outcomes
/// would have their claims reaped and their communications sent again. An outcome the store
/// refuses for its own sake is isolated (the batch is halved until only it fails) and written
/// once more without what the channel answered; only if even that is refused is it left to the
/// reaper.
async fn write_all(store: &Store, batch: Vec<Finish>, stop: &CancellationToken) {
    let write = |items: Vec<Finish>| {
        let store = store.clone();
        async move {
            let r = store.finish_batch(&items, Utc::now()).await;
            (items, r)
        }
    };
    let mut batch = batch;
    let mut delay = Duration::from_millis(50);
    let mut tries = 0_u32;
    let results = loop {
        tries += 1;
        match crate::batcher::write_isolating(&write, batch).await {
            Ok(r) => break r,
            Err((e, back)) if stop.is_cancelled() && tries >= 20 => {
                let batch = back;
                // Shutting down and the store is still away: the claims' leases run out and
                // the reaper makes these due again.
                error!(error = %e, count = batch.len(), "giving up writing outcomes at shutdown; claims will be reaped");
                return;
            }
            Err((e, back)) => {
                batch = back;
                error!(error = %e, count = batch.len(), retry_in_ms = delay.as_millis() as u64, "writing outcomes failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    for r in results {
        if let Err((refused, f)) = r {
            let bare = stripped(f);
            let id = bare.id;
            if let Err(e) = store.finish_batch(&[bare], Utc::now()).await {
                error!(communication_id = %id, error_id = %refused.error_id, error = %e,
                    "an outcome cannot be written even without the channel's answer; its claim will be reaped");
            } else {
                warn!(communication_id = %id, error_id = %refused.error_id,
                    "an outcome was written without the channel's answer, which the store refused");
            }
        }
    }
}

/// The outcome without anything the channel said: the least that keeps the state right.
fn stripped(mut f: Finish) -> Finish {
    f.reason = Some("the channel's answer could not be stored".into());
    f.external_id = None;
    if let Some(a) = f.attempt.as_mut() {
        a.answer = String::new();
        a.reason.clone_from(&f.reason);
        a.external_id = None;
    }
    f
}
