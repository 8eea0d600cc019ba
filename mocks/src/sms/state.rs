//! The state every handler shares: fault, DLR and credential settings behind one small lock, the
//! recorder, the DLR sender and the shutdown token.

use std::borrow::Cow;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::dlr::{DlrConfig, DlrSender};
use super::record::{Recorder, SmsStats};
use super::{Credentials, SmsMockConfig};
use crate::faults::{FaultState, Faults, Outcome};

pub(crate) struct Shared {
    control: Mutex<Control>,
    pub(crate) recorder: Recorder,
    pub(crate) dlr: DlrSender,
    pub(crate) shutdown: CancellationToken,
}

/// Everything a request reads (and the script and bucket it consumes), locked once per request.
struct Control {
    faults: FaultState,
    dlr: DlrConfig,
    credentials: Option<Credentials>,
}

/// What one request gets, taken from the settings in a single lock.
pub(crate) struct Decision {
    pub(crate) outcome: Outcome,
    pub(crate) latency: Duration,
    pub(crate) dlr: DlrConfig,
    /// False when credentials are configured and the request's do not match.
    pub(crate) authorized: bool,
}

/// The answer to a send, before the dialect turns it into its wire form.
pub(crate) enum Verdict {
    Accept,
    /// The request itself is wrong: credentials, a missing field.
    Reject(u16, Cow<'static, str>),
    Throttle(u64),
    /// An injected error status.
    Fail(u16),
    Hold,
}

impl Verdict {
    /// Faults answer first: they stand for the gateway's infrastructure, which fails before the
    /// application looks at credentials or fields. Then `check` may reject the request.
    pub(crate) fn new(
        outcome: Outcome,
        check: impl FnOnce() -> Result<(), (u16, Cow<'static, str>)>,
    ) -> Self {
        match outcome {
            Outcome::Hold => Verdict::Hold,
            Outcome::Throttled { retry_after_secs } => Verdict::Throttle(retry_after_secs),
            Outcome::Error(status) => Verdict::Fail(status),
            Outcome::Normal => match check() {
                Ok(()) => Verdict::Accept,
                Err((status, reason)) => Verdict::Reject(status, reason),
            },
        }
    }

    /// The status recorded for this answer (0: none).
    pub(crate) fn status(&self, accepted: u16) -> u16 {
        match self {
            Verdict::Accept => accepted,
            Verdict::Reject(status, _) | Verdict::Fail(status) => *status,
            Verdict::Throttle(_) => 429,
            Verdict::Hold => 0,
        }
    }
}

impl Shared {
    pub(crate) fn new(config: SmsMockConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Ok(Shared {
            control: Mutex::new(Control {
                faults: FaultState::new(config.faults),
                dlr: config.dlr,
                credentials: config.credentials,
            }),
            recorder: Recorder::new(config.capacity),
            dlr: DlrSender::new(shutdown.clone())?,
            shutdown,
        })
    }

    /// Draws the faults for one request. `credentials` is what a dialect that authenticates
    /// received (`None` for a dialect without credentials).
    pub(crate) fn decide(&self, credentials: Option<(&[u8], &[u8])>) -> Decision {
        let mut control = self.control();
        let authorized = match (&control.credentials, credentials) {
            (Some(expected), Some((username, password))) => {
                expected.username.as_bytes() == username && expected.password.as_bytes() == password
            }
            _ => true,
        };
        Decision {
            outcome: control.faults.decide(),
            latency: Duration::from_millis(control.faults.latency_ms()),
            dlr: control.dlr,
            authorized,
        }
    }

    /// Waits out the injected latency; returns early on shutdown.
    pub(crate) async fn pause(&self, latency: Duration) {
        crate::faults::pause(latency, &self.shutdown).await;
    }

    /// Holds a request that must not be answered, until shutdown.
    pub(crate) async fn hold(&self) {
        crate::faults::hold(&self.shutdown).await;
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        self.control().faults.set(faults);
    }

    pub(crate) fn faults(&self) -> Faults {
        self.control().faults.current()
    }

    pub(crate) fn set_dlr(&self, dlr: DlrConfig) {
        self.control().dlr = dlr;
    }

    pub(crate) fn dlr_config(&self) -> DlrConfig {
        self.control().dlr
    }

    pub(crate) fn set_credentials(&self, credentials: Option<Credentials>) {
        self.control().credentials = credentials;
    }

    pub(crate) fn stats(&self) -> SmsStats {
        let (dlr_sent, dlr_failed) = self.dlr.counts();
        SmsStats {
            dlr_sent,
            dlr_failed,
            ..self.recorder.stats()
        }
    }

    /// Clears records, counters and faults; DLR settings and credentials stay.
    pub(crate) fn reset(&self) {
        self.set_faults(Faults::default());
        self.recorder.reset();
        self.dlr.reset_counts();
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
