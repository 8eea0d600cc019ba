//! The rate-limit phase (`--stack ratelimit`): how close the hub holds a channel's configured
//! rate, with one instance and with three sharing one Redis limit.
//!
//! For 1 and then 3 instances: a fresh database, vhost and Redis `key_prefix`; that many release
//! `clm-hub` processes on them (`[coordination]` on Redis, `[channels.sms.policy] rate = R,
//! burst = 10, concurrency = 64`, DLRs off); enough communications published over AMQP to keep
//! the channel saturated through the window; from the first acceptance at the SMS mock a 1 s
//! warm-up (the burst), then the mock's accepted counter over W seconds → measured rate and
//! error = (measured − R) / R.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clm_hub::amqp::COMMUNICATIONS_EXCHANGE;
use clm_mocks::SmsMock;
use lapin::options::ConfirmSelectOptions;
use uuid::Uuid;

use crate::broker::{bodies, connect, publish_confirmed};
use crate::hub::HubProcess;
use crate::procfs::{group, hub_env_overrides};
use crate::services::{Scratch, Services};
use crate::{Opts, Steps};

const BURST: u64 = 10;
const CONCURRENCY: u64 = 64;
const WARM_UP: Duration = Duration::from_secs(1);
const INSTANCES: [usize; 2] = [1, 3];

struct Run {
    instances: usize,
    measured: f64,
    /// Measured over exactly this long.
    window: f64,
    published: u64,
    /// Published and not yet accepted at the mock when the window closed.
    backlog_at_end: u64,
    duplicates: u64,
}

impl Run {
    fn error_pct(&self, rate: f64) -> f64 {
        (self.measured - rate) / rate * 100.0
    }
}

pub async fn run(
    opts: &Opts,
    services: &Services,
    mock: &SmsMock,
    steps: &mut Steps,
) -> anyhow::Result<()> {
    clm_connectors::install_crypto_provider();
    let redis = services
        .redis_url()
        .context("Redis was not started (CLM_TEST_SERVICES without redis)")?
        .to_owned();
    let mut runs = Vec::new();
    for instances in INSTANCES {
        steps.next(&format!(
            "rate limit: {instances} hub instance(s) sharing {} /s on one Redis, measured at the mock over {} s…",
            group(opts.rate),
            opts.window
        ));
        let scratch = services.scratch().await?;
        let result = measure(opts, &scratch, &redis, mock, instances).await;
        if let Err(e) = services.drop_scratch(&scratch).await {
            eprintln!(
                "      could not drop database/vhost {}: {e:#}",
                scratch.name
            );
        }
        let r = result?;
        eprintln!(
            "      {:.1} /s measured ({:+.2} %), {} still waiting at the end",
            r.measured,
            r.error_pct(opts.rate as f64),
            group(r.backlog_at_end)
        );
        runs.push(r);
    }
    eprintln!(
        "      PostgreSQL, RabbitMQ and Redis keep running (others use them); stop them with: bash scripts/test-services.sh stop"
    );
    report(opts, &runs);
    Ok(())
}

async fn measure(
    opts: &Opts,
    scratch: &Scratch,
    redis: &str,
    mock: &SmsMock,
    instances: usize,
) -> anyhow::Result<Run> {
    let rate = opts.rate as f64;
    let window = Duration::from_secs(opts.window);
    // Enough to keep the channel busy through warm-up and window, with half again to spare.
    let n = (rate * (WARM_UP + window).as_secs_f64() * 1.5) as u64 + 1000;
    let prefix = format!("clm-bench-{}:", Uuid::new_v4().simple());
    let policy = format!(
        "rate = {rate:.1}\nburst = {BURST}\nconcurrency = {CONCURRENCY}\ntimeout_ms = 10000"
    );
    let extra = format!(
        "\n[store]\nurl = \"{}\"\n\n[queue]\nurl = \"{}\"\n\n[coordination]\nurl = \"{redis}\"\nkey_prefix = \"{prefix}\"\n",
        scratch.pg_url, scratch.amqp_url
    );
    let mut hubs = Vec::new();
    for _ in 0..instances {
        hubs.push(HubProcess::start(mock, &policy, &extra).await?);
    }
    mock.reset();

    let conn = connect(&scratch.amqp_url, "throughput bench: rate-limit publisher").await?;
    let ch = conn.create_channel().await?;
    clm_hub::amqp::declare_topology(&ch).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let confirmed = Arc::new(AtomicU64::new(0));
    let publishing = tokio::spawn(publish_confirmed(
        ch,
        COMMUNICATIONS_EXCHANGE.to_owned(),
        "sms".to_owned(),
        Arc::new(bodies(n)),
        confirmed.clone(),
    ));

    let outcome = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while mock.accepted_count() == 0 {
            if Instant::now() > deadline {
                bail!(
                    "nothing reached the mock within 30 s; hub log:\n{}",
                    hubs[0].log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(WARM_UP).await;
        let (a0, t0) = (mock.accepted_count(), Instant::now());
        tokio::time::sleep(window).await;
        let (a1, t1) = (mock.accepted_count(), Instant::now());
        let published = confirmed.load(Ordering::Relaxed);
        if let Some(h) = hubs.iter().find(|h| h.exited().is_some()) {
            bail!("a hub exited during the run; log:\n{}", h.log_tail(30));
        }
        let elapsed = (t1 - t0).as_secs_f64();
        Ok(Run {
            instances,
            measured: (a1 - a0) as f64 / elapsed,
            window: elapsed,
            published,
            backlog_at_end: published.saturating_sub(a1),
            duplicates: mock.duplicates(),
        })
    }
    .await;
    publishing.abort();
    let _ = conn.close(200, "done".into()).await;
    futures_util::future::join_all(hubs.into_iter().map(HubProcess::stop)).await;
    outcome
}

fn report(opts: &Opts, runs: &[Run]) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let rate = opts.rate as f64;
    let mut cmd = format!(
        "cargo bench -p clm-hub --bench throughput -- --stack ratelimit --rate {} --window {}",
        opts.rate, opts.window
    );
    let overrides = hub_env_overrides();
    if !overrides.is_empty() {
        cmd = format!("{} {cmd}", overrides.join(" "));
    }
    println!();
    println!(
        "## Rate limit held: SMS channel at {} /s (burst {BURST}, concurrency {CONCURRENCY}), {cores} cores, PostgreSQL + RabbitMQ + Redis (scripts/test-services.sh), Kannel mock in-process",
        group(opts.rate)
    );
    println!();
    println!("| instances | configured rate | measured | error % |");
    println!("|---|---|---|---|");
    for r in runs {
        println!(
            "| {} | {} /s | {:.1} /s | {:+.2} % |",
            r.instances,
            group(opts.rate),
            r.measured,
            r.error_pct(rate)
        );
    }
    println!();
    println!("Reproduce: `{cmd}`");
    println!();
    println!("Details:");
    println!(
        "- measured: communications accepted at the SMS mock over the window ({} s requested), after a {:.0} s warm-up from the first acceptance; every instance on the same Redis `key_prefix`, a fresh one per row",
        opts.window,
        WARM_UP.as_secs_f64()
    );
    for r in runs {
        let saturated = if r.backlog_at_end > BURST * r.instances as u64 {
            "saturated"
        } else {
            "NOT saturated: the figure is a lower bound"
        };
        println!(
            "- {} instance(s): window {:.3} s; {} published (confirmed) by its end, {} of them still waiting ({saturated}); duplicates at the mock: {}",
            r.instances,
            r.window,
            group(r.published),
            group(r.backlog_at_end),
            r.duplicates
        );
    }
}
