//! `clm-mocks`: runs the bundled mock channels standalone, for QA and docker-compose: the SMS
//! gateway, the HTTP JSON channels wink, elk and eissd, and the SOAP CRM services (SAP CRM and
//! the CRM ESB for Amdocs and CRM B2C), all on one address; and the SMTP relay of the e-mail
//! channel on a port of its own (its control API on the HTTP address).
//!
//! ```text
//! clm-mocks [--listen 127.0.0.1:9100] [--smtp-listen 127.0.0.1:2525]
//!           [--sms-username U --sms-password P]
//!           [--hub URL [--ingest-token T] [--ingest-hmac-secret S]
//!                      [--soap-username U --soap-password P] [--email-hmac-secret S]]
//!           [--eissd-dwh URL] [--auth-bearer TOKEN]
//! ```
//! The environment stands in for flags not given: `CLM_MOCKS_LISTEN` for `--listen`,
//! `CLM_MOCKS_SMTP_LISTEN` for `--smtp-listen`, `CLM_MOCKS_INGEST_TOKEN` and
//! `CLM_MOCKS_INGEST_HMAC_SECRET` for `--ingest-token` and `--ingest-hmac-secret`,
//! `CLM_MOCKS_SOAP_USERNAME` and `CLM_MOCKS_SOAP_PASSWORD` for `--soap-username` and
//! `--soap-password`, `CLM_MOCKS_EMAIL_HMAC_SECRET` for `--email-hmac-secret` (secrets in the
//! environment do not show in `ps`). Empty means unset.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clm_contracts::ChannelId;
use clm_contracts::channels::{elk, email, wink};
use clm_mocks::channel::redact_url;
use clm_mocks::{
    ChannelMock, ChannelMockConfig, Credentials, CrmCallbacks, CrmKind, CrmMock, CrmMockConfig,
    EmailFeedback, ExpectedAuth, ResponsesConfig, SmsMock, SmsMockConfig, SmtpMock, SmtpMockConfig,
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

const DEFAULT_LISTEN: &str = "127.0.0.1:9100";
const DEFAULT_SMTP_LISTEN: &str = "127.0.0.1:2525";
/// The eissd mock's DWH when `--hub` is given without `--eissd-dwh`: the file the hub's sandbox
/// reads by default (`<data_dir>/eissd-dwh.db`, `data_dir` = `data`).
const DEFAULT_EISSD_DWH: &str = "sqlite://./data/eissd-dwh.db";
/// Where the CRM mocks' callbacks go, under `--hub`.
const SOAP_RESPONSES_PATH: &str = "/soap/responses";
const USAGE: &str = "usage: clm-mocks [--listen ADDR] [--smtp-listen ADDR]
                 [--sms-username U --sms-password P]
                 [--hub URL [--ingest-token T] [--ingest-hmac-secret S]
                            [--soap-username U --soap-password P] [--email-hmac-secret S]]
                 [--eissd-dwh URL] [--auth-bearer TOKEN]
  --listen ADDR              address to serve every HTTP mock and every control API on
                             (default 127.0.0.1:9100, env CLM_MOCKS_LISTEN)
  --smtp-listen ADDR         address of the SMTP relay mock (default 127.0.0.1:2525,
                             env CLM_MOCKS_SMTP_LISTEN); its control API is on --listen
                             under /control/email/
  --sms-username U           Kannel username the SMS mock requires (with --sms-password)
  --sms-password P           Kannel password the SMS mock requires
  --hub URL                  base URL of the hub: wink and elk send their typical webhooks to
                             URL/ingest/wink and URL/ingest/elk, eissd writes its typical
                             responses to the DWH (default sqlite://./data/eissd-dwh.db), and
                             the SAP CRM and CRM ESB mocks call URL/soap/responses back
                             (SubmitResponses: Delivered, OfferAccepted for every accepted item),
                             and the SMTP mock posts delivered, opened and clicked for every
                             accepted message to URL/ingest/email
  --ingest-token T           webhooks carry X-CLM-Token: T (needs --hub;
                             env CLM_MOCKS_INGEST_TOKEN, which keeps it out of ps)
  --ingest-hmac-secret S     webhooks carry X-CLM-Signature: sha256=<HMAC-SHA256 of the body>
                             (needs --hub; env CLM_MOCKS_INGEST_HMAC_SECRET)
  --soap-username U          the CRM mocks' callbacks carry a WS-Security UsernameToken U/P
  --soap-password P          (both, needs --hub; env CLM_MOCKS_SOAP_USERNAME and
                             CLM_MOCKS_SOAP_PASSWORD, which keeps the password out of ps)
  --email-hmac-secret S      the SMTP mock's feedback carries X-CLM-Signature:
                             sha256=<HMAC-SHA256 of the body> (needs --hub;
                             env CLM_MOCKS_EMAIL_HMAC_SECRET)
  --eissd-dwh URL            sqlite://PATH or postgres://... for eissd's response rows
                             (enables eissd's typical responses, with or without --hub)
  --auth-bearer TOKEN        wink, elk and eissd require Authorization: Bearer TOKEN
A flag wins over its environment variable; an empty variable counts as unset.";

/// The environment variables standing in for flags that are not given.
#[derive(Default)]
struct Env {
    /// `CLM_MOCKS_LISTEN`.
    listen: Option<String>,
    /// `CLM_MOCKS_SMTP_LISTEN`.
    smtp_listen: Option<String>,
    /// `CLM_MOCKS_INGEST_TOKEN`.
    ingest_token: Option<String>,
    /// `CLM_MOCKS_INGEST_HMAC_SECRET`.
    ingest_hmac_secret: Option<String>,
    /// `CLM_MOCKS_SOAP_USERNAME`.
    soap_username: Option<String>,
    /// `CLM_MOCKS_SOAP_PASSWORD`.
    soap_password: Option<String>,
    /// `CLM_MOCKS_EMAIL_HMAC_SECRET`.
    email_hmac_secret: Option<String>,
}

impl Env {
    fn from_process() -> Env {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Env {
            listen: var("CLM_MOCKS_LISTEN"),
            smtp_listen: var("CLM_MOCKS_SMTP_LISTEN"),
            ingest_token: var("CLM_MOCKS_INGEST_TOKEN"),
            ingest_hmac_secret: var("CLM_MOCKS_INGEST_HMAC_SECRET"),
            soap_username: var("CLM_MOCKS_SOAP_USERNAME"),
            soap_password: var("CLM_MOCKS_SOAP_PASSWORD"),
            email_hmac_secret: var("CLM_MOCKS_EMAIL_HMAC_SECRET"),
        }
    }
}

struct Args {
    listen: SocketAddr,
    smtp_listen: SocketAddr,
    sms_credentials: Option<Credentials>,
    /// Without a trailing `/`.
    hub: Option<String>,
    ingest_token: Option<String>,
    ingest_hmac_secret: Option<String>,
    /// `(username, password)` of the CRM mocks' callbacks (a UsernameToken).
    soap_credentials: Option<(String, String)>,
    /// Given, or the default when `--hub` is given.
    eissd_dwh: Option<String>,
    auth_bearer: Option<String>,
    /// The HMAC secret of the SMTP mock's feedback.
    email_hmac_secret: Option<String>,
}

/// `Ok(None)` when help was asked for. Flags win over `env`.
fn parse_args(mut args: impl Iterator<Item = String>, env: Env) -> anyhow::Result<Option<Args>> {
    let mut listen = env.listen;
    let mut smtp_listen = env.smtp_listen;
    let mut email_hmac_secret = None;
    let (mut username, mut password) = (None, None);
    let (mut hub, mut ingest_token, mut ingest_hmac_secret) = (None, None, None);
    let (mut eissd_dwh, mut auth_bearer) = (None, None);
    let (mut soap_username, mut soap_password) = (None, None);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => listen = Some(value("--listen")?),
            "--smtp-listen" => smtp_listen = Some(value("--smtp-listen")?),
            "--email-hmac-secret" => email_hmac_secret = Some(value("--email-hmac-secret")?),
            "--sms-username" => username = Some(value("--sms-username")?),
            "--sms-password" => password = Some(value("--sms-password")?),
            "--hub" => hub = Some(value("--hub")?),
            "--ingest-token" => ingest_token = Some(value("--ingest-token")?),
            "--ingest-hmac-secret" => ingest_hmac_secret = Some(value("--ingest-hmac-secret")?),
            "--eissd-dwh" => eissd_dwh = Some(value("--eissd-dwh")?),
            "--auth-bearer" => auth_bearer = Some(value("--auth-bearer")?),
            "--soap-username" => soap_username = Some(value("--soap-username")?),
            "--soap-password" => soap_password = Some(value("--soap-password")?),
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let listen = listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen
        .parse()
        .with_context(|| format!("--listen: {listen} is not an address like {DEFAULT_LISTEN}"))?;
    let smtp_listen = smtp_listen.as_deref().unwrap_or(DEFAULT_SMTP_LISTEN);
    let smtp_listen = smtp_listen.parse().with_context(|| {
        format!("--smtp-listen: {smtp_listen} is not an address like {DEFAULT_SMTP_LISTEN}")
    })?;
    let sms_credentials = match (username, password) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        (None, None) => None,
        _ => bail!("--sms-username and --sms-password go together"),
    };
    let hub = match hub {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(url.trim_end_matches('/').to_owned())
        }
        Some(url) => bail!("--hub: {url} is not an http:// or https:// URL"),
        None => None,
    };
    if hub.is_none() {
        if ingest_token.is_some() || ingest_hmac_secret.is_some() {
            bail!("--ingest-token and --ingest-hmac-secret need --hub");
        }
        if soap_username.is_some() || soap_password.is_some() {
            bail!("--soap-username and --soap-password need --hub");
        }
        if email_hmac_secret.is_some() {
            bail!("--email-hmac-secret needs --hub");
        }
        for (name, value) in [
            ("CLM_MOCKS_INGEST_TOKEN", &env.ingest_token),
            ("CLM_MOCKS_INGEST_HMAC_SECRET", &env.ingest_hmac_secret),
            ("CLM_MOCKS_SOAP_USERNAME", &env.soap_username),
            ("CLM_MOCKS_SOAP_PASSWORD", &env.soap_password),
            ("CLM_MOCKS_EMAIL_HMAC_SECRET", &env.email_hmac_secret),
        ] {
            if value.is_some() {
                bail!("{name} is set but --hub is not: give --hub or unset {name}");
            }
        }
    }
    let ingest_token = ingest_token.or(env.ingest_token);
    let ingest_hmac_secret = ingest_hmac_secret.or(env.ingest_hmac_secret);
    let email_hmac_secret = email_hmac_secret.or(env.email_hmac_secret);
    let soap_credentials = match (
        soap_username.or(env.soap_username),
        soap_password.or(env.soap_password),
    ) {
        (Some(username), Some(password)) => Some((username, password)),
        (None, None) => None,
        _ => bail!(
            "--soap-username and --soap-password go together \
             (or CLM_MOCKS_SOAP_USERNAME and CLM_MOCKS_SOAP_PASSWORD)"
        ),
    };
    if let Some(url) = &eissd_dwh
        && !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
    {
        bail!("--eissd-dwh: expected sqlite://PATH or postgres://..., got {url}");
    }
    if auth_bearer.as_deref().is_some_and(str::is_empty) {
        bail!("--auth-bearer needs a non-empty token");
    }
    let eissd_dwh = eissd_dwh.or_else(|| hub.as_ref().map(|_| DEFAULT_EISSD_DWH.to_owned()));
    Ok(Some(Args {
        listen,
        smtp_listen,
        sms_credentials,
        hub,
        ingest_token,
        ingest_hmac_secret,
        soap_credentials,
        eissd_dwh,
        auth_bearer,
        email_hmac_secret,
    }))
}

/// The settings of the wink, elk and eissd mocks.
fn channel_configs(args: &Args) -> Vec<(ChannelId, ChannelMockConfig)> {
    let auth = args.auth_bearer.clone().map(ExpectedAuth::Bearer);
    let webhooks = |channel: ChannelId, ingest_path: &str| match &args.hub {
        Some(hub) => ResponsesConfig {
            webhook_url: Some(format!("{hub}{ingest_path}")),
            token: args.ingest_token.clone(),
            hmac_secret: args.ingest_hmac_secret.clone(),
            ..ResponsesConfig::typical(channel)
        },
        None => ResponsesConfig::default(),
    };
    let eissd_responses = match &args.eissd_dwh {
        Some(_) => ResponsesConfig::typical(ChannelId::Eissd),
        None => ResponsesConfig::default(),
    };
    vec![
        (
            ChannelId::Wink,
            ChannelMockConfig {
                auth: auth.clone(),
                responses: webhooks(ChannelId::Wink, wink::INGEST_PATH),
                ..ChannelMockConfig::default()
            },
        ),
        (
            ChannelId::Elk,
            ChannelMockConfig {
                auth: auth.clone(),
                responses: webhooks(ChannelId::Elk, elk::INGEST_PATH),
                ..ChannelMockConfig::default()
            },
        ),
        (
            ChannelId::Eissd,
            ChannelMockConfig {
                auth,
                responses: eissd_responses,
                dwh_url: args.eissd_dwh.clone(),
                ..ChannelMockConfig::default()
            },
        ),
    ]
}

/// The settings of the SAP CRM and CRM ESB mocks: with `--hub`, the typical callbacks to its
/// response service, with the UsernameToken of `--soap-username`/`--soap-password`.
fn crm_configs(args: &Args) -> Vec<(CrmKind, CrmMockConfig)> {
    let callbacks = match &args.hub {
        Some(hub) => CrmCallbacks {
            url: Some(format!("{hub}{SOAP_RESPONSES_PATH}")),
            auth: args.soap_credentials.clone(),
            ..CrmCallbacks::typical()
        },
        None => CrmCallbacks::default(),
    };
    [CrmKind::SapCrm, CrmKind::Esb]
        .into_iter()
        .map(|kind| {
            (
                kind,
                CrmMockConfig {
                    callbacks: callbacks.clone(),
                    ..CrmMockConfig::default()
                },
            )
        })
        .collect()
}

/// The settings of the SMTP mock: with `--hub`, the typical feedback to its `/ingest/email`,
/// signed with `--email-hmac-secret`.
fn email_config(args: &Args) -> SmtpMockConfig {
    let feedback = match &args.hub {
        Some(hub) => EmailFeedback {
            url: Some(format!("{hub}{}", email::INGEST_PATH)),
            hmac_secret: args.email_hmac_secret.clone(),
            ..EmailFeedback::typical()
        },
        None => EmailFeedback::default(),
    };
    SmtpMockConfig {
        feedback,
        ..SmtpMockConfig::default()
    }
}

/// Where the SMTP mock's feedback goes, for the start-up lines.
fn email_destination(config: &SmtpMockConfig) -> String {
    let feedback = &config.feedback;
    match &feedback.url {
        Some(url) if !feedback.events.is_empty() => format!(
            "feedback {} to {}{}",
            feedback.events.join(","),
            redact_url(url),
            if feedback.hmac_secret.is_some() {
                " (signed)"
            } else {
                ""
            }
        ),
        _ => "no feedback".to_owned(),
    }
}

/// Where a CRM mock's callbacks go, for the start-up lines.
fn crm_destination(config: &CrmMockConfig) -> String {
    let callbacks = &config.callbacks;
    match &callbacks.url {
        Some(url) if !callbacks.kinds.is_empty() => format!(
            "callbacks {} to {}{}",
            callbacks.kinds.join(","),
            redact_url(url),
            if callbacks.auth.is_some() {
                " (UsernameToken)"
            } else {
                ""
            }
        ),
        _ => "no callbacks".to_owned(),
    }
}

/// Where a mock's responses go, for the start-up lines (a PostgreSQL password masked).
fn destination(mock: &ChannelMock, config: &ChannelMockConfig) -> String {
    if config.responses.kinds.is_empty() {
        return "no responses".to_owned();
    }
    let to = match (&config.responses.webhook_url, &config.dwh_url) {
        (Some(url), _) | (None, Some(url)) => redact_url(url),
        (None, None) => "nowhere".to_owned(),
    };
    let how = match mock.channel() {
        ChannelId::Eissd => "rows in",
        _ => "webhooks to",
    };
    format!(
        "responses {} ({how} {to})",
        config.responses.kinds.join(",")
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let Some(args) = parse_args(std::env::args().skip(1), Env::from_process())? else {
        println!("{USAGE}");
        return Ok(());
    };

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;

    let sms = SmsMock::detached(
        addr,
        SmsMockConfig {
            credentials: args.sms_credentials.clone(),
            ..SmsMockConfig::default()
        },
    )
    .context("starting the SMS mock")?;
    let mut app = sms.router();
    println!(
        "sms    send {} (Kannel), {} (JSON)  control {}/{{received,stats,faults,dlr,reset}}",
        sms.kannel_url(),
        sms.json_url(),
        sms.control_url()
    );
    let mut mocks = Vec::new();
    for (channel, config) in channel_configs(&args) {
        let mock = ChannelMock::detached(channel, addr, config.clone())
            .await
            .with_context(|| format!("starting the {channel} mock"))?;
        app = app.merge(mock.router());
        println!(
            "{:<6} send {}  control {}/{{received,stats,faults,responses,reset,respond}}  {}",
            channel.as_str(),
            mock.send_url(),
            mock.control_url(),
            destination(&mock, &config)
        );
        mocks.push(mock);
    }
    let mut crms = Vec::new();
    for (kind, config) in crm_configs(&args) {
        let mock = CrmMock::detached(kind, addr, config.clone())
            .with_context(|| format!("starting the {kind} mock"))?;
        app = app.merge(mock.router());
        println!(
            "{:<7} soap {} (?wsdl)  control {}/{{received,stats,faults,callbacks,reset}}  {}",
            kind.as_str(),
            mock.url(),
            mock.control_url(),
            crm_destination(&config)
        );
        crms.push(mock);
    }

    let email = email_config(&args);
    let smtp = SmtpMock::start_detached(args.smtp_listen, addr, email.clone())
        .await
        .context("starting the SMTP mock")?;
    app = app.merge(smtp.control_router());
    println!(
        "email  smtp {}  control {}/{{received,stats,faults,feedback,reset}}  {}",
        smtp.addr(),
        smtp.control_url(),
        email_destination(&email)
    );

    let stop = CancellationToken::new();
    let serve = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    let mut server = tokio::spawn(async move { serve.await });
    tokio::select! {
        () = shutdown_signal() => {}
        result = &mut server => {
            result.context("the server task failed")?.context("serving")?;
            bail!("the server stopped by itself");
        }
    }
    tracing::info!("shutting down");
    // Mocks first: that releases held requests, so the server's graceful shutdown can finish.
    sms.shutdown().await;
    for mock in mocks {
        mock.shutdown().await;
    }
    for mock in crms {
        mock.shutdown().await;
    }
    smtp.shutdown().await;
    stop.cancel();
    if tokio::time::timeout(Duration::from_secs(5), &mut server)
        .await
        .is_err()
    {
        server.abort();
    }
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

    fn listen_env(listen: &str) -> Env {
        Env {
            listen: Some(listen.to_owned()),
            ..Env::default()
        }
    }

    fn secrets_env() -> Env {
        Env {
            ingest_token: Some("env-token".into()),
            ingest_hmac_secret: Some("env-secret".into()),
            ..Env::default()
        }
    }

    #[test]
    fn listen_flag_beats_the_environment_and_defaults_apply() {
        let parsed = parse_args(args(&["--listen", "0.0.0.0:1"]), listen_env("127.0.0.1:2"));
        assert_eq!(
            parsed.unwrap().unwrap().listen,
            "0.0.0.0:1".parse().unwrap()
        );
        let parsed = parse_args(args(&[]), listen_env("127.0.0.1:2"));
        assert_eq!(
            parsed.unwrap().unwrap().listen,
            "127.0.0.1:2".parse().unwrap()
        );
        let parsed = parse_args(args(&[]), Env::default()).unwrap().unwrap();
        assert_eq!(parsed.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(parsed.sms_credentials, None);
    }

    #[test]
    fn bad_arguments_are_explained() {
        assert!(parse_args(args(&["--listen"]), Env::default()).is_err());
        assert!(parse_args(args(&["--nope"]), Env::default()).is_err());
        assert!(parse_args(args(&["--sms-username", "u"]), Env::default()).is_err());
        assert!(
            parse_args(args(&["--help"]), Env::default())
                .unwrap()
                .is_none()
        );
        assert!(parse_args(args(&["--hub", "hub:8080"]), Env::default()).is_err());
        assert!(parse_args(args(&["--ingest-token", "t"]), Env::default()).is_err());
        assert!(parse_args(args(&["--ingest-hmac-secret", "s"]), Env::default()).is_err());
        assert!(parse_args(args(&["--eissd-dwh", "mysql://dwh"]), Env::default()).is_err());
        assert!(parse_args(args(&["--auth-bearer", ""]), Env::default()).is_err());
        assert!(parse_args(args(&["--soap-username", "u"]), Env::default()).is_err());
        assert!(
            parse_args(
                args(&["--soap-username", "u", "--soap-password", "p"]),
                Env::default()
            )
            .is_err(),
            "needs --hub"
        );
        assert!(
            parse_args(
                args(&["--hub", "http://hub:8080", "--soap-username", "u"]),
                Env::default()
            )
            .is_err(),
            "username and password go together"
        );
    }

    #[test]
    fn without_hub_the_channel_mocks_send_no_responses() {
        let parsed = parse_args(args(&["--auth-bearer", "b"]), Env::default())
            .unwrap()
            .unwrap();
        assert_eq!((&parsed.hub, &parsed.eissd_dwh), (&None, &None));
        let configs = channel_configs(&parsed);
        let channels: Vec<_> = configs.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            channels,
            [ChannelId::Wink, ChannelId::Elk, ChannelId::Eissd]
        );
        for (_, config) in &configs {
            assert!(config.responses.kinds.is_empty());
            assert_eq!(config.auth, Some(ExpectedAuth::Bearer("b".into())));
            assert_eq!(config.dwh_url, None);
        }
        let crms = crm_configs(&parsed);
        let kinds: Vec<_> = crms.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [CrmKind::SapCrm, CrmKind::Esb]);
        for (_, config) in &crms {
            assert_eq!(config.callbacks, CrmCallbacks::default());
            assert_eq!(crm_destination(config), "no callbacks");
        }
    }

    #[test]
    fn hub_sends_crm_callbacks_to_its_response_service() {
        let parsed = parse_args(
            args(&[
                "--hub",
                "http://hub:8080/",
                "--soap-username",
                "CRM_USER",
                "--soap-password",
                "s3cret",
            ]),
            Env::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            parsed.soap_credentials,
            Some(("CRM_USER".to_owned(), "s3cret".to_owned()))
        );
        for (_, config) in crm_configs(&parsed) {
            let callbacks = &config.callbacks;
            assert_eq!(
                callbacks.url.as_deref(),
                Some("http://hub:8080/soap/responses")
            );
            assert_eq!(callbacks.kinds, ["Delivered", "OfferAccepted"]);
            assert_eq!(
                callbacks.auth,
                Some(("CRM_USER".to_owned(), "s3cret".to_owned()))
            );
            assert!(!callbacks.basic);
            assert!(callbacks.validate().is_ok());
            let line = crm_destination(&config);
            assert!(line.contains("http://hub:8080/soap/responses"), "{line}");
            assert!(!line.contains("s3cret"), "{line}");
        }
        // Without credentials: callbacks all the same, unauthenticated.
        let parsed = parse_args(args(&["--hub", "http://hub:8080"]), Env::default())
            .unwrap()
            .unwrap();
        assert_eq!(crm_configs(&parsed)[1].1.callbacks.auth, None);
    }

    #[test]
    fn soap_credentials_come_from_the_environment_and_flags_win() {
        let env = || Env {
            soap_username: Some("env-user".into()),
            soap_password: Some("env-pass".into()),
            ..Env::default()
        };
        let parsed = parse_args(args(&["--hub", "http://hub:8080"]), env())
            .unwrap()
            .unwrap();
        assert_eq!(
            parsed.soap_credentials,
            Some(("env-user".to_owned(), "env-pass".to_owned()))
        );
        let parsed = parse_args(
            args(&["--hub", "http://hub:8080", "--soap-password", "flag-pass"]),
            env(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            parsed.soap_credentials,
            Some(("env-user".to_owned(), "flag-pass".to_owned()))
        );
        let error = parse_args(args(&[]), env()).err().unwrap().to_string();
        assert!(error.contains("CLM_MOCKS_SOAP_"), "{error}");
        assert!(
            !error.contains("env-pass"),
            "no secret in the error: {error}"
        );
        let half = Env {
            soap_username: Some("env-user".into()),
            ..Env::default()
        };
        assert!(parse_args(args(&["--hub", "http://hub:8080"]), half).is_err());
    }

    #[test]
    fn hub_enables_typical_responses_to_its_ingest_routes() {
        let parsed = parse_args(
            args(&[
                "--hub",
                "http://hub:8080/",
                "--ingest-token",
                "t",
                "--ingest-hmac-secret",
                "s",
            ]),
            Env::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(parsed.hub.as_deref(), Some("http://hub:8080"));
        assert_eq!(parsed.eissd_dwh.as_deref(), Some(DEFAULT_EISSD_DWH));
        let configs = channel_configs(&parsed);
        let (_, wink) = &configs[0];
        assert_eq!(
            wink.responses.webhook_url.as_deref(),
            Some("http://hub:8080/ingest/wink")
        );
        assert_eq!(wink.responses.kinds, ["delivered", "shown", "clicked"]);
        assert_eq!(
            (
                wink.responses.token.as_deref(),
                wink.responses.hmac_secret.as_deref()
            ),
            (Some("t"), Some("s"))
        );
        assert_eq!(wink.auth, None);
        let (_, elk) = &configs[1];
        assert_eq!(
            elk.responses.webhook_url.as_deref(),
            Some("http://hub:8080/ingest/elk")
        );
        let (_, eissd) = &configs[2];
        assert_eq!(eissd.responses.kinds, ["interested"]);
        assert_eq!(eissd.responses.webhook_url, None);
        assert_eq!(eissd.dwh_url.as_deref(), Some(DEFAULT_EISSD_DWH));
    }

    #[test]
    fn eissd_dwh_alone_enables_eissd_rows() {
        let parsed = parse_args(
            args(&["--eissd-dwh", "postgres://u:p@dwh/db"]),
            Env::default(),
        )
        .unwrap()
        .unwrap();
        let configs = channel_configs(&parsed);
        assert!(configs[0].1.responses.kinds.is_empty());
        assert_eq!(configs[2].1.responses.kinds, ["interested"]);
        assert_eq!(
            configs[2].1.dwh_url.as_deref(),
            Some("postgres://u:p@dwh/db")
        );
    }

    #[test]
    fn ingest_secrets_come_from_the_environment_and_flags_win() {
        let parsed = parse_args(args(&["--hub", "http://hub:8080"]), secrets_env())
            .unwrap()
            .unwrap();
        assert_eq!(parsed.ingest_token.as_deref(), Some("env-token"));
        assert_eq!(parsed.ingest_hmac_secret.as_deref(), Some("env-secret"));
        let (_, wink) = &channel_configs(&parsed)[0];
        assert_eq!(wink.responses.token.as_deref(), Some("env-token"));
        assert_eq!(wink.responses.hmac_secret.as_deref(), Some("env-secret"));

        let parsed = parse_args(
            args(&["--hub", "http://hub:8080", "--ingest-token", "flag-token"]),
            secrets_env(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(parsed.ingest_token.as_deref(), Some("flag-token"));
        assert_eq!(parsed.ingest_hmac_secret.as_deref(), Some("env-secret"));

        let parsed = parse_args(
            args(&[
                "--hub",
                "http://hub:8080",
                "--ingest-hmac-secret",
                "flag-secret",
            ]),
            secrets_env(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(parsed.ingest_token.as_deref(), Some("env-token"));
        assert_eq!(parsed.ingest_hmac_secret.as_deref(), Some("flag-secret"));
    }

    #[test]
    fn ingest_secrets_in_the_environment_need_hub() {
        for env in [
            Env {
                ingest_token: Some("env-token".into()),
                ..Env::default()
            },
            Env {
                ingest_hmac_secret: Some("env-secret".into()),
                ..Env::default()
            },
        ] {
            let error = parse_args(args(&[]), env).err().unwrap().to_string();
            assert!(error.contains("CLM_MOCKS_INGEST_"), "{error}");
            assert!(!error.contains("env-"), "no secret in the error: {error}");
        }
    }

    #[test]
    fn usage_names_the_environment_variables() {
        for name in [
            "CLM_MOCKS_LISTEN",
            "CLM_MOCKS_INGEST_TOKEN",
            "CLM_MOCKS_INGEST_HMAC_SECRET",
            "CLM_MOCKS_SOAP_USERNAME",
            "CLM_MOCKS_SOAP_PASSWORD",
            "CLM_MOCKS_SMTP_LISTEN",
            "CLM_MOCKS_EMAIL_HMAC_SECRET",
        ] {
            assert!(USAGE.contains(name), "{name}");
        }
        for flag in ["--smtp-listen", "--email-hmac-secret"] {
            assert!(USAGE.contains(flag), "{flag}");
        }
    }

    #[test]
    fn smtp_listen_flag_beats_the_environment_and_defaults_apply() {
        let parsed = parse_args(args(&[]), Env::default()).unwrap().unwrap();
        assert_eq!(parsed.smtp_listen, DEFAULT_SMTP_LISTEN.parse().unwrap());
        let env = || Env {
            smtp_listen: Some("127.0.0.1:2626".into()),
            ..Env::default()
        };
        let parsed = parse_args(args(&[]), env()).unwrap().unwrap();
        assert_eq!(parsed.smtp_listen, "127.0.0.1:2626".parse().unwrap());
        let parsed = parse_args(args(&["--smtp-listen", "0.0.0.0:25"]), env())
            .unwrap()
            .unwrap();
        assert_eq!(parsed.smtp_listen, "0.0.0.0:25".parse().unwrap());
        let error = parse_args(args(&["--smtp-listen", "localhost"]), Env::default())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("--smtp-listen"), "{error}");
        assert!(parse_args(args(&["--smtp-listen"]), Env::default()).is_err());
    }

    #[test]
    fn without_hub_the_smtp_mock_sends_no_feedback() {
        let parsed = parse_args(args(&[]), Env::default()).unwrap().unwrap();
        let config = email_config(&parsed);
        assert_eq!(config.feedback, EmailFeedback::default());
        assert_eq!(email_destination(&config), "no feedback");
        assert!(parse_args(args(&["--email-hmac-secret", "s"]), Env::default()).is_err());
        let env = Env {
            email_hmac_secret: Some("env-email-secret".into()),
            ..Env::default()
        };
        let error = parse_args(args(&[]), env).err().unwrap().to_string();
        assert!(error.contains("CLM_MOCKS_EMAIL_HMAC_SECRET"), "{error}");
        assert!(
            !error.contains("env-email-secret"),
            "no secret in the error: {error}"
        );
    }

    #[test]
    fn hub_sends_email_feedback_to_its_ingest_route() {
        let env = || Env {
            email_hmac_secret: Some("env-email-secret".into()),
            ..Env::default()
        };
        let parsed = parse_args(args(&["--hub", "http://hub:8080/"]), env())
            .unwrap()
            .unwrap();
        let config = email_config(&parsed);
        let feedback = &config.feedback;
        assert_eq!(
            feedback.url.as_deref(),
            Some("http://hub:8080/ingest/email")
        );
        assert_eq!(feedback.events, ["delivered", "opened", "clicked"]);
        assert_eq!(feedback.hmac_secret.as_deref(), Some("env-email-secret"));
        assert!(feedback.validate().is_ok());
        let line = email_destination(&config);
        assert!(line.contains("http://hub:8080/ingest/email"), "{line}");
        assert!(line.contains("signed"), "{line}");
        assert!(!line.contains("env-email-secret"), "{line}");
        assert!(!format!("{config:?}").contains("env-email-secret"));

        let parsed = parse_args(
            args(&[
                "--hub",
                "http://hub:8080",
                "--email-hmac-secret",
                "flag-email-secret",
            ]),
            env(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            email_config(&parsed).feedback.hmac_secret.as_deref(),
            Some("flag-email-secret"),
            "the flag wins"
        );
        // Not the secret of the HTTP channels' webhooks.
        let parsed = parse_args(
            args(&["--hub", "http://hub:8080", "--ingest-hmac-secret", "s"]),
            Env::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(email_config(&parsed).feedback.hmac_secret, None);
    }
}
