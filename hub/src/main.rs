//! `clm-hub [--config FILE]`: loads the config, binds the listener and runs until SIGINT/SIGTERM.

use std::path::PathBuf;

// The hub allocates many small short-lived buffers across threads (rows, JSON, HTTP); glibc's
// malloc spent about a fifth of the hub's CPU on them in the throughput benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: clm-hub [--config FILE]

With no --config the hub runs its embedded default: SQLite under ./data, the in-process queue,
and the bundled mock channels (sandbox). Settings can be overridden by environment variables
named CLM_HUB__SECTION__KEY, e.g. CLM_HUB__SERVER__LISTEN=127.0.0.1:9090.";

fn parse_args() -> anyhow::Result<Option<PathBuf>> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => {
                config = Some(PathBuf::from(args.next().context("--config needs a file")?))
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--version" | "-V" => {
                println!("clm-hub {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let file = parse_args()?;
    // Loaded before logging starts: its `log.format` says how to log. A config that does not
    // load is reported on standard error by the error return.
    let config = clm_hub::Config::load(file.as_deref(), std::env::vars())?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLM_LOG")
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    match config.log.format {
        clm_hub::config::LogFormat::Text => {
            // Colours for a terminal only: a log file or a pipe gets plain text.
            use std::io::IsTerminal;
            tracing_subscriber::fmt()
                .with_ansi(std::io::stdout().is_terminal())
                .with_env_filter(filter)
                .init();
        }
        clm_hub::config::LogFormat::Json => {
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_env_filter(filter)
                .init();
        }
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("server.listen: cannot listen on {}", config.server.listen))?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        token.cancel();
    });
    clm_hub::run(config, listener, shutdown).await
}
