//! The SMS gateway mock: the Kannel `sendsms` dialect and the JSON dialect of
//! `clm_contracts::sms::wire` on one server, with fault injection, automatic delivery reports and
//! a control API.
//!
//! # Layout
//! - [`SmsMock`] (here): starts the server, and is the handle tests hold.
//! - `kannel`: `GET`/`POST /cgi-bin/sendsms`, byte-exact decoding, Kannel `dlr-url` escapes.
//! - `json`: `POST /api/sms`.
//! - `crate::faults` (shared with the HTTP channel mocks): [`Faults`], decided per request under
//!   one small lock (`state`).
//! - `dlr`: [`DlrConfig`] and the background sender of delivery reports.
//! - `record`: [`ReceivedSms`] records (bounded) and [`SmsStats`] counters (never truncated).
//! - `control`: `/control/sms/…`.
//!
//! A request flows: parse → `state::Shared::decide` (faults, credentials) → check → record →
//! answer, with a delivery report spawned for accepted messages.

mod control;
mod dlr;
mod json;
mod kannel;
mod record;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::faults::{Faults, Throttle};
pub use dlr::{DlrConfig, DlrMethod};
pub use record::{Dialect, ReceivedSms, SmsStats};

use state::Shared;

/// Records kept by default; the counters are never truncated.
pub const DEFAULT_CAPACITY: usize = 200_000;

/// Kannel `username`/`password` the mock requires.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log line.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// How a mock starts; [`SmsMock::start`] uses the defaults.
#[derive(Debug, Clone)]
pub struct SmsMockConfig {
    /// When set, Kannel requests must carry these credentials (403 otherwise).
    pub credentials: Option<Credentials>,
    /// Records kept (oldest dropped first); 0 keeps none, counters still count.
    pub capacity: usize,
    pub faults: Faults,
    pub dlr: DlrConfig,
}

impl Default for SmsMockConfig {
    fn default() -> Self {
        SmsMockConfig {
            credentials: None,
            capacity: DEFAULT_CAPACITY,
            faults: Faults::default(),
            dlr: DlrConfig::default(),
        }
    }
}

/// A running SMS gateway mock. Serves until [`SmsMock::shutdown`] or until dropped.
pub struct SmsMock {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl SmsMock {
    /// Starts a mock with the default settings on `bind` (port 0 picks a free port).
    pub async fn start(bind: SocketAddr) -> anyhow::Result<SmsMock> {
        Self::start_with(bind, SmsMockConfig::default()).await
    }

    /// Starts a mock with `config` on `bind`.
    pub async fn start_with(bind: SocketAddr, config: SmsMockConfig) -> anyhow::Result<SmsMock> {
        // reqwest is built without a crypto provider; the first caller installs ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared::new(config, shutdown.clone())?);
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let app = router(shared.clone());
        let server = tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(error) = serve.await {
                tracing::warn!(%error, "sms mock server stopped");
            }
        });
        tracing::debug!(%addr, "sms mock listening");
        Ok(SmsMock {
            addr,
            shared,
            server: Some(server),
        })
    }

    /// A mock without a server of its own: serve [`SmsMock::router`] on `addr` yourself (the
    /// URLs the handle gives point there). [`SmsMock::shutdown`] releases held requests and drops
    /// pending delivery reports.
    pub fn detached(addr: SocketAddr, config: SmsMockConfig) -> anyhow::Result<SmsMock> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shared = Arc::new(Shared::new(config, CancellationToken::new())?);
        Ok(SmsMock {
            addr,
            shared,
            server: None,
        })
    }

    /// Requires `username`/`password` on Kannel requests from now on.
    pub fn with_credentials(
        self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.shared.set_credentials(Some(Credentials {
            username: username.into(),
            password: password.into(),
        }));
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/cgi-bin/sendsms`
    pub fn kannel_url(&self) -> String {
        format!("http://{}/cgi-bin/sendsms", self.addr)
    }

    /// `http://ADDR/api/sms`
    pub fn json_url(&self) -> String {
        format!("http://{}/api/sms", self.addr)
    }

    /// `http://ADDR/control/sms`, the prefix of the control API.
    pub fn control_url(&self) -> String {
        format!("http://{}/control/sms", self.addr)
    }

    /// Replaces the faults (out-of-range values are clamped); a script starts over.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// The faults in force, with what is left of the script.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    pub fn set_dlr(&self, dlr: DlrConfig) {
        self.shared.set_dlr(dlr);
    }

    /// Every record kept, oldest first.
    pub fn received(&self) -> Vec<ReceivedSms> {
        self.shared.recorder.received(None)
    }

    pub fn stats(&self) -> SmsStats {
        self.shared.stats()
    }

    /// Requests answered 2xx since start or reset.
    pub fn accepted_count(&self) -> u64 {
        self.shared.recorder.accepted()
    }

    /// Client refs accepted more than once.
    pub fn duplicates(&self) -> u64 {
        self.shared.recorder.duplicates()
    }

    /// How many times `client_ref` was accepted.
    pub fn accepted_ref_count(&self, client_ref: &str) -> u32 {
        self.shared.recorder.accepted_ref_count(client_ref)
    }

    /// Waits until at least `n` requests were accepted; false on timeout.
    pub async fn wait_for_accepted(&self, n: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.accepted_count() >= n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Clears records, counters and faults. DLR settings and credentials stay.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// The mock's routes (both dialects and the control API) bound to this mock's state, to be
    /// served by another server too.
    pub fn router(&self) -> Router {
        router(self.shared.clone())
    }

    /// Stops serving: held requests are released, pending delivery reports dropped, and open
    /// connections given up to 5 s to finish.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(server) = self.server.take() {
            crate::util::stop_within_grace(server).await;
        }
    }
}

impl Drop for SmsMock {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/cgi-bin/sendsms",
            get(kannel::sendsms).post(kannel::sendsms),
        )
        .route("/api/sms", post(json::send))
        .merge(control::routes())
        .with_state(shared)
}

/// A fresh SMSC message id: a v4 UUID from the thread's generator (no system call per id).
fn new_message_id() -> String {
    uuid::Builder::from_random_bytes(rand::random::<u128>().to_le_bytes())
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_never_print_the_password() {
        let c = super::Credentials {
            username: "clm".into(),
            password: "hunter2".into(),
        };
        let shown = format!(
            "{c:?} {:?}",
            super::SmsMockConfig {
                credentials: Some(c.clone()),
                ..Default::default()
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("clm"));
    }
}
