//! The Redis side of coordination: one multiplexed connection per hub instance (redis's
//! `ConnectionManager`, which reconnects by itself), short deadlines on every command, and one
//! health flag that /readyz reports and whose changes are logged once each way.
//!
//! A monitor task keeps the flag true to life while nothing else talks to Redis: it connects
//! when there is no connection (also when Redis was down at start-up), and PINGs when the
//! connection has been idle or failing. A connection whose PING fails is thrown away and made
//! anew, so a server that stopped answering (rather than refusing) is left behind too.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use clm_contracts::ChannelId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult};
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};

use super::CoordError;

/// A refused connection fails at once; an unanswered one gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// The connection's own deadline for a reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(400);
/// Every command's deadline, waiting for a reconnection included: an outage shows within it.
pub(super) const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the monitor looks at an idle or broken connection.
const MONITOR_EVERY: Duration = Duration::from_millis(500);
/// Keys of this hub unless told otherwise ([`RedisCoordination::with_prefix`]).
pub const DEFAULT_PREFIX: &str = "clm:";

/// Coordination through one Redis server, shared by every hub instance pointed at it. Cheap to
/// clone: clones share the connection and the health flag.
#[derive(Clone)]
pub struct RedisCoordination {
    inner: Arc<Inner>,
    prefix: Arc<str>,
}

struct Inner {
    client: Client,
    /// `host:port` (or socket path) for logs: never the URL, which may hold a password.
    addr: String,
    conn: Mutex<Option<ConnectionManager>>,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
    down_since: Mutex<Option<Instant>>,
    origin: Instant,
    /// Milliseconds after `origin` of the last successful command.
    last_ok_ms: AtomicU64,
}

impl std::fmt::Debug for RedisCoordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCoordination")
            .field("addr", &self.inner.addr)
            .field("prefix", &self.prefix)
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

