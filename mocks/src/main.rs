//! `clm-mocks`: runs the bundled mock channels standalone, for QA and docker-compose.
//!
//! ```text
//! clm-mocks [--listen 127.0.0.1:9100] [--sms-username U --sms-password P]
//! ```
//! `CLM_MOCKS_LISTEN` sets the address when `--listen` is not given.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use clm_mocks::{Credentials, SmsMock, SmsMockConfig};
use tracing_subscriber::EnvFilter;

const DEFAULT_LISTEN: &str = "127.0.0.1:9100";
const USAGE: &str = "usage: clm-mocks [--listen ADDR] [--sms-username U --sms-password P]
  --listen ADDR        address to serve on (default 127.0.0.1:9100, env CLM_MOCKS_LISTEN)
  --sms-username U     Kannel username the SMS mock requires (with --sms-password)
  --sms-password P     Kannel password the SMS mock requires";

#[derive(Debug, PartialEq)]
struct Args {
    listen: SocketAddr,
    sms_credentials: Option<Credentials>,
}

/// `Ok(None)` when help was asked for.
fn parse_args(
    mut args: impl Iterator<Item = String>,
    env_listen: Option<String>,
) -> anyhow::Result<Option<Args>> {
    let mut listen = env_listen;
    let (mut username, mut password) = (None, None);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => listen = Some(value("--listen")?),
            "--sms-username" => username = Some(value("--sms-username")?),
            "--sms-password" => password = Some(value("--sms-password")?),
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let listen = listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen
        .parse()
        .with_context(|| format!("--listen: {listen} is not an address like {DEFAULT_LISTEN}"))?;
    let sms_credentials = match (username, password) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        (None, None) => None,
        _ => bail!("--sms-username and --sms-password go together"),
    };
    Ok(Some(Args {
        listen,
        sms_credentials,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let Some(args) = parse_args(
        std::env::args().skip(1),
        std::env::var("CLM_MOCKS_LISTEN").ok(),
    )?
    else {
        println!("{USAGE}");
        return Ok(());
    };

    let config = SmsMockConfig {
        credentials: args.sms_credentials,
        ..SmsMockConfig::default()
    };
    let sms = SmsMock::start_with(args.listen, config)
        .await
        .with_context(|| format!("starting the SMS mock on {}", args.listen))?;
    println!("SMS mock (Kannel):   {}", sms.kannel_url());
    println!("SMS mock (JSON):     {}", sms.json_url());
    println!(
        "SMS mock control:    {}/{{received,stats,faults,dlr,reset}}",
        sms.control_url()
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    sms.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn listen_flag_beats_the_environment_and_defaults_apply() {
        let parsed = parse_args(args(&["--listen", "0.0.0.0:1"]), Some("127.0.0.1:2".into()));
        assert_eq!(
            parsed.unwrap().unwrap().listen,
            "0.0.0.0:1".parse().unwrap()
        );
        let parsed = parse_args(args(&[]), Some("127.0.0.1:2".into()));
        assert_eq!(
            parsed.unwrap().unwrap().listen,
            "127.0.0.1:2".parse().unwrap()
        );
        let parsed = parse_args(args(&[]), None).unwrap().unwrap();
        assert_eq!(parsed.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(parsed.sms_credentials, None);
    }

    #[test]
    fn bad_arguments_are_explained() {
        assert!(parse_args(args(&["--listen"]), None).is_err());
        assert!(parse_args(args(&["--nope"]), None).is_err());
        assert!(parse_args(args(&["--sms-username", "u"]), None).is_err());
        assert!(parse_args(args(&["--help"]), None).unwrap().is_none());
    }
}
