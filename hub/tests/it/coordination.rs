//! Coordination through a real Redis (`CLM_TEST_REDIS_URL`, started by scripts/test-services.sh):
//! each "instance" is its own connection, each test its own key prefix. Outage tests run their
//! own redis-server on a free port and never touch the shared one.

use crate::harness::free_port;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clm_contracts::ChannelId;
use clm_hub::coordination::{CoordError, Coordination, RedisCoordination, SharedLimiter};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The Redis server `scripts/test-services.sh` started. Never skipped: without it the test fails.
fn redis_url() -> String {
    std::env::var("CLM_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "CLM_TEST_REDIS_URL is not set: start Redis with \
             CLM_TEST_SERVICES=\"postgres redis\" scripts/test-services.sh start, then \
             eval \"$(CLM_TEST_SERVICES=\"postgres redis\" scripts/test-services.sh env)\""
        )
    })
}

fn unique_prefix() -> String {
    format!("clm_t_{}:", Uuid::new_v4().simple())
}

/// One hub instance's coordination: its own connection, keys under `prefix`.
async fn instance_at(url: &str, prefix: &str) -> Coordination {
    let redis = RedisCoordination::connect(url)
        .await
        .expect("connect to Redis");
    Coordination::Redis(redis.with_prefix(prefix))
}

async fn instances(n: usize) -> Vec<Coordination> {
    let (url, prefix) = (redis_url(), unique_prefix());
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(instance_at(&url, &prefix).await);
    }
    all
}

/// Permits `limiter` hands out within `window`.
async fn permits_within(limiter: Arc<SharedLimiter>, window: Duration) -> u64 {
    let end = Instant::now() + window;
    let mut n = 0;
    loop {
        tokio::select! {
            () = limiter.until_ready() => n += 1,
            () = sleep_until(end) => return n,
        }
    }
}

fn assert_near(what: &str, got: f64, want: f64, tolerance: f64) {
    eprintln!("{what}: {got} (want {want})");
    assert!(
        (got - want).abs() <= want * tolerance,
        "{what}: got {got}, want {want} ± {:.0}%",
        tolerance * 100.0
    );
}

