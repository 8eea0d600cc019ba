//! Singleton jobs (pollers and the like): a lease in Redis that exactly one instance holds at a
//! time, and [`run_singleton`], which keeps one job running on whichever instance holds it.
//!
//! The lease is `SET key token NX PX ttl` with a random token; renewing and releasing compare
//! the token first (in Lua, so atomically), so an instance whose lease expired cannot extend or
//! delete its successor's. While Redis is unavailable no lease is granted or renewed: a job stops
//! when its lease can no longer be proven held, and none runs until Redis answers again (at most
//! one, rather than exactly one, is what an outage leaves).

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::connection::RedisCoordination;
use super::{CoordError, Coordination};

/// KEYS[1]: the lock; ARGV: token, ttl_ms. If the lock still holds this token, extend it to
/// ttl_ms and return 1; else (expired, or someone else's) return 0.
static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// KEYS[1]: the lock; ARGV[1]: token. If the lock still holds this token, delete it and return
/// 1; else leave it (it is someone else's by now) and return 0.
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// A held singleton lock. Dropping it without [`Lease::release`] leaves it to expire after its
/// TTL.
#[derive(Debug)]
pub struct Lease {
    name: String,
    ttl: Duration,
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// One instance: nobody to share with, always held.
    Local,
    Redis {
        coord: RedisCoordination,
        key: String,
        token: String,
    },
}

impl Lease {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Extends the lease by its TTL. `Ok(false)`: it was lost (expired and maybe taken).
    pub async fn renew(&self) -> Result<bool, CoordError> {
        let Held::Redis { coord, key, token } = &self.held else {
            return Ok(true);
        };
        let ms = ttl_ms(self.ttl);
        let renewed: i64 = coord
            .call(
                |mut c| async move { RENEW.key(key).arg(token).arg(ms).invoke_async(&mut c).await },
            )
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the lock up now, if still held. `Ok(false)`: it had already been lost.
    pub async fn release(self) -> Result<bool, CoordError> {
        let Held::Redis { coord, key, token } = &self.held else {
            return Ok(true);
        };
        let released: i64 = coord
            .call(|mut c| async move { RELEASE.key(key).arg(token).invoke_async(&mut c).await })
            .await?;
        Ok(released == 1)
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl RedisCoordination {
    pub(super) async fn try_lock(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, CoordError> {
        let key = self.key(&format!("lock:{name}"));
        let token = format!("{:032x}", rand::random::<u128>());
        let ms = ttl_ms(ttl);
        let set: Option<String> = self
            .call(|mut c| {
                let cmd = redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        Ok(set.map(|_| Lease {
            name: name.to_owned(),
            ttl,
            held: Held::Redis {
                coord: self.clone(),
                key,
                token,
            },
        }))
    }
}

pub(super) fn local_lease(name: &str, ttl: Duration) -> Lease {
    Lease {
        name: name.to_owned(),
        ttl,
        held: Held::Local,
    }
}

/// Keeps `job` running on exactly one instance until `shutdown`: tries to take the lock `name`
/// (every ttl/3 while another instance holds it), runs the job while holding it, renews it every
/// ttl/3, and stops the job when the lock is lost or can no longer be renewed before it expires.
///
/// The job gets a token cancelled when it must stop (lock lost, shutdown); it should return
/// soon after. One that has not returned within ttl/3 is dropped. A job that returns by itself
/// gives the lock up and is started again (here or elsewhere) after ttl/3.
pub async fn run_singleton<F, Fut>(
    coord: &Coordination,
    name: &str,
    ttl: Duration,
    shutdown: CancellationToken,
    mut job: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let every = (ttl / 3).max(Duration::from_millis(10));
    let mut unavailable = false;
    while !shutdown.is_cancelled() {
        let lease = match coord.try_lock(name, ttl).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                wait(every, &shutdown).await;
                continue;
            }
            Err(e) => {
                if !unavailable {
                    warn!(job = name, error = %e, "singleton lock unavailable; job waits for Redis");
                    unavailable = true;
                }
                wait(every, &shutdown).await;
                continue;
            }
        };
        unavailable = false;
        info!(job = name, "singleton lock taken; job starting");
        let stop = shutdown.child_token();
        let run = job(stop.clone());
        tokio::pin!(run);
        let mut renewed_at = Instant::now();
        let end = loop {
            // The job keeps being polled while the lease is renewed.
            let renewal = async {
                sleep(every).await;
                lease.renew().await
            };
            let renewed = tokio::select! {
                () = &mut run => break End::Returned,
                () = stop.cancelled() => break End::Shutdown,
                r = renewal => r,
            };
            match renewed {
                Ok(true) => renewed_at = Instant::now(),
                Ok(false) => break End::Lost,
                // Still ours until the TTL runs out from the last renewal; not beyond.
                Err(_) if renewed_at.elapsed() + every < ttl => {}
                Err(_) => break End::Lost,
            }
        };
        if end == End::Lost {
            warn!(job = name, "singleton lock lost; stopping the job");
        }
        stop.cancel();
        if end != End::Returned && tokio::time::timeout(every, &mut run).await.is_err() {
            warn!(job = name, "singleton job did not stop in time; dropped");
        }
        if end != End::Lost {
            if let Err(e) = lease.release().await {
                warn!(job = name, error = %e, "singleton lock not released; it expires by itself");
            }
            info!(job = name, "singleton job stopped; lock released");
        }
        if !shutdown.is_cancelled() {
            wait(every, &shutdown).await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The job returned by itself.
    Returned,
    Shutdown,
    /// Renewal failed: another instance may hold the lock now.
    Lost,
}

async fn wait(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = sleep(d) => {}
        () = shutdown.cancelled() => {}
    }
}
