//! Throughput benchmark: how close the hub comes to the raw ceiling of its SMS gateway.
//!
//! ```text
//! cargo bench -p clm-hub --bench throughput                      # N = 100 000
//! cargo bench -p clm-hub --bench throughput -- --n 50000
//! cargo bench -p clm-hub --bench throughput -- --backlog 1000000 # also: memory while a million wait
//! ```
//!
//! 1. **Raw ceiling**: the SMS mock in-process, driven directly by a reqwest loop (Kannel `GET`,
//!    256 concurrent tasks sharing one client) → requests/s.
//! 2. **Hub end to end**: the release `clm-hub` binary as a separate process (SQLite in a temp
//!    dir, sandbox off) sending to the same mock; N communications posted in batches of 1000 by
//!    4 concurrent posters; timed from the first POST until the mock has accepted N →
//!    communications/s, plus intake-only rate, peak memory (VmHWM) and CPU per process.
//! 3. **Backlog** (`--backlog N`, off by default): a hub sending at 1 msg/s takes N
//!    communications; its RSS before and after intake shows whether waiting costs memory.
//!
//! Figures only, no assertions on timing: a Markdown table to paste into the README, the command
//! that reproduces it, and where the CPU went (hub, this process, the rest of the machine; the
//! hub's busiest threads), read from `/proc`. `CLM_HUB__…` variables in the environment reach
//! the hub and are listed in the reproduce line, e.g.
//! `CLM_HUB__CHANNELS__SMS__POLICY__CONCURRENCY=2000 cargo bench -p clm-hub --bench throughput`.
//!
//! Without `--bench` (as `cargo test` and nextest run bench targets) it does nothing and exits 0.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clm_mocks::{DlrConfig, SmsMock};
use serde_json::{Value, json};
use uuid::Uuid;

const BATCH: usize = 1000;
const POSTERS: usize = 4;
const CEILING_CONCURRENCY: usize = 256;
const TEXT: &str = "Hello from the benchmark";
const RECIPIENT: &str = "+79001234567";

const USAGE: &str = "usage: cargo bench -p clm-hub --bench throughput -- [--n N] [--backlog N]

  --n N         communications (and raw requests) per throughput run (default 100000)
  --backlog N   also post N communications to a hub sending at 1/s and report its memory
                before and after intake (default 0 = skip; try --backlog 1000000)";

struct Opts {
    n: u64,
    backlog: u64,
}

