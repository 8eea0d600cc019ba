//! Mocks of the CRM side of the SOAP channels (`wsdl/`): the **SAP CRM campaign service** (channel
//! `sap_crm`) and the **CRM ESB** in front of Amdocs CRM 7.5 and CRM B2C (channels `amdocs`,
//! `crm_b2c`), one [`CrmMock`] per service, speaking exactly the WSDL through the contract's codec
//! (`clm_contracts::soap::codec`).
//!
//! - `SendCommunications`: SOAP 1.1 or 1.2, answered in the request's version. The bundle is
//!   recorded and answered per item, in order: `Accepted` with a fresh CRM id (`SAP-…`, `AMD-…`,
//!   `B2C-…`), `Duplicate` with the same id for a message id accepted before, `Rejected` with
//!   `ErrorCode`/`ErrorText` for items a rejection rule of the faults matches
//!   (`reject_customers`, `reject_share`). The ESB keeps one CRM per target system.
//! - `GetCommunicationStatus`: truthful: `Accepted` + CRM id, `Rejected` + text, `Unknown` for
//!   ids never received (also after a bundle was accepted and never answered).
//! - Faults ([`CrmFaults`]): scripted per operation, per target system, by rate; SOAP
//!   `Client`/`Server` faults, plain HTTP 500, slow answers, `accept_then_hang` (the timeout with
//!   an unknown outcome) and `hang`; and the rejection rules.
//! - Callbacks ([`CrmCallbacks`]): `SubmitResponses` envelopes to the hub's response service for
//!   every accepted item, bundled, retried, never before the send's answer went out.
//! - `GET <url>?wsdl` serves the service's WSDL with its address rewritten, and the schemas it
//!   imports beside it; a control API under `/control/sap_crm/` or `/control/crm_esb/`.
//!
//! # Layout
//! - [`CrmMock`] (here): starts the server, and is the handle tests hold; the settings types.
//! - `endpoint`: the SOAP endpoint: faults → envelope → auth → service and operation → answer;
//!   `?wsdl` and the schemas.
//! - `state`: settings behind one small lock, CRM ids, rejections.
//! - `memory`: [`ReceivedBundle`]s (bounded), what the CRM knows per message id (never
//!   truncated), the counters of [`CrmStats`].
//! - `faults`: [`CrmFaults`] and the scripts they consume.
//! - `callbacks`: the `SubmitResponses` sender.
//! - `control`: `/control/<sap_crm|crm_esb>/…`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use clm_mocks::{CrmCallbacks, CrmKind, CrmMock, CrmMockConfig};
//! let callbacks = CrmCallbacks {
//!     url: Some("http://127.0.0.1:8080/soap/responses".into()),
//!     auth: Some(("SAP_CRM".into(), "secret".into())),
//!     ..CrmCallbacks::typical()
//! };
//! let config = CrmMockConfig { callbacks, ..CrmMockConfig::default() };
//! let sap = CrmMock::start(CrmKind::SapCrm, "127.0.0.1:0".parse()?, config).await?;
//! // point the sap_crm connector at sap.url() …
//! sap.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod callbacks;
mod control;
mod endpoint;
mod faults;
mod memory;
mod state;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use clm_contracts::soap::codec::SoapVersion;
use clm_contracts::soap::{CrmResponseKind, CrmService, MAX_BUNDLE, SourceSystem, TargetSystem};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use faults::{CrmFault, CrmFaults};
pub use memory::{CrmStats, ReceivedBundle, ReceivedItem};

use crate::channel::{REDACTED, redact_url};
use state::Shared;

/// Items kept in the bundles [`CrmMock::received_bundles`] returns by default; what the CRM
/// knows per message id and the counters are never truncated.
pub const DEFAULT_CAPACITY: usize = 200_000;

