//! Housekeeping, on every instance: reaps expired claims (instances that died mid-send), expires
//! what waited past its validity, and picks up cancellations and pauses made through other
//! instances.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::state::Shared;

/// How long after a cancel its campaign is swept again for stragglers.
const RECANCEL_MINUTES: i64 = 10;

/// Reaps expired claims (instances that died mid-send) and picks up cancellations and pauses made
/// through other instances.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    // Often enough that a dead instance's claims come back within about a third of the lease.
    let every = Duration::from_secs(shared.config.dispatcher.lease_secs / 3)
        .clamp(Duration::from_secs(1), Duration::from_secs(15));
    let mut reap = tokio::time::interval(every);
    let mut coord_tick = tokio::time::interval(Duration::from_secs(1));
    let mut refresh = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reap.tick() => {
                match shared.store.reap_expired_claims(chrono::Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        info!(count = n, "expired claims made due again");
                        for ch in shared.channels.values() { ch.wake(); }
                        shared.outbox_wake.notify_one();
                    }
                    Err(e) => warn!(error = %e, "reaping expired claims failed"),
                }
                match shared.store.expire_pending(chrono::Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        info!(count = n, "pending communications expired");
                        shared.outbox_wake.notify_one();
                    }
                    Err(e) => warn!(error = %e, "expiring pending communications failed"),
                }
            }
            _ = refresh.tick() => {
                if let Ok(c) = shared.store.cancelled_campaigns().await {
                    shared.mark_cancelled(c);
                }
                // A cancel misses rows a claimer held at that moment and rows another instance
                // accepted before it heard of it: cancel recent campaigns again, until their
                // stragglers are gone (idempotent; one indexed query each).
                let recent = chrono::Utc::now() - chrono::Duration::minutes(RECANCEL_MINUTES);
                if let Ok(campaigns) = shared.store.cancelled_since(recent).await {
                    for c in campaigns {
                        match shared.store.cancel_campaign(&c, chrono::Utc::now()).await {
                            Ok(0) => {}
                            Ok(n) => {
                                info!(count = n, "late communications of a cancelled campaign cancelled");
                                shared.outbox_wake.notify_one();
                            }
                            Err(e) => warn!(error = %e, "cancelling late communications failed"),
                        }
                    }
                }
                // The store holds the pause flags durably; Redis mirrors them for the
                // one-second propagation below, and is corrected here if a write to it failed.
                if let Ok(paused) = shared.store.paused_channels().await {
                    for (id, ch) in &shared.channels {
                        let p = paused.contains(id);
                        if p != ch.is_paused() { ch.set_paused(p); }
                        if shared.coord.is_shared() {
                            let _ = shared.coord.set_paused(*id, p).await;
                        }
                    }
                }
            }
            _ = coord_tick.tick(), if shared.coord.is_shared() => {
                let paused = shared.coord.paused().await.ok();
                for (id, ch) in &shared.channels {
                    let until = shared.coord.breaker_open_for(*id).await.map(|d| tokio::time::Instant::now() + d);
                    ch.set_remote_breaker(until);
                    if let Some(p) = &paused {
                        let p = p.contains(id);
                        if p != ch.is_paused() { ch.set_paused(p); }
                    }
                }
            }
        }
    }
}
