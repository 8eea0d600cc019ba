//! The state every connection and the control API share: faults, feedback settings and
//! credentials behind one small lock, the limits, the recorder, the feedback sender and the
//! shutdown token.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::faults::{Decision, FaultState, SmtpFaults, SmtpScriptStep, Stage};
use super::feedback::{EmailFeedback, Sender};
use super::record::{Recorder, SmtpStats};
use super::{DEFAULT_CAPACITY, SmtpMockConfig};
use crate::Credentials;

/// The protocol limits of a mock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_message_size: usize,
    pub(crate) max_line_length: usize,
    pub(crate) max_recipients: usize,
}

pub(crate) struct Shared {
    pub(crate) hostname: String,
    pub(crate) limits: Limits,
    control: Mutex<Control>,
    pub(crate) recorder: Recorder,
    pub(crate) sender: Sender,
    pub(crate) shutdown: CancellationToken,
}

/// What the settings are now; every stage reads them afresh, so changes apply mid-run.
struct Control {
    faults: FaultState,
    /// Behind an `Arc`: every message taken takes a copy.
    feedback: Arc<EmailFeedback>,
    credentials: Option<Credentials>,
}

impl Shared {
    pub(crate) fn new(config: SmtpMockConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let capacity = if config.capacity == 0 {
            DEFAULT_CAPACITY
        } else {
            config.capacity
        };
        Ok(Shared {
            hostname: config.hostname,
            limits: Limits {
                max_message_size: config.max_message_size.max(1),
                // Room for at least "." and CRLF.
                max_line_length: config.max_line_length.max(3),
                max_recipients: config.max_recipients.max(1),
            },
            control: Mutex::new(Control {
                faults: FaultState::new(config.faults),
                feedback: Arc::new(config.feedback),
                credentials: config.credentials,
            }),
            recorder: Recorder::new(capacity),
            sender: Sender::new(shutdown.clone())?,
            shutdown,
        })
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(self.control().faults.latency_ms())
    }

    pub(crate) fn begin_transaction(&self) -> SmtpScriptStep {
        self.control().faults.begin_transaction()
    }

    pub(crate) fn rcpt_faults(
        &self,
        step: &SmtpScriptStep,
        sender: &str,
        recipient: &str,
    ) -> Decision {
        self.control().faults.rcpt(step, sender, recipient)
    }

    pub(crate) fn stage_faults(&self, step: &SmtpScriptStep, stage: Stage) -> Decision {
        self.control().faults.stage(step, stage)
    }

    pub(crate) fn set_faults(&self, faults: SmtpFaults) {
        self.control().faults.set(faults);
    }

    pub(crate) fn faults(&self) -> SmtpFaults {
        self.control().faults.current()
    }

    pub(crate) fn feedback(&self) -> Arc<EmailFeedback> {
        self.control().feedback.clone()
    }

    pub(crate) fn set_feedback(&self, feedback: EmailFeedback) {
        if let Err(reason) = feedback.validate() {
            tracing::warn!(%reason, "smtp mock feedback: what is wrong is skipped");
        }
        self.control().feedback = Arc::new(feedback);
    }

    /// Replaces the feedback settings as `PUT feedback` does: secrets of `"***"` keep the ones in
    /// force (read and replaced under one lock). Returns what is now in force.
    pub(crate) fn put_feedback(&self, feedback: EmailFeedback) -> Arc<EmailFeedback> {
        let mut control = self.control();
        let feedback = Arc::new(feedback.keeping_secrets_of(&control.feedback));
        control.feedback = feedback.clone();
        feedback
    }

    pub(crate) fn credentials(&self) -> Option<Credentials> {
        self.control().credentials.clone()
    }

    pub(crate) fn set_credentials(&self, credentials: Option<Credentials>) {
        self.control().credentials = credentials;
    }

    pub(crate) fn stats(&self) -> SmtpStats {
        let counts = self.sender.counts();
        SmtpStats {
            feedback_sent: counts.sent,
            feedback_failed: counts.failed,
            feedback_retries: counts.retries,
            ..self.recorder.stats()
        }
    }

    /// Clears records, counters, faults and the greylist memory, and drops pending feedback.
    /// Feedback settings and credentials stay.
    pub(crate) fn reset(&self) {
        self.control().faults.reset();
        self.sender.reset();
        self.recorder.reset();
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
