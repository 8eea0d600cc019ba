//! What every part of a running hub shares.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};

use clm_contracts::ChannelId;
use tokio::sync::Notify;

use crate::batcher::Batcher;
use crate::channels::Plugin;
use crate::config::Config;
use crate::dispatcher::{Channel, Finisher};
use crate::events::EventBus;
use crate::metrics::{DepthCache, Metrics};
use crate::store::{IncomingResponse, InsertOutcome, NewCommunication, ResponseOutcome, Store};

pub struct Shared {
    pub config: Config,
    pub store: Store,
    /// This process's id in claims (`claimed_by`).
    pub instance: String,
    /// Enabled channels only.
    pub channels: BTreeMap<ChannelId, Arc<Channel>>,
    pub finisher: Finisher,
    pub intake: Batcher<NewCommunication, InsertOutcome>,
    pub ingest: Batcher<IncomingResponse, ResponseOutcome>,
    pub events: EventBus,
    pub metrics: Metrics,
    /// The queue depth per channel, counted at most every few seconds (`/metrics`,
    /// `GET /v1/channels`).
    pub depth: DepthCache,
    /// Something was written to the outbox.
    pub outbox_wake: Arc<Notify>,
    /// The hub's own base URL as channels reach it.
    pub public_url: String,
    /// Redis (shared limits, breaker, pause flags) or in-process.
    pub coord: crate::coordination::Coordination,
    /// RabbitMQ connection state (when `queue.url` is AMQP), for `/readyz`.
    pub broker: crate::amqp::SharedBrokerState,
    /// One plug-in per channel family (its routes, jobs and metrics), enabled channels or not.
    pub plugins: Vec<Arc<dyn Plugin>>,
    cancelled: RwLock<HashSet<String>>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        store: Store,
        instance: String,
        channels: BTreeMap<ChannelId, Arc<Channel>>,
        finisher: Finisher,
        events: EventBus,
        outbox_wake: Arc<Notify>,
        public_url: String,
        coord: crate::coordination::Coordination,
        plugins: Vec<Arc<dyn Plugin>>,
    ) -> Shared {
        let s1 = store.clone();
        let intake = Batcher::start(move |items: Vec<NewCommunication>| {
            let s = s1.clone();
            async move {
                let r = s.insert_batch(&items, chrono::Utc::now()).await;
                (items, r)
            }
        });
        let s2 = store.clone();
        let ingest = Batcher::start(move |items: Vec<IncomingResponse>| {
            let s = s2.clone();
            async move {
                let r = s.record_responses(&items, chrono::Utc::now()).await;
                (items, r)
            }
        });
        Shared {
            config,
            store,
            instance,
            channels,
            finisher,
            intake,
            ingest,
            events,
            metrics: Metrics::default(),
            depth: DepthCache::default(),
            outbox_wake,
            public_url,
            coord,
            broker: Default::default(),
            plugins,
            cancelled: RwLock::new(HashSet::new()),
        }
    }

    pub fn is_cancelled(&self, campaign_id: &str) -> bool {
        let set = self.cancelled.read().expect("cancelled lock");
        !set.is_empty() && set.contains(campaign_id)
    }

    pub fn unmark_cancelled(&self, campaign_id: &str) {
        self.cancelled
            .write()
            .expect("cancelled lock")
            .remove(campaign_id);
    }

    pub fn mark_cancelled(&self, campaigns: impl IntoIterator<Item = String>) {
        let mut set = self.cancelled.write().expect("cancelled lock");
        set.extend(campaigns);
    }
}
