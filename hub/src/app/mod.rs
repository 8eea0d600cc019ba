//! Start-up and shutdown: builds the store, the channel families' connectors and plug-ins, the
//! channels and tasks from the config, serves the API, and on shutdown drains everything in
//! order ([`shutdown`]).
//!
//! - [`sandbox`]: the bundled mocks of sandbox mode, started by each family;
//! - [`housekeeping`]: reaping expired claims, expiry, cancellations and pauses of other instances;
//! - [`shutdown`]: the order tasks stop in;
//! - [`banner`]: what a started hub prints (URLs without their passwords).

mod banner;
mod housekeeping;
mod sandbox;
mod shutdown;

pub use banner::redact_url;
pub use sandbox::Sandbox;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::channels::{Build, Plugin};
use crate::config::Config;
use crate::dispatcher::{self, Channel, Finisher};
use crate::events::{self, EventBus};
use crate::state::Shared;
use crate::store::Store;

/// A running hub.
pub struct Hub {
    pub addr: std::net::SocketAddr,
    pub shared: Arc<Shared>,
    pub sandbox: Option<Sandbox>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Hub {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: in-flight sends finish, their outcomes are written, nothing claimed is left.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        if let Some(s) = self.sandbox {
            s.shutdown().await;
        }
    }

    /// Resolves when the hub stopped by itself or after `stop`.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Runs until `shutdown` is cancelled, then stops gracefully.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let hub = start(config, listener).await?;
    if hub.shared.config.log.format == crate::config::LogFormat::Text {
        banner::print(&hub);
    }
    shutdown.cancelled().await;
    info!("shutting down: finishing in-flight sends");
    hub.stop().await;
    info!("stopped");
    Ok(())
}

/// Starts a hub on `listener` and returns once it serves.
pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<Hub> {
    clm_connectors::install_crypto_provider();
    let addr = listener.local_addr()?;
    let public_url = config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let store_url = config.store_url();
    let store = Store::connect(&store_url, config.store.max_connections)
        .await
        .with_context(|| {
            format!(
                "store.url: cannot open the store ({})",
                redact_url(&store_url)
            )
        })?;

    let sandbox = if config.sandbox {
        Some(Sandbox::start(&config, &public_url).await?)
    } else {
        None
    };
    match build(config, store, public_url, sandbox.as_ref()).await {
        Ok(built) => Ok(serve(built, sandbox, listener, addr)),
        Err(e) => {
            if let Some(s) = sandbox {
                s.shutdown().await;
            }
            Err(e)
        }
    }
}

/// Everything a hub shares, built from the config: coordination, each family's connectors and
/// plug-in, the channels, the finisher. Nothing runs yet but the finisher and the batchers.
async fn build(
    config: Config,
    store: Store,
    public_url: String,
    sandbox: Option<&Sandbox>,
) -> anyhow::Result<(Arc<Shared>, EventBus, Arc<Notify>, Finishing)> {
    let coord = match crate::coordination::Coordination::connect(&config.coordination.url)
        .await
        .context("coordination.url: cannot use it")?
    {
        crate::coordination::Coordination::Redis(r) => {
            crate::coordination::Coordination::Redis(r.with_prefix(&config.coordination.key_prefix))
        }
        local => local,
    };
    let mut plugins: Vec<Arc<dyn Plugin>> = Vec::new();
    let mut channels = BTreeMap::new();
    let b = Build {
        config: &config,
        public_url: &public_url,
        sandbox,
    };
    for family in crate::channels::families() {
        let built = (family.build)(&b)?;
        for (id, connector) in built.connectors {
            let policy = config.channel(id).policy().clone();
            let limiter = crate::coordination::SharedLimiter::new(
                &coord,
                id,
                policy.rate,
                policy.burst,
                config.coordination.fallback_share,
            );
            let channel =
                Channel::new(id, policy, connector, limiter).with_plugin(Arc::clone(&built.plugin));
            channels.insert(id, Arc::new(channel));
        }
        plugins.push(built.plugin);
    }
    for id in store.paused_channels().await? {
        if let Some(ch) = channels.get(&id) {
            ch.set_paused(true);
        }
    }

    let instance = format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple());
    let outbox_wake = Arc::new(Notify::new());
    let finisher_stop = CancellationToken::new();
    let wake = Arc::clone(&outbox_wake);
    let (finisher, finisher_task) =
        Finisher::start(store.clone(), finisher_stop.clone(), move || {
            wake.notify_one()
        });
    let bus = EventBus::default();
    let shared = Arc::new(Shared::new(
        config,
        store.clone(),
        instance,
        channels,
        finisher,
        bus.clone(),
        Arc::clone(&outbox_wake),
        public_url,
        coord,
        plugins,
    ));
    shared.mark_cancelled(store.cancelled_campaigns().await?);
    Ok((
        shared,
        bus,
        outbox_wake,
        Finishing {
            stop: finisher_stop,
            task: finisher_task,
        },
    ))
}

