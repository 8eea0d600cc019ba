//! The SMTP relay mock for the e-mail channel: plain SMTP on a TCP port (RFC 5321, with ESMTP
//! `PIPELINING`, `SIZE`, `8BITMIME`, `SMTPUTF8`, `ENHANCEDSTATUSCODES` and, when credentials are
//! set, `AUTH PLAIN LOGIN`; no `STARTTLS`), recording every message it takes, injecting faults
//! per stage, and sending feedback (delivered, bounced, opened, clicked, …) to the hub's
//! `/ingest/email`. Its control API is HTTP, on a listener of its own or merged into another
//! server ([`SmtpMock::control_router`]).
//!
//! # Layout
//! - [`SmtpMock`] (here): starts the listeners, and is the handle tests hold; [`SmtpMockConfig`].
//! - `session`: one connection: the dialogue, dot-unstuffing, limits, the faults of each stage.
//! - `faults`: [`SmtpFaults`] — per stage (`rcpt`, `data`, `end_of_data`), scripted per
//!   transaction, per recipient, greylisting, latency.
//! - `record`: [`ReceivedMail`] records (bounded) with their parsed header, [`SmtpStats`]
//!   counters (never truncated), the MIME parsing the feedback needs.
//! - `feedback`: [`EmailFeedback`] and the webhook sender (signed or Basic, retried).
//! - `state`: settings behind one small lock.
//! - `control`: `/control/email/…`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use clm_mocks::{EmailFeedback, SmtpFaults, SmtpMock, SmtpMockConfig, SmtpStageFault};
//! let feedback = EmailFeedback {
//!     url: Some("http://127.0.0.1:8080/ingest/email".into()),
//!     hmac_secret: Some("secret".into()),
//!     ..EmailFeedback::typical()
//! };
//! let config = SmtpMockConfig { feedback, ..SmtpMockConfig::default() };
//! let smtp = SmtpMock::start("127.0.0.1:0".parse()?, config).await?;
//! smtp.set_faults(SmtpFaults { rcpt: Some(SmtpStageFault::greylisted()), ..SmtpFaults::default() });
//! // point the e-mail connector at smtp.addr() …
//! smtp.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod control;
mod faults;
mod feedback;
mod record;
mod session;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use faults::{SmtpFaults, SmtpScriptStep, SmtpStageFault};
pub use feedback::{EmailFeedback, FEEDBACK_EVENTS};
pub use record::{ReceivedMail, SmtpStats};

use crate::Credentials;
use state::Shared;

/// Messages kept by default; the counters are never truncated.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Largest message accepted by default (advertised as `SIZE`): 10 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;

/// Longest text line of a message, CRLF included (RFC 5321 4.5.3.1.6).
pub const DEFAULT_MAX_LINE_LENGTH: usize = 1000;

/// Recipients per transaction (RFC 5321 4.5.3.1.8: at least 100 must be taken).
pub const DEFAULT_MAX_RECIPIENTS: usize = 100;

/// Where the control API lives on its HTTP server.
pub const CONTROL_PREFIX: &str = "/control/email";

/// How a mock starts. `Default`: no auth, no faults, no feedback, the limits above. `Debug`
/// hides the password, the feedback's secrets and every address.
#[derive(Debug, Clone)]
pub struct SmtpMockConfig {
    /// Named in the greeting and the `EHLO` reply.
    pub hostname: String,
    /// When set, `EHLO` advertises `AUTH PLAIN LOGIN` and `MAIL` needs a successful `AUTH`
    /// (`530 5.7.0` otherwise). Plain text without TLS: it is a mock.
    pub credentials: Option<Credentials>,
    /// Largest message (after dot-unstuffing): advertised as `SIZE`, a bigger `MAIL … SIZE=`
    /// and a bigger message get `552 5.3.4`.
    pub max_message_size: usize,
    /// Longest text line, CRLF included: a message with a longer line gets `500 5.5.2` after
    /// its final `.`. (Command lines: 512, RFC 5321.)
    pub max_line_length: usize,
    /// Recipients per transaction: more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Messages kept (oldest dropped first); 0 means [`DEFAULT_CAPACITY`].
    pub capacity: usize,
    pub faults: SmtpFaults,
    pub feedback: EmailFeedback,
    /// [`SmtpMock::start`]: where the control API's own HTTP listener binds; by default the IP
    /// of the SMTP address with a free port.
    pub control_listen: Option<SocketAddr>,
}

impl Default for SmtpMockConfig {
    fn default() -> Self {
        SmtpMockConfig {
            hostname: "smtp.clm-mocks.invalid".to_owned(),
            credentials: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_line_length: DEFAULT_MAX_LINE_LENGTH,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            capacity: 0,
            faults: SmtpFaults::default(),
            feedback: EmailFeedback::default(),
            control_listen: None,
        }
    }
}

/// A running SMTP mock. Serves until [`SmtpMock::shutdown`] or until dropped.
pub struct SmtpMock {
    addr: SocketAddr,
    control_addr: SocketAddr,
    shared: Arc<Shared>,
    connections: TaskTracker,
    smtp: Option<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
}

