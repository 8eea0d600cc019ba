//! Events out. The outbox (written in the same transactions as the state changes) is drained by
//! one publisher task. On the embedded default the "queue" is in-process: a broadcast channel
//! for subscribers in this process, and a ring of recent events served by `GET /v1/events`.
//! An event leaves the outbox only after it was handed on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::Store;

/// One published event.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub seq: i64,
    pub routing_key: String,
    /// The event's JSON as stored, passed through unparsed.
    pub event: Box<serde_json::value::RawValue>,
}

/// Events kept for `GET /v1/events`.
const RECENT: usize = 10_000;

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Published>>,
    recent: Arc<Mutex<VecDeque<Arc<Published>>>>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(16_384);
        EventBus {
            tx,
            recent: Arc::new(Mutex::new(VecDeque::with_capacity(RECENT))),
        }
    }
}

impl EventBus {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    /// Hands an outbox row to in-process subscribers and the recent ring.
    pub(crate) fn publish_row(&self, r: crate::store::OutboxRow) {
        match serde_json::value::RawValue::from_string(r.payload) {
            Ok(event) => self.publish(Published {
                seq: r.seq,
                routing_key: r.routing_key,
                event,
            }),
            Err(e) => warn!(seq = r.seq, error = %e, "outbox row is not JSON; dropped"),
        }
    }

    fn publish(&self, p: Published) {
        let p = Arc::new(p);
        {
            let mut r = self.recent.lock().expect("recent lock");
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back(Arc::clone(&p));
        }
        let _ = self.tx.send(p);
    }

    /// Recent events after `after` (a `seq`), oldest first.
    pub fn recent_after(&self, after: i64, limit: usize) -> Vec<Arc<Published>> {
        let r = self.recent.lock().expect("recent lock");
        r.iter()
            .filter(|p| p.seq > after)
            .take(limit)
            .cloned()
            .collect()
    }
}

/// Drains the outbox into the bus until `shutdown`, then once more.
pub async fn publish_loop(
    store: Store,
    bus: EventBus,
    wake: Arc<Notify>,
    published: Arc<std::sync::atomic::AtomicU64>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let stopping = shutdown.is_cancelled();
        match store.outbox_fetch(1000).await {
            Ok(rows) if rows.is_empty() => {
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            Ok(rows) => {
                backoff = Duration::from_millis(100);
                let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
                for r in rows {
                    bus.publish_row(r);
                }
                published.fetch_add(seqs.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = store.outbox_delete(&seqs).await {
                    // Published but not deleted: they go out again (at-least-once), never lost.
                    warn!(error = %e, "could not remove published events from the outbox");
                }
            }
            Err(e) => {
                if stopping {
                    return;
                }
                warn!(error = %e, "reading the outbox failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