/// The finisher's task and how to stop it.
struct Finishing {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts every task of a built hub and serves `listener`.
fn serve(
    (shared, bus, outbox_wake, finishing): (Arc<Shared>, EventBus, Arc<Notify>, Finishing),
    sandbox: Option<Sandbox>,
    listener: TcpListener,
    addr: std::net::SocketAddr,
) -> Hub {
    let store = shared.store.clone();
    let shutdown = CancellationToken::new();
    let dispatchers = shared
        .channels
        .values()
        .map(|ch| {
            tokio::spawn(dispatcher::run_channel(
                Arc::clone(&shared),
                Arc::clone(ch),
                shutdown.clone(),
            ))
        })
        .collect();
    let outbox_stop = CancellationToken::new();
    let intake_stop = CancellationToken::new();
    let (publisher, amqp_intake) = if shared.config.queue.is_amqp() {
        let url = shared.config.queue.url.clone();
        let publisher = crate::amqp::publisher::Publisher {
            store: store.clone(),
            bus,
            wake: outbox_wake,
            published: Arc::clone(&shared.metrics.events_published),
            broker: Arc::clone(&shared.broker),
            url: url.clone(),
            name: format!("clm-hub events {}", shared.instance),
        };
        let publisher = tokio::spawn(publisher.run(outbox_stop.clone()));
        let intake = tokio::spawn(crate::amqp::intake::run(
            Arc::clone(&shared),
            url,
            shared.config.queue.prefetch,
            Arc::clone(&shared.broker),
            intake_stop.clone(),
        ));
        (publisher, Some(intake))
    } else {
        let publisher = tokio::spawn(events::publish_loop(
            store.clone(),
            bus,
            outbox_wake,
            Arc::clone(&shared.metrics.events_published),
            outbox_stop.clone(),
        ));
        (publisher, None)
    };
    let housekeeping = tokio::spawn(housekeeping::run(Arc::clone(&shared), shutdown.clone()));
    let jobs = shared
        .plugins
        .iter()
        .flat_map(|p| Arc::clone(p).jobs(&shared, &shutdown))
        .collect();

    let app = crate::api::router(Arc::clone(&shared));
    // The listener outlives the dispatchers: reports and SOAP callbacks for the sends still in
    // flight at shutdown must find it open (it stops once their outcomes are written).
    let server_stop = CancellationToken::new();
    // `api::serve`, not `axum::serve`: the header-read timeout (slowloris) needs hyper's builder.
    let server = tokio::spawn(crate::api::serve(listener, app, server_stop.clone()));

    let tasks = shutdown::Tasks {
        intake_stop,
        amqp_intake,
        dispatchers,
        housekeeping,
        jobs,
        finisher_stop: finishing.stop,
        finisher: finishing.task,
        server_stop,
        server,
        outbox_stop,
        publisher,
        store,
    };
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        token.cancelled().await;
        tasks.stop().await;
    });
    info!(%addr, store = shared.store.backend(), sandbox = shared.config.sandbox, "hub started");
    Hub {
        addr,
        shared,
        sandbox,
        shutdown,
        task,
    }
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "hub".into())
}