impl SmtpMock {
    /// Starts SMTP on `bind` (port 0 picks a free port) and the control API on an HTTP listener
    /// of its own (`config.control_listen`, or the same IP with a free port).
    pub async fn start(bind: SocketAddr, config: SmtpMockConfig) -> anyhow::Result<SmtpMock> {
        let control_bind = config
            .control_listen
            .unwrap_or_else(|| SocketAddr::new(bind.ip(), 0));
        let control_listener = TcpListener::bind(control_bind)
            .await
            .with_context(|| format!("smtp mock control API: listening on {control_bind}"))?;
        let control_addr = control_listener.local_addr()?;
        let mut mock = Self::start_detached(bind, control_addr, config).await?;
        let app = mock.control_router();
        let shutdown = mock.shared.shutdown.clone();
        mock.control = Some(tokio::spawn(async move {
            let serve = axum::serve(control_listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(error) = serve.await {
                tracing::warn!(%error, "smtp mock control server stopped");
            }
        }));
        Ok(mock)
    }

    /// Starts SMTP on `bind` without a control server of its own: serve
    /// [`SmtpMock::control_router`] on `control_addr` yourself (what [`SmtpMock::control_url`]
    /// points at), as the `clm-mocks` binary does.
    pub async fn start_detached(
        bind: SocketAddr,
        control_addr: SocketAddr,
        config: SmtpMockConfig,
    ) -> anyhow::Result<SmtpMock> {
        // reqwest is built without a crypto provider; the first caller installs ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Err(reason) = config.faults.validate() {
            bail!("smtp mock faults: {reason}");
        }
        if let Err(reason) = config.feedback.validate() {
            bail!("smtp mock feedback: {reason}");
        }
        if config.hostname.is_empty() || config.hostname.contains(char::is_whitespace) {
            bail!("smtp mock: hostname must be one word");
        }
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("smtp mock: listening on {bind}"))?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared::new(config, shutdown)?);
        let connections = TaskTracker::new();
        let smtp = tokio::spawn(accept(listener, shared.clone(), connections.clone()));
        tracing::debug!(%addr, "smtp mock listening");
        Ok(SmtpMock {
            addr,
            control_addr,
            shared,
            connections,
            smtp: Some(smtp),
            control: None,
        })
    }

    /// The SMTP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The SMTP port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://CONTROL_ADDR/control/email`, the prefix of the control API.
    pub fn control_url(&self) -> String {
        format!("http://{}{CONTROL_PREFIX}", self.control_addr)
    }

    /// Replaces the faults (out-of-range values are fixed); the script starts over, the greylist
    /// memory stays. Applies to the stages that come next, in open connections too.
    pub fn set_faults(&self, faults: SmtpFaults) {
        self.shared.set_faults(faults);
    }

    /// The faults in force, with what is left of the script.
    pub fn faults(&self) -> SmtpFaults {
        self.shared.faults()
    }

    /// Replaces the feedback settings for messages taken from now on. Unknown events are skipped
    /// (with a warning); [`EmailFeedback::validate`] reports them.
    pub fn set_feedback(&self, feedback: EmailFeedback) {
        self.shared.set_feedback(feedback);
    }

    pub fn feedback(&self) -> EmailFeedback {
        self.shared.feedback().as_ref().clone()
    }

    /// Replaces the credentials `AUTH` checks (`None`: no `AUTH`, none needed), for sessions
    /// from their next `EHLO`.
    pub fn set_credentials(&self, credentials: Option<Credentials>) {
        self.shared.set_credentials(credentials);
    }

    /// Every message kept, oldest first.
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.shared.recorder.received(None)
    }

    /// Waits until at least `n` messages were taken (answered, or held by a `hang`); false on
    /// timeout.
    pub async fn wait_for_messages(&self, n: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.shared.recorder.taken() >= n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until at least `n` feedback webhooks were delivered (answered 2xx); false on
    /// timeout.
    pub async fn wait_for_feedback(&self, n: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.shared.sender.counts().sent >= n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn stats(&self) -> SmtpStats {
        self.shared.stats()
    }

    /// Clears records, counters, faults and the greylist memory, and drops pending feedback.
    /// Feedback settings and credentials stay.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// The control API's routes bound to this mock's state, to be served by another server.
    pub fn control_router(&self) -> Router {
        control::routes().with_state(self.shared.clone())
    }

    /// Stops serving: open connections get `421` (held ones are closed), pending feedback is
    /// dropped; connections and the control server get up to 5 s to finish.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        for task in [self.smtp.take(), self.control.take()]
            .into_iter()
            .flatten()
        {
            crate::util::stop_within_grace(task).await;
        }
        self.connections.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.connections.wait()).await;
        self.shared.sender.close().await;
    }
}

impl Drop for SmtpMock {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// Accepts connections until shutdown; each is served in a task of its own.
async fn accept(listener: TcpListener, shared: Arc<Shared>, connections: TaskTracker) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(session::serve(shared.clone(), stream));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little, go on.
                    tracing::warn!(%error, "smtp mock: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
