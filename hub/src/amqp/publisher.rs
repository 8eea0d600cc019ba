//! Events out over AMQP: the outbox is published to `clm.events` in batches with publisher
//! confirms (pipelined: the whole batch is sent, then its confirms awaited), and rows leave the
//! outbox only after the broker confirmed them. A broker outage means a reconnect and a resend of
//! the unconfirmed batch: at-least-once, with the outbox `seq` as `message_id` for consumers that
//! deduplicate. With several instances on PostgreSQL, one of them publishes at a time (a session
//! advisory lock, see `Store::try_outbox_leadership`), which keeps the events in commit order per
//! communication.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::BasicProperties;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{EVENTS_EXCHANGE, SharedBrokerState};
use crate::events::EventBus;
use crate::store::{OutboxLeader, Store};

/// Events published per round trip.
const BATCH: u32 = 1000;

pub struct Publisher {
    pub store: Store,
    pub bus: EventBus,
    pub wake: Arc<Notify>,
    pub published: Arc<AtomicU64>,
    pub broker: SharedBrokerState,
    pub url: String,
    pub name: String,
}

impl Publisher {
    /// Publishes until `shutdown`, then drains what is left (as long as the broker answers).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        // Leadership outlives broker sessions: a broker outage is no reason to let another
        // instance take over (or to lose the lock's connection to the pool).
        let mut leader: Option<OutboxLeader> = None;
        loop {
            match self.session(&shutdown, &mut leader, &mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    self.broker.set_publisher(false);
                    if shutdown.is_cancelled() {
                        warn!(error = %e, "event publisher stopped with events left in the outbox; they go out at the next start");
                        break;
                    }
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "event publisher lost its broker; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    backoff = super::next_backoff(backoff);
                }
            }
        }
        self.broker.set_publisher(false);
        info!("event publisher stopped");
    }

    /// Waits after a store error (the store restarting is not a broker problem).
    async fn store_pause(
        &self,
        e: &crate::store::StoreError,
        delay: &mut Duration,
        shutdown: &CancellationToken,
    ) {
        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "event publisher cannot read the outbox; store unavailable?");
        tokio::select! {
            _ = tokio::time::sleep(*delay) => {}
            _ = shutdown.cancelled() => {}
        }
        *delay = super::next_backoff(*delay);
    }

    async fn session(
        &self,
        shutdown: &CancellationToken,
        leader: &mut Option<OutboxLeader>,
        backoff: &mut Duration,
    ) -> anyhow::Result<()> {
        let conn = super::connect(&self.url, &self.name).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        super::declare_topology(&ch).await?;
        self.broker.set_publisher(true);
        *backoff = Duration::from_millis(100);
        let mut store_delay = Duration::from_millis(100);
        loop {
            // An idle publisher learns of a dead connection here, not at its next publish.
            if !conn.status().connected() {
                anyhow::bail!("the broker connection closed");
            }
            let stopping = shutdown.is_cancelled();
            if leader.is_none() {
                match self.store.try_outbox_leadership().await {
                    Ok(l) => *leader = l,
                    Err(e) => {
                        if stopping {
                            return Ok(());
                        }
                        self.store_pause(&e, &mut store_delay, shutdown).await;
                        continue;
                    }
                }
                if leader.is_none() {
                    if stopping {
                        return Ok(());
                    }
                    // Another instance publishes; take over if it goes away.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    continue;
                }
            }
            if let Some(l) = leader.as_mut()
                && !l.still_held().await
            {
                warn!("lost the outbox publishing lock; trying to take it again");
                *leader = None;
                continue;
            }
            let rows = match self.store.outbox_fetch(BATCH).await {
                Ok(r) => r,
                Err(e) => {
                    if stopping {
                        return Ok(());
                    }
                    self.store_pause(&e, &mut store_delay, shutdown).await;
                    continue;
                }
            };
            store_delay = Duration::from_millis(100);
            if rows.is_empty() {
                if stopping {
                    let _ = conn.close(200, "hub shutting down".into()).await;
                    return Ok(());
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            let mut confirms = Vec::with_capacity(rows.len());
            for r in &rows {
                let props = BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2)
                    .with_message_id(r.seq.to_string().into());
                confirms.push(
                    ch.basic_publish(
                        EVENTS_EXCHANGE.into(),
                        r.routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        r.payload.as_bytes(),
                        props,
                    )
                    .await?,
                );
            }
            for c in confirms {
                if let Confirmation::Nack(_) = c.await? {
                    anyhow::bail!("the broker refused (nacked) an event; republishing the batch");
                }
            }
            let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
            // Confirmed but not deleted (store down): they go out again later; at-least-once.
            while let Err(e) = self.store.outbox_delete(&seqs).await {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                self.store_pause(&e, &mut store_delay, shutdown).await;
            }
            self.published
                .fetch_add(seqs.len() as u64, Ordering::Relaxed);
            for r in rows {
                self.bus.publish_row(r);
            }
        }
    }
}
