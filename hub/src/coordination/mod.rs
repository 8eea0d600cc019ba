//! Coordination between hub instances (`coordination.url`): `memory` for a single instance, or
//! a Redis server shared by all of them for
//! - a per-channel rate limit that holds whatever the number of instances ([`SharedLimiter`]);
//! - circuit-breaker state: one instance opening a channel's breaker stops the others too;
//! - channel pause flags, set through the API and seen by every instance;
//! - singleton locks, so exactly one instance runs each poller ([`run_singleton`]).
//!
//! If Redis is unavailable the hub keeps sending: limiters fall back to a conservative local
//! share of the rate, breaker state stays local (fail open), pause flags cannot be changed, and
//! no singleton job runs. The log says so once when Redis goes and once when it comes back, and
//! [`Coordination::readiness`] reports it for /readyz.
//!
//! Keys, under a prefix (`clm:` unless [`RedisCoordination::with_prefix`] says otherwise):
//! `rate:<channel>` (GCRA schedule), `breaker:<channel>` (open while it exists), `paused` (a set
//! of channel ids), `lock:<name>` (a lease token).

mod connection;
mod error;
mod limiter;
mod lock;

pub use connection::{DEFAULT_PREFIX, RedisCoordination};
pub use error::CoordError;
pub use limiter::{STALE, SharedLimiter};
pub use lock::{Lease, run_singleton};

use std::time::Duration;

use clm_contracts::ChannelId;

/// Where instances meet: a closed set, so an enum.
#[derive(Debug, Clone)]
pub enum Coordination {
    /// One instance: governor's local limits, local breaker and pause state, every lock granted.
    Local,
    Redis(RedisCoordination),
}

impl Coordination {
    /// `memory` → [`Coordination::Local`]; `redis://…` → [`Coordination::Redis`]. An unreachable
    /// Redis is not an error (the hub starts degraded and keeps connecting); a malformed URL or
    /// refused credentials are.
    pub async fn connect(url: &str) -> Result<Coordination, CoordError> {
        if url == "memory" {
            return Ok(Coordination::Local);
        }
        let redis_url = ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
        if !redis_url {
            return Err(CoordError::Config(
                "expected `memory` or a `redis://host:port` URL".into(),
            ));
        }
        Ok(Coordination::Redis(RedisCoordination::connect(url).await?))
    }

    /// Shared with other instances (Redis), rather than this instance's alone.
    pub fn is_shared(&self) -> bool {
        matches!(self, Coordination::Redis(_))
    }

    /// For /readyz: `"local"` (no Redis configured), `"ok"` (Redis answers) or `"degraded"`
    /// (Redis configured but unavailable: sending on local fallback limits), with the last
    /// error while degraded.
    pub fn readiness(&self) -> (&'static str, Option<String>) {
        match self {
            Coordination::Local => ("local", None),
            Coordination::Redis(r) if r.is_healthy() => ("ok", None),
            Coordination::Redis(r) => ("degraded", r.last_error()),
        }
    }

    /// Tells every instance that `channel`'s breaker is open for `until`. Best effort: when
    /// Redis is unavailable each instance's own breaker still protects the channel.
    pub async fn open_breaker(&self, channel: ChannelId, until: Duration) {
        if let Coordination::Redis(r) = self {
            r.open_breaker(channel, until).await;
        }
    }

    /// How much longer some instance has `channel`'s breaker open; `None` when closed, and when
    /// Redis cannot say (fail open).
    pub async fn breaker_open_for(&self, channel: ChannelId) -> Option<Duration> {
        match self {
            Coordination::Local => None,
            Coordination::Redis(r) => r.breaker_open_for(channel).await,
        }
    }

    /// Pauses or resumes `channel` for every instance. Local: nothing to share (the caller
    /// pauses its own channel).
    pub async fn set_paused(&self, channel: ChannelId, paused: bool) -> Result<(), CoordError> {
        match self {
            Coordination::Local => Ok(()),
            Coordination::Redis(r) => r.set_paused(channel, paused).await,
        }
    }

    /// The channels paused for every instance, sorted. Local: none.
    pub async fn paused(&self) -> Result<Vec<ChannelId>, CoordError> {
        match self {
            Coordination::Local => Ok(Vec::new()),
            Coordination::Redis(r) => r.paused().await,
        }
    }

    /// Takes the singleton lock `name` for `ttl` if no instance holds it. `Ok(None)`: another
    /// does. Local: always granted.
    pub async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Lease>, CoordError> {
        match self {
            Coordination::Local => Ok(Some(lock::local_lease(name, ttl))),
            Coordination::Redis(r) => r.try_lock(name, ttl).await,
        }
    }
}
