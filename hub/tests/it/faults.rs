//! Faults on the production stack (PostgreSQL + RabbitMQ), with the real `clm-hub` binary as a
//! child process: killed with SIGKILL mid-run and restarted; stopped with SIGTERM mid-run.

use std::process::{Child, Command};
use std::time::Duration;

use clm_contracts::Status;
use clm_mocks::{DlrConfig, Faults, SmsMock};
use serde_json::Value;

use crate::harness::*;

struct HubProcess {
    child: Child,
}

impl HubProcess {
    fn start(config: &std::path::Path, log: &std::path::Path) -> HubProcess {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_clm-hub"))
            .arg("--config")
            .arg(config)
            .env("CLM_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        HubProcess { child }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn wait(mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the hub did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(
    dir: &std::path::Path,
    mock: &SmsMock,
    pg: &str,
    amqp: &str,
    port: u16,
) -> std::path::PathBuf {
    let path = dir.join("hub.toml");
    std::fs::write(
        &path,
        format!(
            r#"
sandbox = false
data_dir = "{data}"
[server]
listen = "127.0.0.1:{port}"
[store]
url = "{pg}"
[queue]
url = "{amqp}"
[dispatcher]
poll_ms = 20
lease_secs = 10
[channels.sms]
enabled = true
[channels.sms.policy]
rate = 400.0
burst = 10
concurrency = 16
timeout_ms = 5000
backoff_initial_ms = 100
backoff_max_ms = 500
[channels.sms.gateway]
dialect = "kannel"
url = "{url}"
"#,
            data = dir.join("data").display(),
            url = mock.kannel_url(),
        ),
    )
    .unwrap();
    path
}

async fn counts(store: &clm_hub::store::Store, campaign: &str) -> Vec<(Status, u64)> {
    store.count_by_status(Some(campaign)).await.unwrap()
}

fn n_of(rows: &[(Status, u64)], s: Status) -> u64 {
    rows.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_mid_run_loses_nothing_and_resends_at_most_what_was_in_flight() {
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    mock.set_dlr(DlrConfig {
        enabled: false,
        ..DlrConfig::default()
    });
    mock.set_faults(Faults {
        latency_ms: 20,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (pg, amqp) = (pg_database().await, amqp_vhost());
    let config = write_config(dir.path(), &mock, &pg, &amqp, free_port());
    let store = clm_hub::store::Store::connect(&pg, 2).await.unwrap();

    let n = 2000_u64;
    let items: Vec<Value> = (0..n)
        .map(|i| sms_json("killed", &format!("m{i}")))
        .collect();
    let first = HubProcess::start(&config, &dir.path().join("hub1.log"));
    publish_communications(&amqp, &items).await;
    // Let it get well into the run, then kill it without warning.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while mock.accepted_count() < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first hub never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.signal("-KILL");
    first.wait(Duration::from_secs(10));
    // Requests the dead hub had on the wire finish at the mock within its latency.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_kill = mock.accepted_count();
    assert!(at_kill < n, "killed too late to prove anything");
    // "In flight" at the kill: taken by the gateway, but no outcome committed yet (on the wire,
    // or answered and waiting in the finisher's next batch). Only those can go out twice.
    let recorded = n_of(&counts(&store, "killed").await, Status::Sent);
    let in_flight = at_kill - recorded;

    let second = HubProcess::start(&config, &dir.path().join("hub2.log"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let rows = counts(&store, "killed").await;
        let total: u64 = rows.iter().map(|(_, c)| c).sum();
        if n_of(&rows, Status::Sent) == n {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after restart: {rows:?} (stored {total})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every communication was sent; only those in flight at the kill may have gone twice.
    let stats = mock.stats();
    let dupes = stats.duplicates;
    assert!(
        dupes <= in_flight,
        "{dupes} duplicates, but only {in_flight} sends were unrecorded at the kill"
    );
    assert_eq!(
        stats.accepted - dupes,
        n,
        "every communication reached the gateway"
    );
    second.signal("-TERM");
    assert!(second.wait(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_sends_and_strands_no_claim() {
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    mock.set_dlr(DlrConfig {
        enabled: false,
        ..DlrConfig::default()
    });
    mock.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (pg, amqp) = (pg_database().await, amqp_vhost());
    let config = write_config(dir.path(), &mock, &pg, &amqp, free_port());
    let store = clm_hub::store::Store::connect(&pg, 2).await.unwrap();
    let items: Vec<Value> = (0..500)
        .map(|i| sms_json("termed", &format!("m{i}")))
        .collect();
    let hub = HubProcess::start(&config, &dir.path().join("hub.log"));
    publish_communications(&amqp, &items).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while mock.stats().total < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hub.signal("-TERM");
    assert!(
        hub.wait(Duration::from_secs(30)).success(),
        "clean exit on SIGTERM"
    );
    let rows = counts(&store, "termed").await;
    assert_eq!(
        n_of(&rows, Status::Sending),
        0,
        "no claim stranded: {rows:?}"
    );
    assert_eq!(
        n_of(&rows, Status::Sent),
        mock.accepted_count(),
        "every answered send recorded: {rows:?}"
    );
    assert!(mock.accepted_count() < 500, "stopped mid-run");
}