/// Largest request body read; the codec refuses anything over its own limit (8 MiB) with a
/// `Client` fault, so this only bounds what is buffered before it does.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Which CRM service a [`CrmMock`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrmKind {
    /// The SAP CRM campaign service (`sap-crm-campaign-v1.wsdl`), at `/sap/campaign`.
    SapCrm,
    /// The CRM ESB (`crm-esb-v1.wsdl`) for Amdocs CRM 7.5 and CRM B2C, at `/esb/communications`.
    Esb,
}

impl CrmKind {
    /// The name in the control API's path: `sap_crm` or `crm_esb`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CrmKind::SapCrm => "sap_crm",
            CrmKind::Esb => "crm_esb",
        }
    }

    /// The service the mock speaks.
    pub const fn service(self) -> CrmService {
        match self {
            CrmKind::SapCrm => CrmService::SapCrm,
            CrmKind::Esb => CrmService::Esb,
        }
    }

    /// The SOAP endpoint's path: `/sap/campaign` or `/esb/communications`.
    pub const fn path(self) -> &'static str {
        match self {
            CrmKind::SapCrm => "/sap/campaign",
            CrmKind::Esb => "/esb/communications",
        }
    }

    /// The folder the endpoint and its schemas live in.
    const fn dir(self) -> &'static str {
        match self {
            CrmKind::SapCrm => "/sap",
            CrmKind::Esb => "/esb",
        }
    }

    /// Who the mock is when it calls the hub back, for an item of `target`.
    pub const fn source_system(self, target: Option<TargetSystem>) -> SourceSystem {
        match (self, target) {
            (CrmKind::Esb, Some(TargetSystem::CrmB2c)) => SourceSystem::CrmB2c,
            (CrmKind::Esb, _) => SourceSystem::Amdocs,
            (CrmKind::SapCrm, _) => SourceSystem::SapCrm,
        }
    }
}

impl fmt::Display for CrmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a mock starts. `Default`: no auth, default capacity, no faults (so no rejections), no
/// callbacks. `Debug` hides the passwords.
#[derive(Clone, Default)]
pub struct CrmMockConfig {
    /// When set, requests must carry `(username, password)` as HTTP Basic or as a WS-Security
    /// UsernameToken (`PasswordText`); a `Client` fault otherwise.
    pub auth: Option<(String, String)>,
    /// Items kept in the received bundles (oldest bundles dropped first); 0 means
    /// [`DEFAULT_CAPACITY`].
    pub capacity: usize,
    /// Faults and rejection rules in force from the start.
    pub faults: CrmFaults,
    pub callbacks: CrmCallbacks,
}

impl fmt::Debug for CrmMockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrmMockConfig")
            .field(
                "auth",
                &self.auth.as_ref().map(|(user, _)| (user, Redacted)),
            )
            .field("capacity", &self.capacity)
            .field("faults", &self.faults)
            .field("callbacks", &self.callbacks)
            .finish()
    }
}

/// Debugs as `***`.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Callbacks to the hub's response service (`hub-responses-v1.wsdl`, `SubmitResponses`) for
/// every item the mock accepts. Every field has a default, so a control request may send only
/// the fields it changes. `Debug` and [`CrmCallbacks::redacted`] hide the password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CrmCallbacks {
    /// The hub's response service, normally `http://HUB/soap/responses`. Without it nothing is
    /// sent (what would have been is counted as failed).
    pub url: Option<String>,
    /// SOAP version of the envelopes: `"1.1"` (default) or `"1.2"`.
    pub version: String,
    /// `(username, password)`: a WS-Security UsernameToken in every envelope, or HTTP Basic with
    /// `basic`.
    pub auth: Option<(String, String)>,
    /// Send `auth` as HTTP Basic instead of a UsernameToken.
    pub basic: bool,
    /// The contract's `Kind` values sent for every accepted item, in order (`Delivered`,
    /// `Undelivered`, `Shown`, `Read`, `Clicked`, `OfferAccepted`, `OfferDeclined`,
    /// `Interested`, `OptedOut`). Empty: no callbacks.
    pub kinds: Vec<String>,
    /// Before the first envelope of a bundle's callbacks (counted from when its answer went
    /// out), then between envelopes. 50 by default.
    pub delay_ms: u64,
    /// How responses name their item: `"message_id"` (our communication id, default),
    /// `"crm_id"` (the CRM's id only) or `"both"`.
    pub correlate_by: String,
    /// Most responses per envelope (1..=1000); 100 by default.
    pub bundle_size: usize,
}

