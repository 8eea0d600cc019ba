//! Throughput benchmark: how close the hub comes to the raw ceilings of what it stands on.
//!
//! ```text
//! cargo bench -p clm-hub --bench throughput                      # N = 100 000, embedded stack
//! cargo bench -p clm-hub --bench throughput -- --n 50000
//! cargo bench -p clm-hub --bench throughput -- --backlog 1000000 # also: memory while a million wait
//! cargo bench -p clm-hub --bench throughput -- --stack production --n 50000  # PostgreSQL + RabbitMQ
//! cargo bench -p clm-hub --bench throughput -- --stack ratelimit # rate held by 1 and 3 hubs
//! cargo bench -p clm-hub --bench throughput -- --stack all       # all three, one mock, one ceiling A
//! ```
//!
//! Embedded stack (`--stack embedded`, the default):
//!
//! 1. **Raw ceiling** (ceiling A): the SMS mock in-process, driven directly by a reqwest loop
//!    (Kannel `GET`, 256 concurrent tasks sharing one client) → requests/s.
//! 2. **Hub end to end**: the release `clm-hub` binary as a separate process (SQLite in a temp
//!    dir, sandbox off) sending to the same mock; N communications posted in batches of 1000 by
//!    4 concurrent posters; timed from the first POST until the mock has accepted N →
//!    communications/s, plus intake-only rate, peak memory (VmHWM) and CPU per process.
//! 3. **Backlog** (`--backlog N`, off by default): a hub sending at 1 msg/s takes N
//!    communications; its RSS before and after intake shows whether waiting costs memory.
//!
//! Production stack (`--stack production`), see [`production`]: PostgreSQL and RabbitMQ from
//! `scripts/test-services.sh` (started when not running, never stopped), a fresh database and
//! vhost; ceiling A as above, ceiling B (RabbitMQ publish → consume alone), then the hub binary
//! on both: AMQP publish → `status.sms.sent` seen on `clm.events`.
//!
//! Rate-limit phase (`--stack ratelimit`), see [`ratelimit`]: PostgreSQL, RabbitMQ and Redis from
//! the script; 1, then 3 hub processes sharing one Redis limit of `--rate R` on the SMS channel,
//! saturated over AMQP; the rate at the mock over `--window W` s → error against R in %.
//!
//! Figures only, no assertions on timing: a Markdown table to paste into the README, the command
//! that reproduces it, and where the CPU went (hub, this process, the rest of the machine; the
//! hub's busiest threads), read from `/proc`. `CLM_HUB__…` variables in the environment reach
//! the hub and are listed in the reproduce line, e.g.
//! `CLM_HUB__CHANNELS__SMS__POLICY__CONCURRENCY=2000 cargo bench -p clm-hub --bench throughput`.
//!
//! Without `--bench` (as `cargo test` and nextest run bench targets) it does nothing and exits 0.

mod broker;
mod ceiling;
mod cpu;
mod embedded;
mod hub;
mod procfs;
mod production;
mod ratelimit;
mod services;

use anyhow::{Context, bail};
use clm_mocks::{DlrConfig, SmsMock};

use crate::procfs::group;

const BATCH: usize = 1000;
const POSTERS: usize = 4;
const CEILING_CONCURRENCY: usize = 256;
const TEXT: &str = "Hello from the benchmark";
const RECIPIENT: &str = "+79001234567";

const USAGE: &str =
    "usage: cargo bench -p clm-hub --bench throughput -- [--stack S] [--n N] [--backlog N] [--keep]
                                                   [--rate R] [--window W]

  --stack S     embedded (default): the hub on SQLite, HTTP intake
                production: the hub on PostgreSQL + RabbitMQ (scripts/test-services.sh),
                  AMQP publish → status event on clm.events, beside RabbitMQ alone
                ratelimit: 1 and 3 hubs sharing one Redis rate limit (PostgreSQL + RabbitMQ +
                  Redis), the rate measured at the mock against the configured one
                all: all three, in one run
  --n N         communications (and raw requests) per throughput run (default 100000)
  --backlog N   embedded: also post N communications to a hub sending at 1/s and report its
                memory before and after intake (default 0 = skip; try --backlog 1000000)
  --keep        production: keep the benchmark's database and vhost (default: dropped)
  --rate R      ratelimit: the SMS channel's configured rate, per second (default 1000)
  --window W    ratelimit: seconds measured, after a 1 s warm-up (default 10)";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stack {
    Embedded,
    Production,
    Ratelimit,
    All,
}

struct Opts {
    n: u64,
    backlog: u64,
    stack: Stack,
    keep: bool,
    rate: u64,
    window: u64,
}

impl Opts {
    fn embedded(&self) -> bool {
        matches!(self.stack, Stack::Embedded | Stack::All)
    }
    fn production(&self) -> bool {
        matches!(self.stack, Stack::Production | Stack::All)
    }
    fn ratelimit(&self) -> bool {
        matches!(self.stack, Stack::Ratelimit | Stack::All)
    }
    /// Ceiling A is a reference for the throughput phases only.
    fn ceiling(&self) -> bool {
        self.embedded() || self.production()
    }
}