fn parse_args(args: &[String]) -> anyhow::Result<Opts> {
    let mut opts = Opts {
        n: 100_000,
        backlog: 0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (a.as_str(), None),
        };
        let mut value = |name: &str| -> anyhow::Result<u64> {
            let v = match &inline {
                Some(v) => v.clone(),
                None => it
                    .next()
                    .with_context(|| format!("{name} needs a number"))?
                    .clone(),
            };
            v.replace('_', "")
                .parse()
                .with_context(|| format!("{name}: `{v}` is not a number"))
        };
        match flag {
            "--bench" => {}
            "--n" | "-n" => opts.n = value("--n")?,
            "--backlog" => opts.backlog = value("--backlog")?,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    if opts.n == 0 {
        bail!("--n must be at least 1");
    }
    Ok(opts)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test` / nextest build and run bench targets too (nextest with `--list`): do nothing.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(opts)) {
        eprintln!("throughput bench failed: {e:#}");
        std::process::exit(1);
    }
}

async fn run(opts: Opts) -> anyhow::Result<()> {
    let n = opts.n;
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await?;
    mock.set_dlr(DlrConfig {
        enabled: false,
        ..Default::default()
    });

    // 1. Raw ceiling.
    eprintln!(
        "[1/3] raw ceiling: {} Kannel GETs straight at the SMS mock, {CEILING_CONCURRENCY} concurrent…",
        group(n)
    );
    let ceiling = ceiling(&mock, n).await?;
    eprintln!(
        "      {} req/s ({:.2} s, bench process CPU {:.2} s)",
        group(ceiling.rate as u64),
        ceiling.wall,
        ceiling.cpu
    );

    // 2. Hub end to end.
    eprintln!(
        "[2/3] hub end to end: {} communications through the clm-hub binary (SQLite)…",
        group(n)
    );
    let e2e = hub_end_to_end(&mock, n).await?;
    eprintln!(
        "      intake {} comm/s, sent {} comm/s",
        group(e2e.intake_rate() as u64),
        group(e2e.sent_rate() as u64)
    );

    // 3. Backlog (optional).
    let backlog = if opts.backlog > 0 {
        eprintln!(
            "[3/3] backlog: {} communications to a hub sending at 1/s…",
            group(opts.backlog)
        );
        Some(backlog(&mock, opts.backlog).await?)
    } else {
        eprintln!("[3/3] backlog: skipped (--backlog 1000000 to run it)");
        None
    };
    mock.shutdown().await;

    report(&opts, &ceiling, &e2e, backlog.as_ref());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Raw ceiling

struct Ceiling {
    rate: f64,
    wall: f64,
    /// CPU seconds of this process (mock + client) during the run.
    cpu: f64,
    /// CPU seconds of every other process on the machine meanwhile.
    other: f64,
}

async fn ceiling(mock: &SmsMock, n: u64) -> anyhow::Result<Ceiling> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CEILING_CONCURRENCY)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = reqwest::Url::parse_with_params(
        &mock.kannel_url(),
        &[("to", RECIPIENT), ("text", TEXT), ("from", "CLM")],
    )?;
    // Warm-up: open the connections.
    drive(&client, &url, (CEILING_CONCURRENCY * 8) as u64).await?;
    mock.reset();
    let (cpu0, busy0) = (cpu_secs("self"), machine_cpu().0);
    let t0 = Instant::now();
    drive(&client, &url, n).await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs("self") - cpu0;
    let other = (machine_cpu().0 - busy0 - cpu).max(0.0);
    let accepted = mock.accepted_count();
    if accepted != n {
        bail!("raw ceiling: the mock accepted {accepted} of {n} requests");
    }
    Ok(Ceiling {
        rate: n as f64 / wall,
        wall,
        cpu,
        other,
    })
}

async fn drive(client: &reqwest::Client, url: &reqwest::Url, n: u64) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(CEILING_CONCURRENCY);
    for _ in 0..CEILING_CONCURRENCY {
        let (client, url, next, failed) =
            (client.clone(), url.clone(), next.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                match client.get(url.clone()).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("raw ceiling: {failed} of {n} requests failed");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Hub end to end

struct EndToEnd {
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
    fn intake_rate(&self) -> f64 {
        self.n as f64 / self.intake.as_secs_f64()
    }
    fn sent_rate(&self) -> f64 {
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

async fn hub_end_to_end(mock: &SmsMock, n: u64) -> anyhow::Result<EndToEnd> {
    let policy = "rate = 1000000.0\nburst = 100000\nconcurrency = 256\ntimeout_ms = 10000";
    let hub = HubProcess::start(mock, policy).await?;
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
// 3. Backlog

struct Backlog {
    n: u64,
    intake: Duration,
    rss_before_mb: f64,
    rss_after_mb: f64,
    peak_mb: f64,
    sent: u64,
    db_mb: f64,
}

async fn backlog(mock: &SmsMock, n: u64) -> anyhow::Result<Backlog> {
    let policy = "rate = 1.0\nburst = 1\nconcurrency = 1\ntimeout_ms = 10000";
    let hub = HubProcess::start(mock, policy).await?;
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
// The hub as a child process

/// The `clm-hub` binary running on its own temp dir; killed on drop (also when the bench panics).
struct HubProcess {
    child: Child,
    dir: tempfile::TempDir,
    base: String,
}

impl HubProcess {
    async fn start(mock: &SmsMock, policy: &str) -> anyhow::Result<HubProcess> {
        let dir = tempfile::tempdir()?;
        let listen = free_port()?;
        let config = dir.path().join("hub.toml");
        std::fs::write(
            &config,
            format!(
                r#"sandbox = false
data_dir = {data:?}

[server]
listen = "{listen}"

[dispatcher]
claim_batch = 1000
poll_ms = 20

[channels.sms]
enabled = true

[channels.sms.policy]
{policy}

[channels.sms.gateway]
dialect = "kannel"
url = "{url}"
delivery_reports = false
"#,
                data = dir.path().join("data").display().to_string(),
                url = mock.kannel_url(),
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("hub.log"))?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clm-hub"));
        cmd.arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // `CLM_HUB__…` variables reach the hub (they override the file; the report lists them).
        let child = cmd.spawn().context("spawn clm-hub")?;
        let hub = HubProcess {
            child,
            dir,
            base: format!("http://{listen}"),
        };
        hub.wait_ready().await?;
        Ok(hub)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                bail!(
                    "the hub exited before it was ready ({status}); log:\n{}",
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the hub was not ready after 30 s; log:\n{}",
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The exit status, if it already exited. Takes `&self`: reads `/proc` rather than reaping.
    fn exited(&self) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
        (state == "Z" || state == "X").then(|| "exited".to_owned())
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("hub.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn log_lines(&self) -> usize {
        self.log().lines().count()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then up to 15 s for a graceful stop; SIGKILL after that.
    async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("      the hub did not stop within 15 s of SIGTERM; killing it");
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

// ---------------------------------------------------------------------------------------------
// /proc

/// A `/proc/<pid>/status` field in kB (`VmHWM`, `VmRSS`).
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// User + system CPU seconds of a process (`self` or a pid), all threads.
fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    // After the command name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) 12.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks()
}

/// The machine's busy and iowait CPU seconds since boot, summed over cores (`/proc/stat`).
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    // user nice system idle iowait irq softirq steal …
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy as f64 / clock_ticks(), get(4) as f64 / clock_ticks())
}

/// CPU seconds per thread of a process, keyed by thread id, with the thread's name.
fn thread_cpu(pid: u32) -> Vec<(u32, String, f64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let cpu = cpu_secs(&format!("{pid}/task/{tid}"));
            Some((tid, name.trim().to_owned(), cpu))
        })
        .collect()
}

/// The busiest threads between two samples, each on its own: name and CPU seconds.
fn busiest_threads(
    before: &[(u32, String, f64)],
    after: &[(u32, String, f64)],
) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = after
        .iter()
        .map(|(tid, name, cpu)| {
            let start = before
                .iter()
                .find(|(t, _, _)| t == tid)
                .map_or(0.0, |(_, _, c)| *c);
            (name.clone(), cpu - start)
        })
        .filter(|(_, cpu)| *cpu >= 0.01)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(8);
    v
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Report

fn report(opts: &Opts, c: &Ceiling, e: &EndToEnd, b: Option<&Backlog>) {
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

/// `CLM_HUB__…=…` variables in the environment, which the hub child inherits.
fn hub_env_overrides() -> Vec<String> {
    let mut v: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CLM_HUB__"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    v.sort();
    v
}

/// CPU use as a percentage of one core.
fn pct(cpu: f64, wall: f64) -> f64 {
    if wall > 0.0 { cpu / wall * 100.0 } else { 0.0 }
}

/// 1234567 → "1 234 567".
fn group(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}
