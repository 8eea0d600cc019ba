//! Channel families, one folder each, holding everything channel-specific: the family's settings
//! (`[channels.<id>]`, its own serde type), how its connectors are built, its bundled sandbox
//! mocks, and its [`Plugin`]: the hooks the generic parts (dispatcher, intake, ingest, API,
//! metrics) call without naming a channel.
//!
//! - [`sms`]: `sms` (Kannel or a JSON gateway; delivery reports; segment count at intake);
//! - [`json_http`]: `wink`, `elk` (HTTPS JSON out, signed webhooks back);
//! - [`eissd`]: `eissd` (HTTP JSON out, responses read from a DWH table by a singleton poller);
//! - [`crm`]: `sap_crm`, `amdocs`, `crm_b2c` (SOAP bundles out; the SOAP response service
//!   `/soap/responses` and the reconciler of `unknown` bundles);
//! - [`email`]: `email` (SMTP relay; suppression gate and 5.1.x/5.7.x follow-up, `/ingest/email`,
//!   tracking routes `/t/…`, `/u/…`).
//!
//! [`family`] maps each [`ChannelId`] to exactly one [`Family`] (an exhaustive match: a new id
//! does not compile until it is served). `ChannelId` stays a closed enum: it is the external
//! contract.

pub mod crm;
pub mod eissd;
pub mod email;
pub mod json_http;
pub mod sms;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use clm_connectors::{Connector, Outcome, Report};
use clm_contracts::{ChannelId, Communication};
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::Sandbox;
use crate::config::Config;
use crate::state::Shared;
use crate::store::Claimed;

/// What a family needs to build its connectors and plug-in.
pub struct Build<'a> {
    pub config: &'a Config,
    /// The hub's base URL as channels reach it (reports, callbacks, tracking links).
    pub public_url: &'a str,
    /// The bundled mocks, in sandbox mode: the family's connectors send to them.
    pub sandbox: Option<&'a Sandbox>,
}

/// A family's runtime part: one plug-in for the family, and a connector per enabled channel.
pub struct Built {
    pub plugin: Arc<dyn Plugin>,
    pub connectors: Vec<(ChannelId, Arc<dyn Connector>)>,
}

/// What a family's sandbox mocks are started with, and where they go.
pub struct Mocks<'a> {
    pub config: &'a Config,
    /// The hub's base URL, where the mocks send their responses.
    pub public_url: &'a str,
    pub sandbox: &'a mut Sandbox,
}

/// A channel family, known at compile time: which ids it serves, its sandbox mocks, and how its
/// runtime part is built. Plain data and functions (a `static` per family), so a family states
/// only what is its own.
pub struct Family {
    /// The family's name (logs, the registry test).
    pub name: &'static str,
    /// The channel ids this family serves.
    pub serves: &'static [ChannelId],
    /// Starts the bundled mocks of this family's enabled channels (called only when one is).
    pub start_mocks: for<'a, 'b> fn(&'a mut Mocks<'b>) -> BoxFuture<'a, anyhow::Result<()>>,
    /// Builds the family's plug-in (always: its routes answer whether or not a channel is
    /// enabled) and the connectors of its enabled channels. A setting that cannot be used fails
    /// here, before any task starts.
    pub build: fn(&Build<'_>) -> anyhow::Result<Built>,
}

impl Family {
    pub const fn new(
        name: &'static str,
        serves: &'static [ChannelId],
        start_mocks: for<'a, 'b> fn(&'a mut Mocks<'b>) -> BoxFuture<'a, anyhow::Result<()>>,
        build: fn(&Build<'_>) -> anyhow::Result<Built>,
    ) -> Family {
        Family {
            name,
            serves,
            start_mocks,
            build,
        }
    }
}

impl Mocks<'_> {
    /// The config, the hub's URL and the sandbox, to use at once.
    pub fn parts(&mut self) -> (&Config, &str, &mut Sandbox) {
        (self.config, self.public_url, self.sandbox)
    }
}

/// Every family, once.
pub fn families() -> [&'static Family; 5] {
    [
        &sms::FAMILY,
        &json_http::FAMILY,
        &eissd::FAMILY,
        &crm::FAMILY,
        &email::FAMILY,
    ]
}

/// The family that serves `id`.
pub fn family(id: ChannelId) -> &'static Family {
    match id {
        ChannelId::Sms => &sms::FAMILY,
        ChannelId::Wink | ChannelId::Elk => &json_http::FAMILY,
        ChannelId::Eissd => &eissd::FAMILY,
        ChannelId::SapCrm | ChannelId::Amdocs | ChannelId::CrmB2c => &crm::FAMILY,
        ChannelId::Email => &email::FAMILY,
    }
}

