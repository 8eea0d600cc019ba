//! Start-up and shutdown: builds the store, connectors, channels and tasks from the config, serves
//! the API, and on shutdown drains everything in order (stop taking work → finish in-flight sends
//! → write their outcomes → publish the outbox → close the store).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clm_contracts::ChannelId;
use clm_mocks::{
    ChannelMock, ChannelMockConfig, CrmCallbacks, CrmKind, CrmMock, CrmMockConfig, EmailFeedback,
    ResponsesConfig, SmsMock, SmtpMock, SmtpMockConfig,
};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::dispatcher::{self, Channel, Finisher};
use crate::events::{self, EventBus};
use crate::state::Shared;
use crate::store::Store;

/// The bundled mocks a sandboxed hub runs in-process.
pub struct Sandbox {
    pub sms: SmsMock,
    /// One mock per enabled HTTP JSON channel (wink, elk, eissd).
    pub channels: BTreeMap<ChannelId, ChannelMock>,
    /// SAP CRM's campaign service, when `sap_crm` is enabled.
    pub sap_crm: Option<CrmMock>,
    /// The CRM ESB (Amdocs and CRM B2C), when either is enabled.
    pub crm_esb: Option<CrmMock>,
    /// The SMTP relay, when e-mail is enabled.
    pub smtp: Option<SmtpMock>,
}

impl Sandbox {
    pub fn mock(&self, channel: ChannelId) -> Option<&ChannelMock> {
        self.channels.get(&channel)
    }

    /// The CRM mock a CRM channel sends to.
    pub fn crm_mock(&self, channel: ChannelId) -> Option<&CrmMock> {
        match channel {
            ChannelId::SapCrm => self.sap_crm.as_ref(),
            ChannelId::Amdocs | ChannelId::CrmB2c => self.crm_esb.as_ref(),
            _ => None,
        }
    }

    fn crm_url(&self, channel: ChannelId) -> Option<String> {
        self.crm_mock(channel).map(CrmMock::url)
    }

    async fn shutdown(self) {
        self.sms.shutdown().await;
        for (_, m) in self.channels {
            m.shutdown().await;
        }
        for m in [self.sap_crm, self.crm_esb].into_iter().flatten() {
            m.shutdown().await;
        }
        if let Some(m) = self.smtp {
            m.shutdown().await;
        }
    }
}

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
    print_banner(&hub);
    shutdown.cancelled().await;
    info!("shutting down: finishing in-flight sends");
    hub.stop().await;
    info!("stopped");
    Ok(())
}

async fn start_sandbox(config: &Config, public_url: &str) -> anyhow::Result<Sandbox> {
    let sms = SmsMock::start(([127, 0, 0, 1], 0).into())
        .await
        .context("starting the bundled SMS mock")?;
    let mut channels = BTreeMap::new();
    for id in [ChannelId::Wink, ChannelId::Elk, ChannelId::Eissd] {
        let ch = config.channel(id);
        if !ch.is_enabled() {
            continue;
        }
        let responses = ResponsesConfig {
            webhook_url: (id != ChannelId::Eissd)
                .then(|| format!("{}/ingest/{id}", public_url.trim_end_matches('/'))),
            token: ch.ingest().and_then(|i| i.token.clone()),
            hmac_secret: ch.ingest().and_then(|i| i.hmac_secret.clone()),
            ..ResponsesConfig::typical(id)
        };
        let mock_config = ChannelMockConfig {
            responses,
            dwh_url: (id == ChannelId::Eissd)
                .then(|| crate::channels::eissd::source_url(config))
                .flatten(),
            ..ChannelMockConfig::default()
        };
        let mock = ChannelMock::start(id, ([127, 0, 0, 1], 0).into(), mock_config)
            .await
            .with_context(|| format!("starting the bundled {id} mock"))?;
        channels.insert(id, mock);
    }
    let sap_crm = if config.channel(ChannelId::SapCrm).is_enabled() {
        Some(start_crm_mock(config, public_url, CrmKind::SapCrm).await?)
    } else {
        None
    };
    let esb_wanted = [ChannelId::Amdocs, ChannelId::CrmB2c]
        .iter()
        .any(|id| config.channel(*id).is_enabled());
    let crm_esb = if esb_wanted {
        Some(start_crm_mock(config, public_url, CrmKind::Esb).await?)
    } else {
        None
    };
    let smtp = if config.channel(ChannelId::Email).is_enabled() {
        let ingest = &config.channels.email.ingest;
        let feedback = EmailFeedback {
            url: Some(format!(
                "{}{}",
                public_url.trim_end_matches('/'),
                clm_contracts::channels::email::INGEST_PATH
            )),
            hmac_secret: ingest.hmac_secret.clone(),
            basic: ingest
                .basic_username
                .clone()
                .zip(ingest.basic_password.clone()),
            events: vec!["delivered".into()],
            ..EmailFeedback::default()
        };
        let mock_config = SmtpMockConfig {
            feedback,
            ..SmtpMockConfig::default()
        };
        Some(
            SmtpMock::start(([127, 0, 0, 1], 0).into(), mock_config)
                .await
                .context("starting the bundled SMTP mock")?,
        )
    } else {
        None
    };
    Ok(Sandbox {
        sms,
        channels,
        sap_crm,
        crm_esb,
        smtp,
    })
}