impl Default for CrmCallbacks {
    fn default() -> Self {
        CrmCallbacks {
            url: None,
            version: "1.1".to_owned(),
            auth: None,
            basic: false,
            kinds: Vec::new(),
            delay_ms: 50,
            correlate_by: "message_id".to_owned(),
            bundle_size: 100,
        }
    }
}

impl fmt::Debug for CrmCallbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrmCallbacks")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("version", &self.version)
            .field(
                "auth",
                &self.auth.as_ref().map(|(user, _)| (user, Redacted)),
            )
            .field("basic", &self.basic)
            .field("kinds", &self.kinds)
            .field("delay_ms", &self.delay_ms)
            .field("correlate_by", &self.correlate_by)
            .field("bundle_size", &self.bundle_size)
            .finish()
    }
}

/// How a callback names its item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Correlate {
    MessageId,
    CrmId,
    Both,
}

impl CrmCallbacks {
    /// The usual life of a communication in a CRM: `Delivered`, then `OfferAccepted`. No URL.
    pub fn typical() -> Self {
        CrmCallbacks {
            kinds: vec!["Delivered".to_owned(), "OfferAccepted".to_owned()],
            ..CrmCallbacks::default()
        }
    }

    /// Checks the values; the error names the field (and the kind) that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return Err(format!("url is not an http(s) URL: {}", redact_url(url))),
            }
        }
        self.soap_version()?;
        for kind in &self.kinds {
            kind.parse::<CrmResponseKind>()
                .map_err(|_| format!("kinds: {kind:?} is no Kind of the contract"))?;
        }
        self.correlate()?;
        if !(1..=MAX_BUNDLE).contains(&self.bundle_size) {
            return Err(format!(
                "bundle_size must be 1..={MAX_BUNDLE}, got {}",
                self.bundle_size
            ));
        }
        Ok(())
    }

    /// A copy with the password shown as [`REDACTED`]: what the control API returns.
    pub fn redacted(&self) -> CrmCallbacks {
        CrmCallbacks {
            auth: self
                .auth
                .as_ref()
                .map(|(user, _)| (user.clone(), REDACTED.to_owned())),
            ..self.clone()
        }
    }

    /// `self` with a password of [`REDACTED`] replaced by `current`'s (no auth when `current`
    /// has none): how the control API applies a `PUT` of what a `GET` returned.
    pub(crate) fn keeping_secrets_of(self, current: &CrmCallbacks) -> CrmCallbacks {
        let auth = match self.auth {
            Some((user, password)) if password == REDACTED => current
                .auth
                .as_ref()
                .map(|(_, current_password)| (user, current_password.clone())),
            auth => auth,
        };
        CrmCallbacks { auth, ..self }
    }

    pub(crate) fn soap_version(&self) -> Result<SoapVersion, String> {
        match self.version.as_str() {
            "1.1" => Ok(SoapVersion::V11),
            "1.2" => Ok(SoapVersion::V12),
            other => Err(format!("version must be \"1.1\" or \"1.2\", got {other:?}")),
        }
    }

    pub(crate) fn correlate(&self) -> Result<Correlate, String> {
        match self.correlate_by.as_str() {
            "message_id" => Ok(Correlate::MessageId),
            "crm_id" => Ok(Correlate::CrmId),
            "both" => Ok(Correlate::Both),
            other => Err(format!(
                "correlate_by must be \"message_id\", \"crm_id\" or \"both\", got {other:?}"
            )),
        }
    }
}

