//! The state every handler shares: fault, auth and response settings behind one small lock, the
//! recorder, the responder and the shutdown token.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::HeaderMap;
use clm_contracts::ChannelId;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::dwh::Dwh;
use super::record::{ChannelStats, Recorder};
use super::responder::Responder;
use super::wire::{Kind, Target};
use super::{ChannelMockConfig, DEFAULT_CAPACITY, ExpectedAuth, ResponsesConfig};
use crate::faults::{FaultState, Faults, Outcome};
use crate::util::{base64, same, scheme_value};

pub(crate) struct Shared {
    pub(crate) channel: ChannelId,
    control: Mutex<Control>,
    pub(crate) recorder: Recorder,
    pub(crate) responder: Responder,
    pub(crate) shutdown: CancellationToken,
}

/// Everything a request reads (and the script and bucket it consumes), locked once per request.
struct Control {
    faults: FaultState,
    auth: Option<ExpectedAuth>,
    /// Behind an `Arc`: every accepted send takes a copy.
    responses: Arc<ResponsesConfig>,
}

/// What one request gets, taken from the settings in a single lock.
pub(crate) struct Decision {
    pub(crate) outcome: Outcome,
    pub(crate) latency: Duration,
    /// False when auth is configured and the request's credentials do not match.
    pub(crate) authorized: bool,
    pub(crate) responses: Arc<ResponsesConfig>,
}

impl Shared {
    pub(crate) fn new(
        channel: ChannelId,
        config: ChannelMockConfig,
        dwh: Option<Dwh>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let capacity = if config.capacity == 0 {
            DEFAULT_CAPACITY
        } else {
            config.capacity
        };
        Ok(Shared {
            channel,
            control: Mutex::new(Control {
                faults: FaultState::new(config.faults),
                auth: config.auth,
                responses: Arc::new(config.responses),
            }),
            recorder: Recorder::new(channel, capacity),
            responder: Responder::new(channel, dwh, shutdown.clone())?,
            shutdown,
        })
    }

    /// Draws the faults for one request and checks its credentials.
    pub(crate) fn decide(&self, headers: &HeaderMap) -> Decision {
        let mut control = self.control();
        let authorized = control
            .auth
            .as_ref()
            .is_none_or(|auth| authorized(auth, headers));
        Decision {
            outcome: control.faults.decide(),
            latency: Duration::from_millis(control.faults.latency_ms()),
            authorized,
            responses: control.responses.clone(),
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

    pub(crate) fn set_responses(&self, responses: ResponsesConfig) {
        if let Err(reason) = responses.validate(self.channel) {
            tracing::warn!(channel = %self.channel, %reason, "channel mock responses: what is wrong is skipped");
        }
        self.control().responses = Arc::new(responses);
    }

    /// Replaces the response settings as `PUT responses` does: a `token` or `hmac_secret` of
    /// `"***"` keeps the one in force (read and replaced under one lock). Returns what is now in
    /// force.
    pub(crate) fn put_responses(&self, responses: ResponsesConfig) -> Arc<ResponsesConfig> {
        let mut control = self.control();
        let responses = Arc::new(responses.keeping_secrets_of(&control.responses));
        control.responses = responses.clone();
        responses
    }

    pub(crate) fn responses(&self) -> Arc<ResponsesConfig> {
        self.control().responses.clone()
    }

    pub(crate) fn set_auth(&self, auth: Option<ExpectedAuth>) {
        self.control().auth = auth;
    }

    /// One response of `kind` for `message_id`, now. Returns its event or response id.
    pub(crate) fn respond_now(&self, message_id: Uuid, kind: &str) -> Result<String, String> {
        let kind = Kind::parse(self.channel, kind)?;
        let config = self.responses();
        let target: Target = self.recorder.target(message_id);
        self.responder.respond_now(&config, target, kind)
    }

    pub(crate) fn stats(&self) -> ChannelStats {
        let counts = self.responder.counts();
        ChannelStats {
            responses_sent: counts.sent,
            responses_failed: counts.failed,
            responses_duplicated: counts.duplicated,
            ..self.recorder.stats()
        }
    }

    /// Clears records, counters, the idempotency memory and faults, and drops pending responses;
    /// auth and response settings stay.
    pub(crate) fn reset(&self) {
        self.set_faults(Faults::default());
        self.responder.reset();
        self.recorder.reset();
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `headers` carry the credentials `auth` asks for.
fn authorized(auth: &ExpectedAuth, headers: &HeaderMap) -> bool {
    match auth {
        ExpectedAuth::ApiKey { header, value } => headers
            .get(header.as_str())
            .is_some_and(|given| same(given.as_bytes(), value.as_bytes())),
        ExpectedAuth::Bearer(token) => {
            scheme_value(headers, "bearer").is_some_and(|given| same(given, token.as_bytes()))
        }
        ExpectedAuth::Basic { username, password } => {
            let expected = base64(format!("{username}:{password}").as_bytes());
            scheme_value(headers, "basic").is_some_and(|given| same(given, expected.as_bytes()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::AUTHORIZATION;

    #[test]
    fn auth_schemes() {
        let mut headers = HeaderMap::new();
        let bearer = ExpectedAuth::Bearer("t0k".into());
        assert!(!authorized(&bearer, &headers));
        headers.insert(AUTHORIZATION, "bearer t0k".parse().unwrap());
        assert!(authorized(&bearer, &headers));
        headers.insert(AUTHORIZATION, "Bearer t0kx".parse().unwrap());
        assert!(!authorized(&bearer, &headers));

        let basic = ExpectedAuth::Basic {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        };
        headers.insert(
            AUTHORIZATION,
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".parse().unwrap(),
        );
        assert!(authorized(&basic, &headers));
        assert!(!authorized(&bearer, &headers));

        let key = ExpectedAuth::ApiKey {
            header: "X-API-Key".into(),
            value: "k".into(),
        };
        assert!(!authorized(&key, &headers));
        headers.insert("x-api-key", "k".parse().unwrap());
        assert!(authorized(&key, &headers));
    }
}