/// What a channel's gate says about a claimed batch, right before its attempts.
#[derive(Debug)]
pub enum Gate {
    /// Everything may be sent.
    Open,
    /// These (indices into the batch) fail now, with their reason; the rest may be sent.
    Refuse(Vec<(usize, String)>),
    /// The gate cannot decide now (what it needs is unavailable): the whole batch goes back to
    /// the store, due after `wait`. Not knowing is not sending.
    Closed { wait: Duration, why: &'static str },
}

/// A request to `/ingest/{channel}`, authenticated.
pub struct ReportRequest<'a> {
    pub channel: ChannelId,
    pub method: &'a Method,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// A background job of a family, and its name for the shutdown log.
pub struct Job {
    pub name: String,
    pub task: JoinHandle<()>,
}

/// A family's hooks into the generic parts. One instance per family, shared by its channels
/// (`Channel::plugin`) and listed in `Shared::plugins`; every hook has a do-nothing default.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// Intake: how many parts a communication costs at the channel (SMS segments); stored with
    /// it and reported in its events.
    fn parts(&self, _comm: &Communication) -> u32 {
        1
    }

    /// Dispatcher: before the attempts of a claimed batch (e-mail: the suppression list).
    async fn gate(&self, _shared: &Shared, _batch: &[Claimed]) -> Gate {
        Gate::Open
    }

    /// Dispatcher: after each attempt, with its outcome (e-mail: a 5.1.x answer suppresses).
    async fn after_attempt(&self, _shared: &Shared, _claimed: &Claimed, _outcome: &Outcome) {}

    /// Ingest: a report or webhook to `/ingest/{channel}` as a [`Report`], or why it is
    /// malformed (answered 400).
    fn parse_report(&self, req: &ReportRequest<'_>) -> Result<Report, String> {
        Err(format!(
            "channel `{}` has no response parser in this build",
            req.channel
        ))
    }

    /// Ingest: a family that records its reports itself answers them here (e-mail events also
    /// suppress addresses); `None` lets [`Plugin::parse_report`] and the generic path do it.
    async fn ingest(&self, _shared: &Shared, _req: &ReportRequest<'_>) -> Option<Response> {
        None
    }

    /// Ingest: the name the channel's own report gives a field that
    /// [`crate::store::IncomingResponse::check`] refused.
    fn reported_field(&self, _channel: ChannelId, field: &'static str) -> String {
        field.to_owned()
    }

    /// API: the family's own routes (with their body limits), merged into the hub's router.
    fn routes(self: Arc<Self>, _config: &Config) -> Option<Router<Arc<Shared>>> {
        None
    }

    /// Background jobs (singletons among instances where they must be), started once the hub
    /// serves and awaited at shutdown after the dispatchers.
    fn jobs(self: Arc<Self>, _shared: &Arc<Shared>, _shutdown: &CancellationToken) -> Vec<Job> {
        Vec::new()
    }

    /// `/metrics`: the family's own series, in the Prometheus text format.
    fn metrics(&self, _shared: &Shared, _out: &mut String) {}
}

/// The plug-in of a channel built without one (tests that assemble a channel by hand): no
/// hooks.
pub struct NoHooks;

impl Plugin for NoHooks {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_is_served_by_exactly_one_family() {
        for id in ChannelId::ALL {
            let serving: Vec<&str> = families()
                .iter()
                .filter(|f| f.serves.contains(&id))
                .map(|f| f.name)
                .collect();
            assert_eq!(serving.len(), 1, "{id} is served by {serving:?}");
            assert_eq!(
                family(id).name,
                serving[0],
                "{id}: registry and family disagree"
            );
        }
        let names: std::collections::BTreeSet<&str> = families().iter().map(|f| f.name).collect();
        assert_eq!(names.len(), families().len(), "family names are unique");
        for f in families() {
            for id in f.serves {
                assert!(
                    ChannelId::ALL.contains(id),
                    "{} serves an unknown id",
                    f.name
                );
            }
        }
    }
}
