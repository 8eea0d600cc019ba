//! The embedded stack: the hub on SQLite with HTTP intake (end to end, and the backlog).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clm_mocks::SmsMock;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::ceiling::Ceiling;
use crate::hub::HubProcess;
use crate::procfs::{
    busiest_threads, cpu_secs, dir_bytes, group, hub_env_overrides, machine_cpu, pct,
    proc_status_kb, thread_cpu,
};
use crate::{BATCH, CEILING_CONCURRENCY, Opts, POSTERS, RECIPIENT, TEXT};

// ---------------------------------------------------------------------------------------------
// Hub end to end

pub struct EndToEnd {
    n: u64,
    /// First POST → all POSTs answered 202.
    intake: Duration,
    /// First POST → the mock accepted N.
    sent: Duration,
    /// Sent at the mock when intake finished.
    sent_at_intake_end: u64,
    peak_mb: f64,
    rss_end_mb: f64,
    rss_idle_mb: f64,
    cpu_intake: CpuWindow,
    cpu_total: CpuWindow,
    /// Hub threads by CPU over the whole run: name, CPU seconds.
    threads: Vec<(String, f64)>,
    log_lines: usize,
}

impl EndToEnd {
    pub fn intake_rate(&self) -> f64 {
        self.n as f64 / self.intake.as_secs_f64()
    }
    pub fn sent_rate(&self) -> f64 {
        self.n as f64 / self.sent.as_secs_f64()
    }
}

#[derive(Clone, Copy)]
struct CpuSample {
    at: Instant,
    hub: f64,
    bench: f64,
    /// Whole machine (`/proc/stat`): busy and iowait seconds, summed over cores.
    busy: f64,
    iowait: f64,
}

impl CpuSample {
    fn take(hub_pid: u32) -> CpuSample {
        let machine = machine_cpu();
        CpuSample {
            at: Instant::now(),
            hub: cpu_secs(&hub_pid.to_string()),
            bench: cpu_secs("self"),
            busy: machine.0,
            iowait: machine.1,
        }
    }
    fn since(self, earlier: CpuSample) -> CpuWindow {
        CpuWindow {
            wall: (self.at - earlier.at).as_secs_f64(),
            hub: self.hub - earlier.hub,
            bench: self.bench - earlier.bench,
            other: (self.busy - earlier.busy)
                - (self.hub - earlier.hub)
                - (self.bench - earlier.bench),
            iowait: self.iowait - earlier.iowait,
        }
    }
}

struct CpuWindow {
    wall: f64,
    hub: f64,
    bench: f64,
    /// Busy CPU of every other process on the machine (other builds, …).
    other: f64,
    iowait: f64,
}