/// A running SAP CRM or CRM ESB mock. Serves until [`CrmMock::shutdown`] or until dropped.
pub struct CrmMock {
    kind: CrmKind,
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl CrmMock {
    /// Starts a mock of `kind` on `bind` (port 0 picks a free port).
    pub async fn start(
        kind: CrmKind,
        bind: SocketAddr,
        config: CrmMockConfig,
    ) -> anyhow::Result<CrmMock> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let mut mock = Self::detached(kind, addr, config)?;
        let app = mock.router();
        let shutdown = mock.shared.shutdown.clone();
        mock.server = Some(tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(error) = serve.await {
                tracing::warn!(%error, %kind, "CRM mock server stopped");
            }
        }));
        tracing::debug!(%addr, %kind, "CRM mock listening");
        Ok(mock)
    }

    /// A mock without a server of its own: serve [`CrmMock::router`] on `addr` yourself (the URLs
    /// the handle gives point there). [`CrmMock::shutdown`] releases held requests and drops
    /// pending callbacks.
    pub fn detached(
        kind: CrmKind,
        addr: SocketAddr,
        config: CrmMockConfig,
    ) -> anyhow::Result<CrmMock> {
        // reqwest is built without a crypto provider; the first caller installs ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Err(reason) = config.faults.validate() {
            bail!("{kind} mock faults: {reason}");
        }
        if kind == CrmKind::SapCrm && !config.faults.target_faults.is_empty() {
            bail!("{kind} mock faults: target_faults are for the ESB only");
        }
        if let Err(reason) = config.callbacks.validate() {
            bail!("{kind} mock callbacks: {reason}");
        }
        let shared = Arc::new(Shared::new(kind, addr, config)?);
        Ok(CrmMock {
            kind,
            addr,
            shared,
            server: None,
        })
    }

    pub fn kind(&self) -> CrmKind {
        self.kind
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The SOAP endpoint: `http://ADDR/sap/campaign` or `http://ADDR/esb/communications`.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.kind.path())
    }

    /// `url()?wsdl`.
    pub fn wsdl_url(&self) -> String {
        format!("{}?wsdl", self.url())
    }

    /// `http://ADDR/control/sap_crm` or `http://ADDR/control/crm_esb`, the prefix of the control
    /// API.
    pub fn control_url(&self) -> String {
        format!("http://{}/control/{}", self.addr, self.kind)
    }

    /// Replaces the faults and rejection rules (out-of-range values are clamped or dropped); the
    /// scripts start over.
    pub fn set_faults(&self, faults: CrmFaults) {
        self.shared.set_faults(faults);
    }

    /// The faults in force, with what is left of the scripts.
    pub fn faults(&self) -> CrmFaults {
        self.shared.faults()
    }

    /// Replaces the callback settings for items accepted from now on. Kinds the contract does
    /// not have are skipped (with a warning); [`CrmCallbacks::validate`] reports them.
    pub fn set_callbacks(&self, callbacks: CrmCallbacks) {
        self.shared.set_callbacks(callbacks);
    }

    pub fn callbacks(&self) -> CrmCallbacks {
        self.shared.callbacks().as_ref().clone()
    }

    /// Replaces the credentials requests must carry (`None`: any).
    pub fn set_auth(&self, auth: Option<(String, String)>) {
        self.shared.set_auth(auth);
    }

    /// Every bundle kept, oldest first.
    pub fn received_bundles(&self) -> Vec<ReceivedBundle> {
        self.shared.memory.bundles(None)
    }

    /// Items answered `Accepted` since start or reset: the distinct message ids the CRM has
    /// (`Duplicate`s do not count again).
    pub fn items_accepted(&self) -> u64 {
        self.shared.memory.counters.stats().items_accepted
    }

    /// How many times `message_id` was accepted: 1 for an item taken once, more when it was
    /// resent after being accepted (each resend answered `Duplicate`), 0 when never accepted.
    pub fn accepted_count(&self, message_id: impl fmt::Display) -> u32 {
        self.shared.memory.accepted_count(&message_id.to_string())
    }

    pub fn stats(&self) -> CrmStats {
        self.shared.stats()
    }

    /// Waits until at least `n` items were accepted ([`CrmMock::items_accepted`]); false on
    /// timeout.
    pub async fn wait_for_items(&self, n: u64, timeout: Duration) -> bool {
        poll_until(timeout, || self.items_accepted() >= n).await
    }

    /// Waits until the hub answered at least `n` callback responses ([`CrmStats::responses_sent`]);
    /// false on timeout.
    pub async fn wait_for_responses(&self, n: u64, timeout: Duration) -> bool {
        poll_until(timeout, || self.stats().responses_sent >= n).await
    }

    /// Clears the bundles, what the CRM knows, the counters and the faults (rejection rules
    /// included), and drops pending callbacks. Auth and callback settings stay.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// The mock's routes (the SOAP endpoint, its WSDL and schemas, the control API) bound to
    /// this mock's state, to be served by another server too.
    pub fn router(&self) -> Router {
        router(self.shared.clone())
    }

    /// Stops serving: held requests are released, pending callbacks dropped, and open
    /// connections given up to 5 s to finish.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(server) = self.server.take() {
            crate::util::stop_within_grace(server).await;
        }
        self.shared.callbacks.close().await;
    }
}