/// A CRM mock that calls the hub's response service back for every accepted item.
async fn start_crm_mock(
    config: &Config,
    public_url: &str,
    kind: CrmKind,
) -> anyhow::Result<CrmMock> {
    let systems: &[&str] = match kind {
        CrmKind::SapCrm => &["SAP_CRM"],
        CrmKind::Esb => &["AMDOCS", "CRM_B2C"],
    };
    // With callers configured, the mock calls as the first one allowed for its systems.
    let auth = config
        .soap
        .callers
        .iter()
        .find(|c| systems.iter().all(|s| c.systems.iter().any(|x| x == s)))
        .map(|c| (c.username.clone(), c.password.clone()));
    let callbacks = CrmCallbacks {
        url: Some(format!(
            "{}/soap/{}",
            public_url.trim_end_matches('/'),
            crate::soap::RESPONSES
        )),
        auth,
        kinds: vec!["Delivered".into(), "OfferAccepted".into()],
        ..CrmCallbacks::default()
    };
    let mock_config = CrmMockConfig {
        callbacks,
        ..CrmMockConfig::default()
    };
    CrmMock::start(kind, ([127, 0, 0, 1], 0).into(), mock_config)
        .await
        .with_context(|| format!("starting the bundled {kind:?} mock"))
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
        Some(start_sandbox(&config, &public_url).await?)
    } else {
        None
    };

    let coord = match crate::coordination::Coordination::connect(&config.coordination.url)
        .await
        .context("coordination.url: cannot use it")?
    {
        crate::coordination::Coordination::Redis(r) => {
            crate::coordination::Coordination::Redis(r.with_prefix(&config.coordination.key_prefix))
        }
        local => local,
    };
    // E-mail tracking tokens: the configured secret, or in sandbox mode one made up now.
    // Outside sandbox mode only with a configured secret: links made with a key that changes at
    // every start would break for every customer after a restart.
    let email_sealer = if config.channel(ChannelId::Email).is_enabled() {
        let configured = config
            .channels
            .email
            .tracking
            .as_ref()
            .and_then(|t| t.secret.clone());
        match configured {
            Some(secret) => Some(crate::email::Sealer::new(&secret)),
            None if config.sandbox => Some(crate::email::Sealer::new(&format!(
                "{:032x}",
                rand::random::<u128>()
            ))),
            None => None,
        }
    } else {
        None
    };
    let mut channels = BTreeMap::new();
    for id in ChannelId::ALL {
        let cfg = config.channel(id);
        if !cfg.is_enabled() {
            continue;
        }
        let connector = match id {
            ChannelId::Sms => crate::channels::sms::connector(
                &config,
                &public_url,
                sandbox.as_ref().map(|s| &s.sms),
            )?,
            ChannelId::Wink | ChannelId::Elk | ChannelId::Eissd => {
                crate::channels::json_http::connector(
                    &config,
                    id,
                    sandbox.as_ref().and_then(|s| s.mock(id)),
                )?
            }
            ChannelId::SapCrm | ChannelId::Amdocs | ChannelId::CrmB2c => {
                crate::channels::crm::connector(
                    &config,
                    id,
                    sandbox.as_ref().and_then(|s| s.crm_url(id)),
                )?
            }
            ChannelId::Email => crate::channels::email::connector(
                &config,
                &public_url,
                email_sealer.as_ref(),
                sandbox.as_ref().and_then(|s| s.smtp.as_ref()),
            )?,
        };
        let limiter = crate::coordination::SharedLimiter::new(
            &coord,
            id,
            cfg.policy().rate,
            cfg.policy().burst,
            config.coordination.fallback_share,
        );
        channels.insert(
            id,
            Arc::new(Channel::new(id, cfg.policy().clone(), connector, limiter)),
        );
    }
    // Opened (lazily: an unreachable DWH is retried by the poller) before any task starts, so a
    // bad source fails start-up with nothing left running.
    let dwh_source = match crate::channels::eissd::source_url(&config) {
        Some(url) if channels.contains_key(&ChannelId::Eissd) => {
            Some(crate::dwh::Source::open(&url).with_context(|| {
                format!(
                    "channels.eissd.responses.source: cannot use {}",
                    redact_url(&url)
                )
            })?)
        }
        _ => None,
    };
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
        email_sealer,
    ));
    shared.mark_cancelled(store.cancelled_campaigns().await?);

    let shutdown = CancellationToken::new();
    let mut dispatchers = Vec::new();
    for ch in shared.channels.values() {
        dispatchers.push(tokio::spawn(dispatcher::run_channel(
            Arc::clone(&shared),
            Arc::clone(ch),
            shutdown.clone(),
        )));
    }
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
    let housekeeping = tokio::spawn(housekeeping(Arc::clone(&shared), shutdown.clone()));
    let mut reconcilers = Vec::new();
    for ch in shared.channels.values() {
        let Some(crm) = shared
            .config
            .channels
            .typed::<crate::config::CrmChannelConfig>(ch.id)
        else {
            continue;
        };
        let sc = &crm.soap;
        if ch.connector.reconciles() && sc.reconcile_every_ms > 0 {
            reconcilers.push(tokio::spawn(crate::reconcile::run(
                Arc::clone(&shared),
                Arc::clone(ch),
                Duration::from_millis(sc.reconcile_every_ms),
                // Give the CRM at least one request's time with the lost bundle first.
                Duration::from_millis(sc.request_timeout_ms),
                shutdown.clone(),
            )));
        }
    }
    let dwh_poller = dwh_source.map(|source| {
        let cfg = shared
            .config
            .channels
            .eissd
            .responses
            .clone()
            .unwrap_or_default();
        tokio::spawn(crate::dwh::run(
            Arc::clone(&shared),
            source,
            cfg,
            shutdown.clone(),
        ))
    });

    let app = crate::api::router(Arc::clone(&shared));
    // The listener outlives the dispatchers: reports and SOAP callbacks for the sends still in
    // flight at shutdown must find it open (it stops once their outcomes are written).
    let server_stop = CancellationToken::new();
    let server_stopper = server_stop.clone();
    // `api::serve`, not `axum::serve`: the header-read timeout (slowloris) needs hyper's builder.
    let server = tokio::spawn(crate::api::serve(listener, app, server_stop));

    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        token.cancelled().await;
        // Stop consuming: what was delivered but not stored goes back to the queue.
        intake_stop.cancel();
        if let Some(i) = amqp_intake {
            let _ = i.await;
        }
        // Stop taking work; dispatchers give back unsent claims and wait for in-flight sends.
        for d in dispatchers {
            let _ = d.await;
        }
        let _ = housekeeping.await;
        for r in reconcilers {
            let _ = r.await;
        }
        if let Some(p) = dwh_poller
            && let Err(e) = p.await
        {
            warn!(error = %e, "the EISSD response poller ended abnormally");
        }
        // Every send has submitted its outcome: write them, then publish what they announced.
        finisher_stop.cancel();
        let _ = finisher_task.await;
        // Reports for the last sends arrive a moment after their answers: a short grace.
        tokio::time::sleep(Duration::from_millis(SHUTDOWN_REPORT_GRACE_MS)).await;
        server_stopper.cancel();
        outbox_stop.cancel();
        let _ = publisher.await;
        match tokio::time::timeout(Duration::from_secs(10), server).await {
            Ok(Ok(Err(e))) => warn!(error = %e, "HTTP server ended with an error"),
            Err(_) => warn!("HTTP server did not stop within 10 s"),
            _ => {}
        }
        store.close().await;
    });
    info!(%addr, store = shared.store.backend(), sandbox = shared.config.sandbox, "hub started");
    Ok(Hub {
        addr,
        shared,
        sandbox,
        shutdown,
        task,
    })
}