fn parse_args(args: &[String]) -> anyhow::Result<Opts> {
    let mut opts = Opts {
        n: 100_000,
        backlog: 0,
        stack: Stack::Embedded,
        keep: false,
        rate: 1000,
        window: 10,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (a.as_str(), None),
        };
        let mut text = |name: &str| -> anyhow::Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => Ok(it
                    .next()
                    .with_context(|| format!("{name} needs a value"))?
                    .clone()),
            }
        };
        let number = |name: &str, v: String| -> anyhow::Result<u64> {
            v.replace('_', "")
                .parse()
                .with_context(|| format!("{name}: `{v}` is not a number"))
        };
        match flag {
            "--bench" => {}
            "--n" | "-n" => opts.n = number("--n", text("--n")?)?,
            "--backlog" => opts.backlog = number("--backlog", text("--backlog")?)?,
            "--stack" => {
                opts.stack = match text("--stack")?.as_str() {
                    "embedded" => Stack::Embedded,
                    "production" => Stack::Production,
                    "ratelimit" => Stack::Ratelimit,
                    "all" => Stack::All,
                    other => bail!(
                        "--stack: `{other}` is not one of embedded, production, ratelimit, all\n\n{USAGE}"
                    ),
                }
            }
            "--keep" => opts.keep = true,
            "--rate" => opts.rate = number("--rate", text("--rate")?)?,
            "--window" => opts.window = number("--window", text("--window")?)?,
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
    if opts.rate == 0 || opts.window == 0 {
        bail!("--rate and --window must be at least 1");
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

/// Numbered progress lines on stderr: `[2/4] …`.
pub struct Steps {
    at: usize,
    total: usize,
}

impl Steps {
    pub fn next(&mut self, what: &str) {
        self.at += 1;
        eprintln!("[{}/{}] {what}", self.at, self.total);
    }
}

async fn run(opts: Opts) -> anyhow::Result<()> {
    let mut steps = Steps {
        at: 0,
        // Ceiling A; embedded: hub, backlog; services; production: ceiling B, hub; ratelimit:
        // 1 and 3 instances.
        total: usize::from(opts.ceiling())
            + if opts.embedded() { 2 } else { 0 }
            + usize::from(opts.production() || opts.ratelimit())
            + if opts.production() { 2 } else { 0 }
            + if opts.ratelimit() { 2 } else { 0 },
    };
    // Services first: a missing one should fail the run before minutes of measuring.
    let services = if opts.ratelimit() {
        steps.next("services: PostgreSQL, RabbitMQ and Redis (scripts/test-services.sh start)…");
        Some(services::Services::start("postgres rabbitmq redis")?)
    } else if opts.production() {
        steps.next("services: PostgreSQL and RabbitMQ (scripts/test-services.sh start)…");
        Some(services::Services::start("postgres rabbitmq")?)
    } else {
        None
    };

    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await?;
    mock.set_dlr(DlrConfig {
        enabled: false,
        ..Default::default()
    });

    let result = phases(&opts, services.as_ref(), &mock, &mut steps).await;
    mock.shutdown().await;
    result
}

async fn phases(
    opts: &Opts,
    services: Option<&services::Services>,
    mock: &SmsMock,
    steps: &mut Steps,
) -> anyhow::Result<()> {
    let n = opts.n;
    // Ceiling A: the mock driven directly.
    let ceiling = if opts.ceiling() {
        steps.next(&format!(
            "raw ceiling: {} Kannel GETs straight at the SMS mock, {CEILING_CONCURRENCY} concurrent…",
            group(n)
        ));
        let ceiling = ceiling::ceiling(mock, n).await?;
        eprintln!(
            "      {} req/s ({:.2} s, bench process CPU {:.2} s)",
            group(ceiling.rate as u64),
            ceiling.wall,
            ceiling.cpu
        );
        Some(ceiling)
    } else {
        None
    };

    if let (true, Some(ceiling)) = (opts.embedded(), &ceiling) {
        steps.next(&format!(
            "hub end to end: {} communications through the clm-hub binary (SQLite)…",
            group(n)
        ));
        let e2e = embedded::hub_end_to_end(mock, n).await?;
        eprintln!(
            "      intake {} comm/s, sent {} comm/s",
            group(e2e.intake_rate() as u64),
            group(e2e.sent_rate() as u64)
        );
        let backlog = if opts.backlog > 0 {
            steps.next(&format!(
                "backlog: {} communications to a hub sending at 1/s…",
                group(opts.backlog)
            ));
            Some(embedded::backlog(mock, opts.backlog).await?)
        } else {
            steps.next("backlog: skipped (--backlog 1000000 to run it)");
            None
        };
        embedded::report(opts, ceiling, &e2e, backlog.as_ref());
    }

    if let (true, Some(services), Some(ceiling)) = (opts.production(), services, &ceiling) {
        production::run(opts, services, mock, ceiling, steps).await?;
    }
    if let (true, Some(services)) = (opts.ratelimit(), services) {
        ratelimit::run(opts, services, mock, steps).await?;
    }
    Ok(())
}