impl Drop for CrmMock {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let kind = shared.kind;
    let mut app = Router::new().route(
        kind.path(),
        post(endpoint::post)
            .get(endpoint::get)
            .layer(DefaultBodyLimit::max(BODY_LIMIT)),
    );
    for (file, text) in endpoint::schemas(kind) {
        app = app.route(
            &format!("{}/{file}", kind.dir()),
            get(move || async move { endpoint::xml_document(text) }),
        );
    }
    app.merge(control::routes(kind)).with_state(shared)
}

async fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_validate_and_redact() {
        assert!(CrmCallbacks::typical().validate().is_ok());
        for (bad, field) in [
            (
                CrmCallbacks {
                    kinds: vec!["delivered".into()],
                    ..CrmCallbacks::default()
                },
                "kinds",
            ),
            (
                CrmCallbacks {
                    version: "2".into(),
                    ..CrmCallbacks::default()
                },
                "version",
            ),
            (
                CrmCallbacks {
                    correlate_by: "id".into(),
                    ..CrmCallbacks::default()
                },
                "correlate_by",
            ),
            (
                CrmCallbacks {
                    bundle_size: 0,
                    ..CrmCallbacks::default()
                },
                "bundle_size",
            ),
            (
                CrmCallbacks {
                    url: Some("ftp://hub".into()),
                    ..CrmCallbacks::default()
                },
                "url",
            ),
        ] {
            assert!(bad.validate().unwrap_err().contains(field), "{field}");
        }

        let current = CrmCallbacks {
            auth: Some(("u".into(), "s3cret".into())),
            url: Some("http://u:pw@hub/soap/responses".into()),
            ..CrmCallbacks::typical()
        };
        let shown = current.redacted();
        assert_eq!(shown.auth, Some(("u".into(), REDACTED.into())));
        assert_eq!(shown.clone().keeping_secrets_of(&current), current);
        let debug = format!("{current:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("pw@"),
            "{debug}"
        );
        let config = CrmMockConfig {
            auth: Some(("in".into(), "t0p".into())),
            callbacks: current.clone(),
            ..CrmMockConfig::default()
        };
        assert!(!format!("{config:?}").contains("t0p"));
        // `***` without a password in force means none, never the literal `***`.
        assert_eq!(
            shown.keeping_secrets_of(&CrmCallbacks::default()).auth,
            None
        );
    }

    #[test]
    fn kinds_name_their_paths_and_source_systems() {
        assert_eq!(CrmKind::SapCrm.path(), "/sap/campaign");
        assert_eq!(CrmKind::Esb.path(), "/esb/communications");
        assert_eq!(CrmKind::Esb.to_string(), "crm_esb");
        assert_eq!(
            CrmKind::Esb.source_system(Some(TargetSystem::CrmB2c)),
            SourceSystem::CrmB2c
        );
        assert_eq!(CrmKind::SapCrm.source_system(None), SourceSystem::SapCrm);
    }
}