/// How long after a cancel its campaign is swept again for stragglers.
const RECANCEL_MINUTES: i64 = 10;

/// How long the HTTP listener keeps taking reports after the last in-flight send ended.
const SHUTDOWN_REPORT_GRACE_MS: u64 = 500;

/// Reaps expired claims (instances that died mid-send) and picks up cancellations and pauses made
/// through other instances.
async fn housekeeping(shared: Arc<Shared>, shutdown: CancellationToken) {
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

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "hub".into())
}

/// `postgres://user:secret@host/db?password=x` → `postgres://user:***@host/db?password=***`.
///
/// Passwords are not always percent-encoded as they should be: everything between the scheme and
/// the *last* `@` is the user information (a `?`, `/`, `#`, `%` or `@` inside the password stays
/// hidden), and only what follows it is read for query parameters. When in doubt it hides more,
/// never less.
pub fn redact_url(url: &str) -> String {
    let (userinfo_end, rest_from) = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => (Some((s + 3, at)), at),
        (Some(s), _) => (None, s + 3),
        _ => (None, 0),
    };
    let mut out = String::with_capacity(url.len());
    match userinfo_end {
        Some((from, at)) => {
            out.push_str(&url[..from]);
            match url[from..at].split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(&url[from..at]),
            }
        }
        None => out.push_str(&url[..rest_from]),
    }
    let rest = &url[rest_from..];
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    out.push_str(before_query);
    if let Some(q) = query {
        out.push('?');
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

fn is_secret_param(key: &str) -> bool {
    const SECRET: [&str; 10] = [
        "password",
        "passwd",
        "pwd",
        "sslpassword",
        "token",
        "secret",
        "access_token",
        "api_key",
        "apikey",
        "auth",
    ];
    SECRET.iter().any(|s| key.eq_ignore_ascii_case(s))
}

fn print_banner(hub: &Hub) {
    let c = &hub.shared.config;
    let base = hub.base_url();
    let auth = if c.api_is_open() {
        "open (no token: loopback only)".to_owned()
    } else {
        "bearer token required".to_owned()
    };
    let header = if c.api_is_open() {
        String::new()
    } else {
        " -H 'Authorization: Bearer $CLM_HUB_TOKEN'".into()
    };
    println!("\nCLM Channel Hub is running");
    println!("  API        {base}/v1   ({auth})");
    println!("  store      {}", redact_url(&c.store_url()));
    println!("  queue      {}", redact_url(&c.queue.url));
    println!("  metrics    {base}/metrics    health {base}/healthz  {base}/readyz");
    if let Some(s) = &hub.sandbox {
        println!(
            "  sandbox    channels go to bundled mocks; SMS mock at http://{} (control: {})",
            s.sms.addr(),
            s.sms.control_url()
        );
        for (id, m) in &s.channels {
            println!(
                "             {id:<7} mock at {} (control: {})",
                m.base_url(),
                m.control_url()
            );
        }
        if let Some(m) = &s.smtp {
            println!(
                "             smtp    mock at smtp://{} (control: {})",
                m.addr(),
                m.control_url()
            );
        }
        for (name, m) in [("sap_crm", &s.sap_crm), ("crm ESB", &s.crm_esb)] {
            if let Some(m) = m {
                println!(
                    "             {name:<7} mock at {} (control: {})",
                    m.url(),
                    m.control_url()
                );
            }
        }
    }
    let id = uuid::Uuid::new_v4();
    println!(
        "\nSend an SMS:\n  curl -s{header} -H 'Content-Type: application/json' {base}/v1/communications -d '{{\"id\":\"{id}\",\"campaign_id\":\"demo\",\"customer_id\":\"c-1\",\"channel\":\"sms\",\"recipient\":\"+79001234567\",\"content\":{{\"text\":\"Привет! Ваш бонус ждёт вас\"}}}}'"
    );
    println!("Then see what happened to it:\n  curl -s{header} {base}/v1/communications/{id}\n");
    if hub.shared.channels.contains_key(&ChannelId::Wink) {
        let id = uuid::Uuid::new_v4();
        println!(
            "Or a Wink notification (the mock answers with delivered, shown, clicked):\n  curl -s{header} -H 'Content-Type: application/json' {base}/v1/communications -d '{{\"id\":\"{id}\",\"campaign_id\":\"demo\",\"customer_id\":\"c-1\",\"channel\":\"wink\",\"recipient\":\"wink-account-1\",\"content\":{{\"subject\":\"Новый сезон\",\"text\":\"Смотрите сегодня\"}}}}'\n"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            super::redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            super::redact_url("sqlite://data/hub.db"),
            "sqlite://data/hub.db"
        );
        assert_eq!(
            super::redact_url("postgres://h/db?user=u&password=pw&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        // Passwords that were never percent-encoded, as people paste them.
        for (url, shown) in [
            ("amqp://user:pa?ss@h:5672/%2f", "amqp://user:***@h:5672/%2f"),
            ("amqp://user:p@ss@h/vhost", "amqp://user:***@h/vhost"),
            ("amqp://user:p%40ss/x@h/v", "amqp://user:***@h/v"),
            (
                "amqp://user:pw#frag@h/v?heartbeat=10",
                "amqp://user:***@h/v?heartbeat=10",
            ),
            (
                "redis://:s3cret@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            ("amqp://guest@h/v", "amqp://guest@h/v"),
            (
                "http://gw/sendsms?username=u&password=p&token=t",
                "http://gw/sendsms?username=u&password=***&token=***",
            ),
        ] {
            let out = super::redact_url(url);
            assert_eq!(out, shown, "{url}");
            for secret in ["pa?ss", "p@ss", "p%40ss", "s3cret", "pw#"] {
                assert!(!out.contains(secret), "{out}");
            }
        }
    }
}
