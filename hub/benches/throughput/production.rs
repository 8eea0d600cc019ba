//! The production stack: the hub binary on PostgreSQL + RabbitMQ, fed over AMQP.
//!
//! 1. **Services**: `scripts/test-services.sh start` with `CLM_TEST_SERVICES="postgres rabbitmq"`
//!    (reuses running ones, installs missing ones; never stopped here, others may use them), then
//!    a fresh database and a fresh vhost, dropped at the end unless `--keep`.
//! 2. **Ceiling B**: RabbitMQ alone in that vhost: N JSON communications published with publisher
//!    confirms (pipelined, at most 1000 unconfirmed) to a durable queue and consumed at the same
//!    time (prefetch 1000, one multiple-ack per 100) → messages/s from the first publish to the
//!    last delivery. Once on a quorum queue (what the hub's intake queue is), once on a classic
//!    durable queue for reference.
//! 3. **Hub**: the release `clm-hub` binary with `[store]` on the database and `[queue]` on the
//!    vhost; a queue of our own bound to `clm.events` with `status.sms.sent` before the first
//!    publish; N communications published to `clm.communications` (key `sms`, confirms,
//!    pipelined) → communications/s from the first publish until N `status.sms.sent` events were
//!    consumed; also when the mock had accepted N. Every second a sample of each stage (published,
//!    waiting in the queue, stored, sending, sent, outbox, at the mock, events), of the hub's RSS
//!    and of the CPU per process (hub, PostgreSQL, RabbitMQ, this process) shows which stage lags.
//!    The sampler's own PostgreSQL queries (a `GROUP BY status` over the table) are timed and
//!    reported: they cost PostgreSQL a few percent of a core.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clm_hub::amqp::{COMMUNICATIONS_EXCHANGE, COMMUNICATIONS_QUEUE, EVENTS_EXCHANGE};
use clm_mocks::SmsMock;
use lapin::Channel;
use lapin::options::{ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use sqlx::Connection as _;

use crate::broker::{
    BrokerCeiling, PREFETCH, STALL, WINDOW, bodies, broker_ceiling, connect, consume, consumer_on,
    publish_confirmed,
};
use crate::ceiling::Ceiling;
use crate::cpu::{Cpu, CpuShares, Procs};
use crate::hub::HubProcess;
use crate::procfs::{busiest_threads, group, hub_env_overrides, pct, proc_status_kb, thread_cpu};
use crate::services::{Scratch, Services};
use crate::{Opts, Steps};

/// The hub's `queue.prefetch`.
const HUB_PREFETCH: u16 = 2000;
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const EVENT_KEY: &str = "status.sms.sent";

// ---------------------------------------------------------------------------------------------
// The hub on PostgreSQL + RabbitMQ

/// One look at every stage, [`SAMPLE_EVERY`].
#[derive(Clone, Copy, Default)]
struct Sample {
    t: f64,
    confirmed: u64,
    /// Ready (not yet delivered) in `clm.hub.communications`.
    queued: u64,
    stored: u64,
    /// `received`, `scheduled`, `retry_wait`: stored, not claimed yet.
    waiting: u64,
    sending: u64,
    sent: u64,
    /// Events written to the outbox and not yet published (`received` and `sent` events).
    outbox: u64,
    mock: u64,
    events: u64,
    hub_rss_mb: f64,
    /// CPU since the previous sample.
    cpu: CpuShares,
}

struct HubRun {
    n: u64,
    /// First publish → all N confirmed by RabbitMQ.
    confirmed: Duration,
    /// First publish → the mock accepted N.
    at_mock: Duration,
    /// First publish → N `status.sms.sent` consumed.
    events: Duration,
    peak_mb: f64,
    rss_idle_mb: f64,
    rss_end_mb: f64,
    cpu: CpuShares,
    threads: Vec<(String, f64)>,
    timeline: Vec<Sample>,
    /// Time the sampler's PostgreSQL queries took, summed.
    sampler_pg: Duration,
    /// Of the RSS at the end: anonymous memory, of it in transparent huge pages (MB).
    anon_end_mb: f64,
    anon_huge_end_mb: f64,
    duplicates: u64,
    log_lines: usize,
}

impl HubRun {
    fn rate(&self) -> f64 {
        self.n as f64 / self.events.as_secs_f64()
    }
    fn mock_rate(&self) -> f64 {
        self.n as f64 / self.at_mock.as_secs_f64()
    }
    /// The first sample with every communication stored (to within [`SAMPLE_EVERY`]).
    fn stored(&self) -> Option<f64> {
        self.timeline
            .iter()
            .find(|s| s.stored >= self.n)
            .map(|s| s.t)
    }
}

/// Counters the run updates and the sampler reads.
#[derive(Default)]
struct Progress {
    confirmed: AtomicU64,
    events: AtomicU64,
    /// Accepted at the mock.
    mock: AtomicU64,
}

async fn hub_run(
    scratch: &Scratch,
    mock: &SmsMock,
    bodies: &Arc<Vec<Vec<u8>>>,
    procs: Procs,
) -> anyhow::Result<HubRun> {
    let n = bodies.len() as u64;
    let policy = "rate = 1000000.0\nburst = 100000\nconcurrency = 256\ntimeout_ms = 10000";
    let extra = format!(
        "\n[store]\nurl = \"{}\"\n\n[queue]\nurl = \"{}\"\nprefetch = {HUB_PREFETCH}\n",
        scratch.pg_url, scratch.amqp_url
    );
    // Ready means: store reachable and intake consuming (the topology is declared).
    let hub = HubProcess::start(mock, policy, &extra).await?;
    let procs = Procs {
        hub: Some(hub.pid()),
        ..procs
    };

    // Our tap on clm.events, bound before the first publish.
    let tap_conn = connect(&scratch.amqp_url, "throughput bench: event tap").await?;
    let tch = tap_conn.create_channel().await?;
    clm_hub::amqp::declare_topology(&tch).await?;
    let tap = tch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    tch.queue_bind(
        tap.name().clone(),
        EVENTS_EXCHANGE.into(),
        EVENT_KEY.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let events = consumer_on(&tch, tap.name().as_str(), "throughput-bench-tap").await?;
    let pub_conn = connect(&scratch.amqp_url, "throughput bench: publisher").await?;
    let pch = pub_conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let sch = tap_conn.create_channel().await?;
    let pg = sqlx::PgConnection::connect(&scratch.pg_url).await?;

    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle_mb = proc_status_kb(hub.pid(), "VmRSS").unwrap_or(0) as f64 / 1024.0;
    mock.reset();

    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let threads0 = thread_cpu(hub.pid());
    let cpu0 = Cpu::take(&procs);
    let t0 = Instant::now();
    let sampler = tokio::spawn(sample(
        t0,
        cpu0,
        procs,
        pg,
        sch,
        progress.clone(),
        stop.clone(),
    ));
    let consuming = {
        let seen = Arc::new(AtomicU64::new(0));
        let progress = progress.clone();
        let c = tokio::spawn(consume(events, n, seen.clone()));
        // Mirror the tap's count into `progress` for the sampler and the stall check.
        tokio::spawn(async move {
            while !c.is_finished() {
                progress
                    .events
                    .store(seen.load(Ordering::Relaxed), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            progress
                .events
                .store(seen.load(Ordering::Relaxed), Ordering::Relaxed);
            c.await?
        })
    };
    let publishing = {
        let confirmed = Arc::new(AtomicU64::new(0));
        let progress = progress.clone();
        let p = tokio::spawn(publish_confirmed(
            pch.clone(),
            COMMUNICATIONS_EXCHANGE.to_owned(),
            "sms".to_owned(),
            bodies.clone(),
            confirmed.clone(),
        ));
        tokio::spawn(async move {
            while !p.is_finished() {
                progress
                    .confirmed
                    .store(confirmed.load(Ordering::Relaxed), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            progress
                .confirmed
                .store(confirmed.load(Ordering::Relaxed), Ordering::Relaxed);
            p.await?
        })
    };

    let mut at_mock = None;
    let mut last = (0_u64, Instant::now());
    let outcome: anyhow::Result<()> = loop {
        let sent = mock.accepted_count();
        progress.mock.store(sent, Ordering::Relaxed);
        if at_mock.is_none() && sent >= n {
            at_mock = Some(t0.elapsed());
        }
        if consuming.is_finished() && publishing.is_finished() && at_mock.is_some() {
            break Ok(());
        }
        let p = sent
            + progress.confirmed.load(Ordering::Relaxed)
            + progress.events.load(Ordering::Relaxed);
        if p != last.0 {
            last = (p, Instant::now());
        } else if last.1.elapsed() > STALL {
            break Err(anyhow::anyhow!(
                "production hub: stalled for 30 s at {} confirmed, {sent} at the mock, {} events of {n}; hub log:\n{}",
                progress.confirmed.load(Ordering::Relaxed),
                progress.events.load(Ordering::Relaxed),
                hub.log_tail(30)
            ));
        }
        if let Some(status) = hub.exited() {
            break Err(anyhow::anyhow!(
                "the hub exited ({status}); log:\n{}",
                hub.log_tail(30)
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let cpu_end = Cpu::take(&procs);
    let threads = busiest_threads(&threads0, &thread_cpu(hub.pid()));
    stop.store(true, Ordering::Relaxed);
    let (timeline, sampler_pg) = sampler.await.unwrap_or_default();
    if let Err(e) = outcome {
        consuming.abort();
        publishing.abort();
        if let Some(s) = timeline.last() {
            eprintln!("      last sample: {}", timeline_row(s));
        }
        return Err(e);
    }
    let events_done = consuming.await??;
    let all_confirmed = publishing.await??;

    let peak_kb = proc_status_kb(hub.pid(), "VmHWM").unwrap_or(0);
    let rss_kb = proc_status_kb(hub.pid(), "VmRSS").unwrap_or(0);
    let rollup = |field: &str| smaps_rollup_kb(hub.pid(), field).unwrap_or(0) as f64 / 1024.0;
    let (anon_end_mb, anon_huge_end_mb) = (rollup("Anonymous"), rollup("AnonHugePages"));
    let log_lines = hub.log_lines();
    let duplicates = mock.duplicates();
    hub.stop().await;
    let _ = pub_conn.close(200, "done".into()).await;
    let _ = tap_conn.close(200, "done".into()).await;
    Ok(HubRun {
        n,
        confirmed: all_confirmed - t0,
        at_mock: at_mock.expect("the mock accepted N"),
        events: events_done - t0,
        peak_mb: peak_kb as f64 / 1024.0,
        rss_idle_mb,
        rss_end_mb: rss_kb as f64 / 1024.0,
        cpu: cpu_end.since(&cpu0),
        threads,
        timeline,
        sampler_pg,
        anon_end_mb,
        anon_huge_end_mb,
        duplicates,
        log_lines,
    })
}

/// A field of `/proc/<pid>/smaps_rollup` in kB (`Anonymous`, `AnonHugePages`).
fn smaps_rollup_kb(pid: u32, field: &str) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Samples every stage until `stop`; errors leave a field at its previous value. Also returns
/// how long its PostgreSQL queries took.
#[allow(clippy::too_many_arguments)]
async fn sample(
    t0: Instant,
    cpu0: Cpu,
    procs: Procs,
    mut pg: sqlx::PgConnection,
    ch: Channel,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> (Vec<Sample>, Duration) {
    let mut out: Vec<Sample> = Vec::new();
    let mut pg_time = Duration::ZERO;
    let mut prev_cpu = cpu0;
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + SAMPLE_EVERY, SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let mut s = out.last().copied().unwrap_or_default();
        // Counters first, then the slower queries.
        s.t = t0.elapsed().as_secs_f64();
        s.confirmed = progress.confirmed.load(Ordering::Relaxed);
        s.mock = progress.mock.load(Ordering::Relaxed);
        s.events = progress.events.load(Ordering::Relaxed);
        let cpu = Cpu::take(&procs);
        s.cpu = cpu.since(&prev_cpu);
        prev_cpu = cpu;
        s.hub_rss_mb = procs
            .hub
            .and_then(|pid| proc_status_kb(pid, "VmRSS"))
            .unwrap_or(0) as f64
            / 1024.0;
        if let Ok(q) = ch
            .queue_declare(
                COMMUNICATIONS_QUEUE.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
        {
            s.queued = u64::from(q.message_count());
        }
        let q0 = Instant::now();
        // Statuses: one pass over the table (a seq scan, the sampler's main cost). The outbox:
        // rows are published and deleted in `seq` order, so what waits is the last `seq`
        // handed out minus the oldest left (two index look-ups instead of a count).
        let statuses = sqlx::query_as::<_, (String, i64)>(
            "SELECT status, count(*) FROM communications GROUP BY status",
        )
        .fetch_all(&mut pg)
        .await;
        let outbox = sqlx::query_as::<_, (i64, bool, Option<i64>)>(
            "SELECT last_value, is_called, (SELECT min(seq) FROM outbox) FROM outbox_seq_seq",
        )
        .fetch_one(&mut pg)
        .await;
        pg_time += q0.elapsed();
        if let Ok(rows) = statuses {
            let get = |names: &[&str]| -> u64 {
                rows.iter()
                    .filter(|(st, _)| names.contains(&st.as_str()))
                    .map(|(_, c)| *c as u64)
                    .sum()
            };
            s.stored = rows.iter().map(|(_, c)| *c as u64).sum();
            s.waiting = get(&["received", "scheduled", "retry_wait"]);
            s.sending = get(&["sending"]);
            s.sent = get(&["sent", "delivered"]);
        }
        if let Ok((last, called, oldest)) = outbox {
            let written = if called { last } else { 0 };
            s.outbox = oldest.map_or(0, |o| (written - o + 1).max(0) as u64);
        }
        out.push(s);
    }
    pg.close().await.ok();
    (out, pg_time)
}

// ---------------------------------------------------------------------------------------------
// The phase and its report

pub async fn run(
    opts: &Opts,
    services: &Services,
    mock: &SmsMock,
    ceiling_a: &Ceiling,
    steps: &mut Steps,
) -> anyhow::Result<()> {
    clm_connectors::install_crypto_provider();
    let n = opts.n;
    let scratch = services.scratch().await?;
    let (pg, rabbit) = services.pids();
    let procs = Procs {
        hub: None,
        pg,
        rabbit,
    };
    let bodies = Arc::new(bodies(n));
    let body_bytes = bodies.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;

    let measured = async {
        steps.next(&format!(
            "ceiling B: RabbitMQ alone, {} × {body_bytes:.0}-byte JSON published (confirms) and consumed (vhost {})…",
            group(n),
            scratch.name
        ));
        let mut ceilings = Vec::new();
        for quorum in [true, false] {
            let b = broker_ceiling(&scratch.amqp_url, &bodies, quorum, &procs).await?;
            eprintln!(
                "      {} queue: {} msg/s ({:.2} s; all confirmed after {:.2} s)",
                b.kind,
                group(b.rate as u64),
                b.wall,
                b.confirmed
            );
            ceilings.push(b);
        }
        steps.next(&format!(
            "hub on PostgreSQL + RabbitMQ: {} communications published to {COMMUNICATIONS_EXCHANGE} until {EVENT_KEY} on {EVENTS_EXCHANGE}…",
            group(n)
        ));
        let hub = hub_run(&scratch, mock, &bodies, procs).await?;
        eprintln!(
            "      {} comm/s to {EVENT_KEY} ({:.2} s), mock had N after {:.2} s",
            group(hub.rate() as u64),
            hub.events.as_secs_f64(),
            hub.at_mock.as_secs_f64()
        );
        Ok::<_, anyhow::Error>((ceilings, hub))
    }
    .await;

    if opts.keep {
        eprintln!(
            "      kept database and vhost {} ({}, {})",
            scratch.name, scratch.pg_url, scratch.amqp_url
        );
    } else if let Err(e) = services.drop_scratch(&scratch).await {
        eprintln!(
            "      could not drop database/vhost {}: {e:#}",
            scratch.name
        );
    }
    eprintln!(
        "      PostgreSQL and RabbitMQ keep running (others use them); stop them with: bash scripts/test-services.sh stop"
    );
    let (ceilings, hub) = measured?;
    report(opts, ceiling_a, &ceilings, &hub, body_bytes, &procs);
    Ok(())
}

fn timeline_row(s: &Sample) -> String {
    let w = s.cpu.wall;
    format!(
        "| {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} / {:.0} / {:.0} / {:.0} / {:.0} |",
        s.t,
        group(s.confirmed),
        group(s.queued),
        group(s.stored),
        group(s.waiting),
        group(s.sending),
        group(s.sent),
        group(s.outbox),
        group(s.mock),
        group(s.events),
        s.hub_rss_mb,
        pct(s.cpu.hub, w),
        pct(s.cpu.pg, w),
        pct(s.cpu.rabbit, w),
        pct(s.cpu.bench, w),
        pct(s.cpu.other, w),
    )
}

fn report(
    opts: &Opts,
    a: &Ceiling,
    ceilings: &[BrokerCeiling],
    h: &HubRun,
    body_bytes: f64,
    procs: &Procs,
) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let b = &ceilings[0];
    let mut cmd = format!(
        "cargo bench -p clm-hub --bench throughput -- --stack production --n {}",
        opts.n
    );
    let overrides = hub_env_overrides();
    if !overrides.is_empty() {
        cmd = format!("{} {cmd}", overrides.join(" "));
    }
    let rate = h.rate();
    println!();
    println!(
        "## Throughput on the production stack: N = {} SMS, {cores} cores, PostgreSQL + RabbitMQ (scripts/test-services.sh), Kannel mock in-process",
        group(h.n)
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| ceiling A: reqwest → SMS mock, {} concurrent | {} req/s |",
        crate::CEILING_CONCURRENCY,
        group(a.rate as u64)
    );
    println!(
        "| ceiling B: RabbitMQ alone, publish (confirms, ≤ {WINDOW} unconfirmed) → consume (prefetch {PREFETCH}, multiple acks), {} queue, {body_bytes:.0}-byte JSON | {} msg/s |",
        b.kind,
        group(b.rate as u64)
    );
    for c in &ceilings[1..] {
        println!(
            "| ceiling B on a {} durable queue (reference) | {} msg/s |",
            c.kind,
            group(c.rate as u64)
        );
    }
    println!(
        "| hub end to end: AMQP publish → `{EVENT_KEY}` consumed from `{EVENTS_EXCHANGE}`, durable in PostgreSQL | **{} comm/s** |",
        group(rate as u64)
    );
    println!("| ratio hub / ceiling A | {:.2}× |", rate / a.rate);
    println!(
        "| ratio hub / ceiling B ({}) | {:.2}× |",
        b.kind,
        rate / b.rate
    );
    println!(
        "| AMQP publish → sent at the mock | {} comm/s |",
        group(h.mock_rate() as u64)
    );
    println!(
        "| publishing, confirmed by RabbitMQ while the hub consumes | {} msg/s |",
        group((h.n as f64 / h.confirmed.as_secs_f64()) as u64)
    );
    println!("| hub peak memory (VmHWM) | {:.1} MB |", h.peak_mb);
    println!(
        "| hub RSS: idle → end of run | {:.1} MB → {:.1} MB |",
        h.rss_idle_mb, h.rss_end_mb
    );
    println!(
        "| of it at the end: anonymous, in transparent huge pages | {:.1} MB, {:.1} MB |",
        h.anon_end_mb, h.anon_huge_end_mb
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "| target ≥ 5 000 comm/s, hub ≤ 100 MB | {} / {} |",
        verdict(rate >= 5000.0),
        verdict(h.peak_mb <= 100.0)
    );
    println!();
    println!("Reproduce: `{cmd}`");
    println!();
    println!("Details:");
    println!(
        "- services: PostgreSQL with `fsync = off`, `synchronous_commit = off` (test settings of scripts/test-services.sh), RabbitMQ single node; CPU of PostgreSQL and RabbitMQ counts their whole process trees{}, including work for other clients (tests running meanwhile)",
        match (procs.pg, procs.rabbit) {
            (Some(_), Some(_)) => "",
            _ => " (a pid was not found: that column reads 0)",
        }
    );
    println!(
        "- ceiling A: {:.2} s wall, bench process (mock + client) CPU {:.2} s ({:.0}% of a core), other processes {:.2} s",
        a.wall,
        a.cpu,
        pct(a.cpu, a.wall),
        a.other
    );
    for c in ceilings {
        println!(
            "- ceiling B, {} queue: last delivery after {:.2} s, all confirmed after {:.2} s; CPU {}",
            c.kind,
            c.wall,
            c.confirmed,
            c.cpu.describe(cores)
        );
    }
    let stored = h
        .stored()
        .map_or_else(|| "n/a".to_owned(), |t| format!("~{t:.1} s"));
    println!(
        "- hub: all published and confirmed after {:.2} s; all stored after {stored} (sampled every {:.1} s); all sent at the mock after {:.2} s; all {EVENT_KEY} consumed after {:.2} s; duplicates at the mock: {}",
        h.confirmed.as_secs_f64(),
        SAMPLE_EVERY.as_secs_f64(),
        h.at_mock.as_secs_f64(),
        h.events.as_secs_f64(),
        h.duplicates
    );
    println!("- CPU, hub run: {}", h.cpu.describe(cores));
    let threads: Vec<String> = h
        .threads
        .iter()
        .map(|(name, cpu)| format!("{name} {cpu:.2} s ({:.0}%)", pct(*cpu, h.cpu.wall)))
        .collect();
    println!(
        "- hub threads by CPU, whole run (% of wall time): {}",
        threads.join(", ")
    );
    println!(
        "- the sampler's PostgreSQL queries took {:.2} s in all ({:.1}% of the run): PostgreSQL CPU above includes them",
        h.sampler_pg.as_secs_f64(),
        pct(h.sampler_pg.as_secs_f64(), h.events.as_secs_f64())
    );
    println!("- hub log: {} lines", h.log_lines);
    println!();
    println!(
        "Timeline of the hub run (stored/waiting/sending/sent from PostgreSQL, outbox = events written, not yet published; queued = ready in `{COMMUNICATIONS_QUEUE}`; CPU in % of a core since the previous row):"
    );
    println!();
    println!(
        "| t s | published | queued | stored | waiting | sending | sent | outbox | at mock | events | hub RSS MB | CPU hub / pg / rabbit / bench / other |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    // At most ~40 rows: every k-th sample, with the CPU summed over the skipped ones.
    let k = h.timeline.len().div_ceil(40).max(1);
    for chunk in h.timeline.chunks(k) {
        let mut s = *chunk.last().expect("a chunk");
        s.cpu = chunk.iter().fold(CpuShares::default(), |mut acc, x| {
            acc.wall += x.cpu.wall;
            acc.hub += x.cpu.hub;
            acc.pg += x.cpu.pg;
            acc.rabbit += x.cpu.rabbit;
            acc.bench += x.cpu.bench;
            acc.other += x.cpu.other;
            acc.iowait += x.cpu.iowait;
            acc
        });
        println!("{}", timeline_row(&s));
    }
}