/// A redis-server of this test's own, which it may stop and start again.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let mut r = OwnRedis {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        r.restart().await;
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/test-services.sh installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            sleep(Duration::from_millis(50)).await;
        }
        panic!("own redis-server did not listen on port {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_together_keep_one_channel_rate() {
    let (rate, burst, window) = (200.0, 10, Duration::from_secs(5));
    let mut tasks = Vec::new();
    let mut limiters = Vec::new();
    for coord in instances(3).await {
        let l = Arc::new(SharedLimiter::new(&coord, ChannelId::Sms, rate, burst, 0.5));
        limiters.push(l.clone());
        tasks.push(tokio::spawn(async move {
            let _coord = coord;
            permits_within(l, window).await
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    let total: u64 = counts.iter().sum();
    let trips: Vec<u64> = limiters.iter().map(|l| l.round_trips()).collect();
    eprintln!("per instance: {counts:?}, round trips: {trips:?}");
    let want = rate * window.as_secs_f64() + f64::from(burst);
    assert_near("permits of three instances", total as f64, want, 0.05);
    assert!(
        counts.iter().all(|&c| c > 100),
        "every instance gets its turn: {counts:?}"
    );
    for l in &limiters {
        assert!(!l.degraded());
        assert!(
            l.round_trips() * 3 < total,
            "permits come in batches: {} round trips for {total} permits",
            l.round_trips()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_alone_keeps_the_rate() {
    let coord = instances(1).await.remove(0);
    let l = Arc::new(SharedLimiter::new(&coord, ChannelId::Sms, 200.0, 10, 0.5));
    let n = permits_within(l.clone(), Duration::from_secs(3)).await;
    assert_near(
        "permits of one instance",
        n as f64,
        200.0 * 3.0 + 10.0,
        0.05,
    );
    assert_eq!(coord.readiness(), ("ok", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_burst_permits_come_one_interval_apart() {
    let coord = instances(1).await.remove(0);
    let l = SharedLimiter::new(&coord, ChannelId::Email, 100.0, 20, 0.5);
    let t0 = Instant::now();
    for _ in 0..20 {
        l.until_ready().await;
    }
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "the burst goes at once: {:?}",
        t0.elapsed()
    );
    for _ in 0..10 {
        l.until_ready().await;
    }
    // 30 permits with a burst of 20 at 100/s cannot all be had before 10/R = 100 ms from the
    // first, however fast or loaded the machine is (only the lower bound is load-independent).
    let paced = t0.elapsed();
    assert!(
        paced >= Duration::from_millis(85),
        "10 permits beyond the burst must wait about 10/R = 100 ms, took {paced:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_rates_take_few_round_trips() {
    let coord = instances(1).await.remove(0);
    let l = Arc::new(SharedLimiter::new(
        &coord,
        ChannelId::Wink,
        5000.0,
        100,
        0.5,
    ));
    let n = permits_within(l.clone(), Duration::from_secs(2)).await;
    assert_near("permits at 5000/s", n as f64, 5000.0 * 2.0 + 100.0, 0.05);
    assert!(
        l.round_trips() < n / 50,
        "{} round trips for {n} permits",
        l.round_trips()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_falls_back_to_the_local_share() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let t0 = Instant::now();
    let coord = instance_at(&url, &unique_prefix()).await;
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "start-up is not held up"
    );
    let (state, error) = coord.readiness();
    assert_eq!(state, "degraded");
    assert!(error.is_some());
    let l = Arc::new(SharedLimiter::new(&coord, ChannelId::Sms, 200.0, 10, 0.5));
    let n = permits_within(l.clone(), Duration::from_secs(2)).await;
    // 100/s with a burst of 5.
    assert_near("permits on the fallback", n as f64, 100.0 * 2.0 + 5.0, 0.10);
    assert!(l.degraded());
    assert_eq!(coord.breaker_open_for(ChannelId::Sms).await, None);
    let err = coord.paused().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_degrades_to_the_local_share_and_recovers() {
    let mut redis = OwnRedis::start().await;
    let coord = instance_at(&redis.url(), &unique_prefix()).await;
    let l = Arc::new(SharedLimiter::new(&coord, ChannelId::Sms, 200.0, 10, 0.5));
    let shared = permits_within(l.clone(), Duration::from_secs(1)).await;
    assert_near("permits before the outage", shared as f64, 210.0, 0.10);
    assert!(!l.degraded());

    redis.stop();
    // Even with nothing sent, /readyz learns of it (within a second on an idle machine).
    let t = Instant::now();
    while coord.readiness().0 != "degraded" {
        assert!(t.elapsed() < Duration::from_secs(3), "outage unnoticed");
        sleep(Duration::from_millis(20)).await;
    }
    permits_within(l.clone(), Duration::from_millis(100)).await;
    assert!(l.degraded(), "the limiter noticed the outage");
    let n = permits_within(l.clone(), Duration::from_secs(2)).await;
    assert_near("permits during the outage", n as f64, 100.0 * 2.0, 0.10);

    redis.restart().await;
    let t = Instant::now();
    while l.degraded() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no recovery within 5 s"
        );
        l.until_ready().await;
    }
    assert_eq!(coord.readiness(), ("ok", None));
    let n = permits_within(l.clone(), Duration::from_secs(1)).await;
    assert!(n >= 190, "the full rate is back: {n}");
}

#[tokio::test]
async fn breaker_opened_by_one_instance_is_seen_by_another_until_it_expires() {
    let all = instances(2).await;
    let (a, b) = (&all[0], &all[1]);
    assert_eq!(b.breaker_open_for(ChannelId::Sms).await, None);
    a.open_breaker(ChannelId::Sms, Duration::from_millis(400))
        .await;
    let left = b.breaker_open_for(ChannelId::Sms).await.expect("open");
    assert!(
        left > Duration::ZERO && left <= Duration::from_millis(400),
        "{left:?}"
    );
    assert_eq!(b.breaker_open_for(ChannelId::Email).await, None);
    sleep(Duration::from_millis(500)).await;
    assert_eq!(b.breaker_open_for(ChannelId::Sms).await, None);
}

#[tokio::test]
async fn pause_flags_round_trip_across_instances() {
    let all = instances(2).await;
    let (a, b) = (&all[0], &all[1]);
    assert!(b.paused().await.unwrap().is_empty());
    a.set_paused(ChannelId::Sms, true).await.unwrap();
    a.set_paused(ChannelId::Amdocs, true).await.unwrap();
    assert_eq!(
        b.paused().await.unwrap(),
        vec![ChannelId::Amdocs, ChannelId::Sms]
    );
    b.set_paused(ChannelId::Sms, false).await.unwrap();
    assert_eq!(a.paused().await.unwrap(), vec![ChannelId::Amdocs]);
}

#[tokio::test]
async fn only_one_instance_holds_a_lock_until_release_or_expiry() {
    let all = instances(2).await;
    let (a, b) = (&all[0], &all[1]);
    let ttl = Duration::from_millis(300);
    let lease = a.try_lock("dwh-poller", ttl).await.unwrap().expect("free");
    assert!(b.try_lock("dwh-poller", ttl).await.unwrap().is_none());
    assert!(b.try_lock("other-job", ttl).await.unwrap().is_some());
    assert!(lease.release().await.unwrap());
    let _b_lease = b
        .try_lock("dwh-poller", ttl)
        .await
        .unwrap()
        .expect("released");
    assert!(a.try_lock("dwh-poller", ttl).await.unwrap().is_none());
    sleep(Duration::from_millis(400)).await;
    assert!(
        a.try_lock("dwh-poller", ttl).await.unwrap().is_some(),
        "an expired lease frees the lock"
    );
}

#[tokio::test]
async fn renewing_keeps_a_lock_and_a_lost_lock_cannot_be_renewed() {
    let all = instances(2).await;
    let (a, b) = (&all[0], &all[1]);
    let ttl = Duration::from_millis(300);
    let lease = a.try_lock("poller", ttl).await.unwrap().expect("free");
    for _ in 0..6 {
        sleep(Duration::from_millis(100)).await;
        assert!(lease.renew().await.unwrap());
        assert!(b.try_lock("poller", ttl).await.unwrap().is_none());
    }
    sleep(Duration::from_millis(400)).await;
    let taken = b.try_lock("poller", ttl).await.unwrap().expect("expired");
    assert!(!lease.renew().await.unwrap(), "a lost lease is not renewed");
    assert!(!lease.release().await.unwrap(), "nor released");
    assert!(taken.renew().await.unwrap(), "the new holder keeps it");
}

/// A job for `run_singleton` that counts how many run at once and which instance ran it.
fn counting_job(
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
    stopped: Arc<AtomicUsize>,
) -> impl FnMut(CancellationToken) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    move |stop| {
        let (running, most, started, stopped) = (
            running.clone(),
            most.clone(),
            started.clone(),
            stopped.clone(),
        );
        Box::pin(async move {
            started.fetch_add(1, Ordering::SeqCst);
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            stop.cancelled().await;
            running.fetch_sub(1, Ordering::SeqCst);
            stopped.fetch_add(1, Ordering::SeqCst);
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_singleton_job_runs_on_one_instance_and_moves_when_it_stops() {
    let all = instances(2).await;
    let ttl = Duration::from_millis(300);
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut started = Vec::new();
    let mut shutdowns = Vec::new();
    let mut tasks = Vec::new();
    for coord in all {
        let (s, st) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let shutdown = CancellationToken::new();
        let job = counting_job(running.clone(), most.clone(), s.clone(), st);
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            clm_hub::coordination::run_singleton(&coord, "poller", ttl, token, job).await;
        }));
        started.push(s);
        shutdowns.push(shutdown);
    }
    sleep(Duration::from_secs(1)).await;
    let runs: Vec<usize> = started.iter().map(|s| s.load(Ordering::SeqCst)).collect();
    assert_eq!(runs.iter().sum::<usize>(), 1, "one job started: {runs:?}");
    let holder = runs.iter().position(|&n| n == 1).unwrap();
    let other = 1 - holder;

    shutdowns[holder].cancel();
    tasks.remove(holder).await.unwrap();
    let t = Instant::now();
    while started[other].load(Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < Duration::from_secs(2), "the job did not move");
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");
    shutdowns[other].cancel();
    tasks.remove(0).await.unwrap();
    assert_eq!(running.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_singleton_job_whose_lock_is_lost_is_stopped() {
    let (url, prefix) = (redis_url(), unique_prefix());
    let coord = instance_at(&url, &prefix).await;
    let ttl = Duration::from_millis(300);
    let counters: Vec<Arc<AtomicUsize>> = (0..4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let job = counting_job(
        counters[0].clone(),
        counters[1].clone(),
        counters[2].clone(),
        counters[3].clone(),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { clm_hub::coordination::run_singleton(&coord, "poller", ttl, shutdown, job).await }
    });
    sleep(Duration::from_millis(200)).await;
    assert_eq!(counters[0].load(Ordering::SeqCst), 1, "the job runs");

    // Someone else takes the lock (as if this instance had stalled past its TTL).
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SET")
        .arg(format!("{prefix}lock:poller"))
        .arg("someone-else")
        .arg("PX")
        .arg(2000)
        .exec_async(&mut conn)
        .await
        .unwrap();
    sleep(Duration::from_millis(300)).await;
    assert_eq!(counters[3].load(Ordering::SeqCst), 1, "the job was stopped");
    assert_eq!(
        counters[2].load(Ordering::SeqCst),
        1,
        "and not started again"
    );
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn memory_coordination_is_local_and_grants_everything() {
    let coord = Coordination::connect("memory").await.unwrap();
    assert!(!coord.is_shared());
    assert_eq!(coord.readiness(), ("local", None));
    assert!(
        coord
            .try_lock("poller", Duration::from_secs(1))
            .await
            .unwrap()
            .is_some()
    );
    coord.set_paused(ChannelId::Sms, true).await.unwrap();
    assert!(coord.paused().await.unwrap().is_empty());
    assert_eq!(coord.breaker_open_for(ChannelId::Sms).await, None);
    let l = SharedLimiter::new(&coord, ChannelId::Sms, 100.0, 5, 0.5);
    for _ in 0..5 {
        l.until_ready().await;
    }
    assert!(!l.degraded());

    let shared = Coordination::connect(&redis_url()).await.unwrap();
    assert!(shared.is_shared());
    let bad = Coordination::connect("http://127.0.0.1:6379")
        .await
        .unwrap_err();
    assert!(matches!(bad, CoordError::Config(_)) && !bad.is_retryable());
}