pub async fn hub_end_to_end(mock: &SmsMock, n: u64) -> anyhow::Result<EndToEnd> {
    let policy = "rate = 1000000.0\nburst = 100000\nconcurrency = 256\ntimeout_ms = 10000";
    let hub = HubProcess::start(mock, policy, "").await?;
    // Pre-serialized, so the posters cost the hub little CPU; `Bytes` clones are free.
    let bodies: Vec<bytes::Bytes> = (0..n.div_ceil(BATCH as u64))
        .map(|b| {
            let count = (n - b * BATCH as u64).min(BATCH as u64) as usize;
            bytes::Bytes::from(batch_json(count))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle_mb = proc_status_kb(hub.pid(), "VmRSS").unwrap_or(0) as f64 / 1024.0;
    mock.reset();

    let client = poster_client()?;
    let url = hub.url("/v1/communications");
    let bodies = Arc::new(bodies);
    let threads0 = thread_cpu(hub.pid());
    let cpu0 = CpuSample::take(hub.pid());
    let t0 = Instant::now();
    let posting = {
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..POSTERS)
            .map(|_| {
                let (client, url, next, bodies) =
                    (client.clone(), url.clone(), next.clone(), bodies.clone());
                tokio::spawn(async move {
                    let mut accepted = 0_u64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else {
                            return Ok::<u64, anyhow::Error>(accepted);
                        };
                        accepted += post_batch(&client, &url, body.clone().into()).await?;
                    }
                })
            })
            .collect();
        tokio::spawn(async move {
            let mut accepted = 0;
            for t in tasks {
                accepted += t.await??;
            }
            Ok::<(u64, Instant), anyhow::Error>((accepted, Instant::now()))
        })
    };

    // Poll the mock while the posters run; note when intake ended.
    let mut posting = Some(posting);
    let mut intake: Option<(Duration, CpuSample, u64)> = None;
    let mut last = (0_u64, Instant::now());
    let sent = loop {
        if let Some(p) = &posting
            && p.is_finished()
        {
            let (accepted, at) = posting.take().expect("posting").await??;
            if accepted != n {
                bail!("hub intake: {accepted} of {n} communications answered `accepted`");
            }
            intake = Some((at - t0, CpuSample::take(hub.pid()), mock.accepted_count()));
        }
        let count = mock.accepted_count();
        if count >= n && posting.is_none() {
            break t0.elapsed();
        }
        if count != last.0 {
            last = (count, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            bail!(
                "hub end to end: stalled at {count} of {n} sent for 30 s; hub log:\n{}",
                hub.log_tail(30)
            );
        }
        if let Some(status) = hub.exited() {
            bail!("the hub exited ({status}); log:\n{}", hub.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let cpu_end = CpuSample::take(hub.pid());
    let threads = busiest_threads(&threads0, &thread_cpu(hub.pid()));
    let (intake, cpu_intake_end, sent_at_intake_end) = intake.expect("intake finished");

    let peak_kb = proc_status_kb(hub.pid(), "VmHWM").unwrap_or(0);
    let rss_kb = proc_status_kb(hub.pid(), "VmRSS").unwrap_or(0);
    let log_lines = hub.log_lines();
    hub.stop().await;
    Ok(EndToEnd {
        n,
        intake,
        sent,
        sent_at_intake_end,
        peak_mb: peak_kb as f64 / 1024.0,
        rss_end_mb: rss_kb as f64 / 1024.0,
        rss_idle_mb,
        cpu_intake: cpu_intake_end.since(cpu0),
        cpu_total: cpu_end.since(cpu0),
        threads,
        log_lines,
    })
}

fn batch_json(count: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..count)
        .map(|_| {
            json!({
                "id": Uuid::new_v4().to_string(),
                "campaign_id": "bench",
                "customer_id": "c",
                "channel": "sms",
                "recipient": RECIPIENT,
                "content": {"text": TEXT},
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "communications": items })).expect("JSON")
}

fn poster_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?)
}

/// Posts one batch; the number of items answered `accepted`, or an error naming what was not.
async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    body: reqwest::Body,
) -> anyhow::Result<u64> {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .context("POST /v1/communications")?;
    let status = r.status();
    let bytes = r.bytes().await?;
    if status.as_u16() != 202 {
        bail!(
            "POST /v1/communications answered {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        );
    }
    let answer: Value = serde_json::from_slice(&bytes).context("answer is not JSON")?;
    let results = answer["results"]
        .as_array()
        .context("answer has no `results`")?;
    let mut accepted = 0;
    for r in results {
        if r["outcome"] == "accepted" {
            accepted += 1;
        } else {
            bail!("an item was not accepted: {r}");
        }
    }
    Ok(accepted)
}

// ---------------------------------------------------------------------------------------------
// Backlog

pub struct Backlog {
    n: u64,
    intake: Duration,
    rss_before_mb: f64,
    rss_after_mb: f64,
    peak_mb: f64,
    sent: u64,
    db_mb: f64,
}

pub async fn backlog(mock: &SmsMock, n: u64) -> anyhow::Result<Backlog> {
    let policy = "rate = 1.0\nburst = 1\nconcurrency = 1\ntimeout_ms = 10000";
    let hub = HubProcess::start(mock, policy, "").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kb = proc_status_kb(hub.pid(), "VmRSS").unwrap_or(0);
    mock.reset();

    let client = poster_client()?;
    let url = hub.url("/v1/communications");
    let batches = n.div_ceil(BATCH as u64);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..POSTERS)
        .map(|_| {
            let (client, url, next, done) =
                (client.clone(), url.clone(), next.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= batches {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let count = (n - b * BATCH as u64).min(BATCH as u64) as usize;
                    // Serialize off the async workers: it is the client's cost, not the hub's.
                    let body = tokio::task::spawn_blocking(move || batch_json(count)).await?;
                    let accepted = post_batch(&client, &url, body.into()).await?;
                    let total = done.fetch_add(accepted, Ordering::Relaxed) + accepted;
                    if total / 100_000 != (total - accepted) / 100_000 {
                        eprintln!("      … {} posted", group(total));
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let intake = t0.elapsed();
    let accepted = done.load(Ordering::Relaxed);
    if accepted != n {
        bail!("backlog intake: {accepted} of {n} answered `accepted`");
    }
    // Let the intake path settle (freed buffers, the WAL checkpoint) before reading RSS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_kb = proc_status_kb(hub.pid(), "VmRSS").unwrap_or(0);
    let peak_kb = proc_status_kb(hub.pid(), "VmHWM").unwrap_or(0);
    let sent = mock.accepted_count();
    let db_mb = dir_bytes(&hub.data_dir()) as f64 / 1_048_576.0;
    hub.stop().await;
    Ok(Backlog {
        n,
        intake,
        rss_before_mb: rss_before_kb as f64 / 1024.0,
        rss_after_mb: rss_after_kb as f64 / 1024.0,
        peak_mb: peak_kb as f64 / 1024.0,
        sent,
        db_mb,
    })
}

// ---------------------------------------------------------------------------------------------
// Report

pub fn report(opts: &Opts, c: &Ceiling, e: &EndToEnd, b: Option<&Backlog>) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mut cmd = format!(
        "cargo bench -p clm-hub --bench throughput -- --n {}",
        opts.n
    );
    if opts.backlog > 0 {
        cmd.push_str(&format!(" --backlog {}", opts.backlog));
    }
    println!();
    println!(
        "## Throughput: N = {} SMS, {cores} cores, SQLite (embedded store), Kannel mock in-process",
        group(e.n)
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| raw ceiling: reqwest → SMS mock, {CEILING_CONCURRENCY} concurrent | {} req/s |",
        group(c.rate as u64)
    );
    println!(
        "| hub end to end: intake → sent at the mock, durable in SQLite | {} comm/s |",
        group(e.sent_rate() as u64)
    );
    println!("| ratio hub / ceiling | {:.2}× |", e.sent_rate() / c.rate);
    println!(
        "| intake only: POST → 202, batches of {BATCH}, {POSTERS} posters | {} comm/s |",
        group(e.intake_rate() as u64)
    );
    println!("| hub peak memory (VmHWM) | {:.1} MB |", e.peak_mb);
    println!(
        "| hub RSS: idle → end of run | {:.1} MB → {:.1} MB |",
        e.rss_idle_mb, e.rss_end_mb
    );
    if let Some(b) = b {
        println!(
            "| hub RSS while {} wait (before → after intake) | {:.1} MB → {:.1} MB (peak {:.1} MB) |",
            group(b.n),
            b.rss_before_mb,
            b.rss_after_mb,
            b.peak_mb
        );
    }
    let overrides = hub_env_overrides();
    if !overrides.is_empty() {
        cmd = format!("{} {cmd}", overrides.join(" "));
    }
    println!();
    println!("Reproduce: `{cmd}`");
    println!();
    println!("Details:");
    println!(
        "- ceiling: {:.2} s wall, bench process (mock + client) CPU {:.2} s ({:.0}% of a core), other processes {:.2} s",
        c.wall,
        c.cpu,
        pct(c.cpu, c.wall),
        c.other
    );
    println!(
        "- hub: all POSTs answered after {:.2} s, {} already sent by then; all {} sent after {:.2} s",
        e.intake.as_secs_f64(),
        group(e.sent_at_intake_end),
        group(e.n),
        e.sent.as_secs_f64()
    );
    for (name, w) in [
        ("intake window", &e.cpu_intake),
        ("whole run", &e.cpu_total),
    ] {
        println!(
            "- CPU, {name} ({:.2} s wall × {cores} cores = {:.2} CPU-s): hub {:.2} s ({:.0}% of a core), bench process (mock + posters) {:.2} s ({:.0}%), other processes {:.2} s ({:.0}%), iowait {:.2} s",
            w.wall,
            w.wall * cores as f64,
            w.hub,
            pct(w.hub, w.wall),
            w.bench,
            pct(w.bench, w.wall),
            w.other.max(0.0),
            pct(w.other.max(0.0), w.wall),
            w.iowait
        );
    }
    let threads: Vec<String> = e
        .threads
        .iter()
        .map(|(name, cpu)| format!("{name} {cpu:.2} s ({:.0}%)", pct(*cpu, e.cpu_total.wall)))
        .collect();
    println!(
        "- hub threads by CPU, whole run (% of wall time): {}",
        threads.join(", ")
    );
    println!("- hub log: {} lines", e.log_lines);
    if let Some(b) = b {
        println!(
            "- backlog: {} posted in {:.1} s ({} comm/s), {} sent meanwhile, store on disk {:.0} MB",
            group(b.n),
            b.intake.as_secs_f64(),
            group((b.n as f64 / b.intake.as_secs_f64()) as u64),
            group(b.sent),
            b.db_mb
        );
    }
}