impl RedisCoordination {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`). A bad URL or refused
    /// credentials are errors; an unreachable server is not: the hub starts degraded and a
    /// background task keeps connecting.
    pub async fn connect(url: &str) -> Result<RedisCoordination, CoordError> {
        let client = Client::open(url)
            .map_err(|e| CoordError::Config(format!("not a usable Redis URL ({e})")))?;
        let addr = client.get_connection_info().addr.to_string();
        let inner = Arc::new(Inner {
            client,
            addr,
            conn: Mutex::new(None),
            healthy: AtomicBool::new(false),
            last_error: Mutex::new(None),
            down_since: Mutex::new(Some(Instant::now())),
            origin: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
        });
        match open(&inner.client).await {
            Ok(conn) => {
                *inner.conn.lock().expect("conn lock") = Some(conn);
                inner.healthy.store(true, Ordering::Release);
                *inner.down_since.lock().expect("down lock") = None;
                info!(redis = %inner.addr, "redis coordination connected");
            }
            Err(e) if e.is_retryable() => {
                warn!(redis = %inner.addr, error = %e, "redis coordination unreachable at start; limits fall back to local shares until it answers");
                *inner.last_error.lock().expect("error lock") = Some(e.to_string());
            }
            Err(e) => return Err(e),
        }
        tokio::spawn(monitor(Arc::downgrade(&inner)));
        Ok(RedisCoordination {
            inner,
            prefix: DEFAULT_PREFIX.into(),
        })
    }

    /// The same connection, with its keys under `prefix` instead of `clm:` (tests, or several
    /// hub deployments sharing one Redis).
    pub fn with_prefix(mut self, prefix: &str) -> RedisCoordination {
        self.prefix = prefix.into();
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The last command (or the monitor's PING) reached Redis.
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Acquire)
    }

    /// Why Redis is unavailable, while it is.
    pub fn last_error(&self) -> Option<String> {
        if self.is_healthy() {
            return None;
        }
        self.inner.last_error.lock().expect("error lock").clone()
    }

    pub(super) fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// Runs one command (or pipeline, or script) with the deadline, and keeps the health flag.
    pub(super) async fn call<T, F, Fut>(&self, f: F) -> Result<T, CoordError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = self.inner.conn.lock().expect("conn lock").clone();
        let Some(conn) = conn else {
            let why = self.last_error().unwrap_or_else(|| "connecting".into());
            return Err(CoordError::NotConnected(why));
        };
        let res = match timeout(OP_TIMEOUT, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CoordError::from(e)),
            Err(_) => Err(CoordError::Timeout(OP_TIMEOUT)),
        };
        match &res {
            Ok(_) => self.inner.mark_ok(),
            Err(e) if e.is_retryable() => self.inner.mark_failed(e),
            Err(e) => {
                debug!(redis = %self.inner.addr, error = %e, "redis refused a coordination command")
            }
        }
        res
    }

    pub(super) async fn open_breaker(&self, channel: ChannelId, until: Duration) {
        let key = self.key(&format!("breaker:{channel}"));
        let ms = (until.as_millis() as u64).max(1);
        let res = self
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("PX")
                    .arg(ms)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if let Err(e) = res {
            debug!(channel = %channel, error = %e, "breaker state not shared");
        }
    }

    pub(super) async fn breaker_open_for(&self, channel: ChannelId) -> Option<Duration> {
        let key = self.key(&format!("breaker:{channel}"));
        let res = self
            .call(|mut c| async move {
                redis::cmd("PTTL")
                    .arg(&key)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
        // -2: no key (closed); -1: no expiry, which this hub never sets: treat as closed rather
        // than stop the channel for good. Errors fail open too: the local breaker still works.
        match res {
            Ok(ms) if ms > 0 => Some(Duration::from_millis(ms as u64)),
            _ => None,
        }
    }

    pub(super) async fn set_paused(
        &self,
        channel: ChannelId,
        paused: bool,
    ) -> Result<(), CoordError> {
        let key = self.key("paused");
        let cmd = if paused { "SADD" } else { "SREM" };
        self.call(|mut c| async move {
            redis::cmd(cmd)
                .arg(&key)
                .arg(channel.as_str())
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    pub(super) async fn paused(&self) -> Result<Vec<ChannelId>, CoordError> {
        let key = self.key("paused");
        let names: Vec<String> = self
            .call(|mut c| async move { redis::cmd("SMEMBERS").arg(&key).query_async(&mut c).await })
            .await?;
        let mut channels: Vec<ChannelId> = names
            .iter()
            .filter_map(|n| match n.parse() {
                Ok(c) => Some(c),
                Err(e) => {
                    debug!(error = %e, "ignoring an unknown channel in the pause set");
                    None
                }
            })
            .collect();
        channels.sort();
        Ok(channels)
    }
}

impl Inner {
    fn mark_ok(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ok_ms.store(ms, Ordering::Relaxed);
        if self.healthy.load(Ordering::Acquire) || self.healthy.swap(true, Ordering::AcqRel) {
            return;
        }
        let down_ms = self
            .down_since
            .lock()
            .expect("down lock")
            .take()
            .map_or(0, |t| t.elapsed().as_millis() as u64);
        info!(redis = %self.addr, down_ms, "redis coordination available again; shared limits and locks resume");
    }

    fn mark_failed(&self, e: &CoordError) {
        *self.last_error.lock().expect("error lock") = Some(e.to_string());
        if self.healthy.swap(false, Ordering::AcqRel) {
            *self.down_since.lock().expect("down lock") = Some(Instant::now());
            warn!(redis = %self.addr, error = %e, "redis coordination unavailable; limits fall back to local shares, singleton locks are not granted");
        }
    }

    fn idle_for(&self) -> Duration {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(last))
    }

    /// One look at the connection: make one if there is none, PING it when idle or failing.
    async fn check(&self) {
        let conn = self.conn.lock().expect("conn lock").clone();
        let Some(mut conn) = conn else {
            match open(&self.client).await {
                Ok(c) => {
                    *self.conn.lock().expect("conn lock") = Some(c);
                    self.mark_ok();
                }
                Err(e) => self.mark_failed(&e),
            }
            return;
        };
        if self.healthy.load(Ordering::Acquire) && self.idle_for() < MONITOR_EVERY {
            return;
        }
        let ping = timeout(OP_TIMEOUT, redis::cmd("PING").query_async::<()>(&mut conn)).await;
        match ping {
            Ok(Ok(())) => self.mark_ok(),
            Ok(Err(e)) => {
                let e = CoordError::from(e);
                self.mark_failed(&e);
                *self.conn.lock().expect("conn lock") = None;
            }
            Err(_) => {
                self.mark_failed(&CoordError::Timeout(OP_TIMEOUT));
                *self.conn.lock().expect("conn lock") = None;
            }
        }
    }
}

/// One connection attempt; reconnections after it are the `ConnectionManager`'s (one attempt
/// each, no backoff of its own: the monitor paces them).
async fn open(client: &Client) -> Result<ConnectionManager, CoordError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
        .set_number_of_retries(0);
    let deadline = CONNECT_TIMEOUT + RESPONSE_TIMEOUT;
    match timeout(
        deadline,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    {
        Ok(res) => res.map_err(CoordError::from),
        Err(_) => Err(CoordError::Timeout(deadline)),
    }
}

/// Runs until the coordination it watches is dropped.
async fn monitor(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(MONITOR_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.check().await;
    }
}
