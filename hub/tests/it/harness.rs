//! Shared test harness: stores on both backends, a hub in-process on port 0, communications.

#![allow(dead_code)]

use std::time::Duration;

use clm_hub::store::Store;
use clm_hub::{Config, Hub};
use clm_mocks::SmsMock;
use serde_json::{Value, json};
use uuid::Uuid;

/// A fresh SQLite store in its own temporary folder.
pub async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    (Store::connect(&url, 4).await.unwrap(), dir)
}

/// The PostgreSQL server `scripts/test.sh` started. Never skipped: without it the test fails.
pub fn pg_url() -> String {
    std::env::var("CLM_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("CLM_TEST_PG_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL")
    })
}

/// A fresh, empty PostgreSQL database on the test server.
pub async fn pg_database() -> String {
    use sqlx::Connection;
    let base = pg_url();
    let name = format!("clm_t_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

pub async fn pg_store() -> Store {
    Store::connect(&pg_database().await, 8).await.unwrap()
}

/// A valid SMS communication as JSON.
pub fn sms_json(campaign: &str, text: &str) -> Value {
    json!({
        "id": Uuid::new_v4().to_string(),
        "campaign_id": campaign,
        "customer_id": "cust-1",
        "channel": "sms",
        "recipient": "+79001234567",
        "content": {"text": text},
    })
}

pub struct TestHub {
    pub hub: Hub,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Config for a hub on SQLite in a temp dir, listening on port 0, sending SMS to `mock`
/// (sandbox off) with the given dialect; `tweak` adjusts it further.
pub fn config_for(
    mock: &SmsMock,
    dialect: &str,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut Config),
) -> Config {
    let file = dir.join("hub.toml");
    std::fs::write(
        &file,
        format!(
            r#"
sandbox = false
data_dir = "{data}"
[server]
listen = "127.0.0.1:0"
[dispatcher]
poll_ms = 20
[channels.sms]
enabled = true
[channels.sms.policy]
rate = 100000.0
burst = 1000
concurrency = 64
timeout_ms = 2000
max_attempts = 5
backoff_initial_ms = 50
backoff_max_ms = 200
[channels.sms.gateway]
dialect = "{dialect}"
url = "{url}"
from = "RTK"
"#,
            data = dir.join("data").display(),
            url = if dialect == "json" {
                mock.json_url()
            } else {
                mock.kannel_url()
            },
        ),
    )
    .unwrap();
    let mut c = Config::load(Some(&file), Vec::new()).unwrap();
    tweak(&mut c);
    c.validate().unwrap();
    c
}

/// The embedded default (no config file: sandbox, SQLite, bundled mocks) with its data in `dir`,
/// listening on port 0, polling every 20 ms.
pub fn sandbox_config(dir: &std::path::Path) -> Config {
    let mut config = Config::load(
        None,
        vec![
            (
                "CLM_HUB__DATA_DIR".to_owned(),
                dir.join("data").display().to_string(),
            ),
            (
                "CLM_HUB__SERVER__LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
        ],
    )
    .unwrap();
    config.dispatcher.poll_ms = 20;
    assert!(config.sandbox);
    config
}

pub async fn start_hub(config: Config, dir: tempfile::TempDir) -> TestHub {
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .unwrap();
    let hub = clm_hub::start(config, listener).await.unwrap();
    TestHub {
        hub,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

impl TestHub {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.hub.base_url())
    }

    pub async fn submit(&self, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url("/v1/communications"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn view(&self, id: &str) -> Value {
        let r = self
            .client
            .get(self.url(&format!("/v1/communications/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET communication {id}");
        r.json().await.unwrap()
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn status(&self, id: &str) -> String {
        self.view(id).await["status"].as_str().unwrap().to_owned()
    }

    /// Polls until every id has one of `statuses`, or panics after `timeout` naming the stragglers.
    pub async fn wait_for(&self, ids: &[String], statuses: &[&str], timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pending: Vec<String> = ids.to_vec();
        loop {
            let mut still = Vec::new();
            for id in &pending {
                let s = self.status(id).await;
                if !statuses.contains(&s.as_str()) {
                    still.push(id.clone());
                }
            }
            if still.is_empty() {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let sample = self.view(&still[0]).await;
                panic!(
                    "{} of {} not in {statuses:?} after {timeout:?}; e.g. {sample:#}",
                    still.len(),
                    ids.len()
                );
            }
            pending = still;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the hub gracefully; the returned folder keeps its data until dropped.
    pub async fn stop(self) -> tempfile::TempDir {
        self.hub.stop().await;
        self._dir
    }
}

/// The RabbitMQ server `scripts/test.sh` started. Never skipped: without it the test fails.
pub fn amqp_url() -> String {
    std::env::var("CLM_TEST_AMQP_URL").unwrap_or_else(|_| {
        panic!("CLM_TEST_AMQP_URL is not set: run the suite with scripts/test.sh, which starts RabbitMQ")
    })
}

/// A fresh vhost on the test broker, so concurrent tests never share queues.
pub fn amqp_vhost() -> String {
    let base = amqp_url();
    let name = format!("clm_t_{}", Uuid::new_v4().simple());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test-services.sh");
    for args in [
        vec!["rabbitmqctl", "add_vhost", name.as_str()],
        vec![
            "rabbitmqctl",
            "set_permissions",
            "-p",
            name.as_str(),
            "guest",
            ".*",
            ".*",
            ".*",
        ],
    ] {
        let out = std::process::Command::new("bash")
            .arg(script)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

/// Publishes raw bodies to `clm.communications` under their routing keys on a channel in confirm
/// mode, and waits until the broker confirmed every one.
pub async fn publish_raw(ch: &lapin::Channel, bodies: &[(String, Vec<u8>)]) {
    let mut confirms = Vec::with_capacity(bodies.len());
    for (key, body) in bodies {
        confirms.push(
            ch.basic_publish(
                clm_hub::amqp::COMMUNICATIONS_EXCHANGE.into(),
                key.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                lapin::BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(matches!(c.await.unwrap(), lapin::Confirmation::Ack(_)));
    }
}

/// Publishes communications to `clm.communications` (routing key = their channel), with
/// publisher confirms, declaring the hub's topology first.
pub async fn publish_communications(amqp: &str, items: &[Value]) {
    let conn = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    clm_hub::amqp::declare_topology(&ch).await.unwrap();
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let bodies: Vec<(String, Vec<u8>)> = items
        .iter()
        .map(|v| {
            let key = v["channel"].as_str().unwrap_or("sms").to_owned();
            (key, serde_json::to_vec(v).unwrap())
        })
        .collect();
    publish_raw(&ch, &bodies).await;
    let _ = conn.close(200, "published".into()).await;
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
