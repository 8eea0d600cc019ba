//! Shared helpers: started mocks, send bodies, and a small webhook receiver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clm_contracts::ChannelId;
use clm_contracts::channels::{ErrorBody, eissd, elk, wink};
use clm_mocks::{ChannelMock, ChannelMockConfig};
use serde_json::{Value, json};
use uuid::Uuid;

/// Generous: nothing here should take long, but a loaded CI machine may be slow.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn start(channel: ChannelId) -> ChannelMock {
    start_with(channel, ChannelMockConfig::default()).await
}

pub async fn start_with(channel: ChannelId, config: ChannelMockConfig) -> ChannelMock {
    ChannelMock::start(channel, "127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A valid send request of `channel` for `message_id`.
pub fn request(channel: ChannelId, message_id: Uuid) -> Value {
    match channel {
        ChannelId::Wink => json!({
            "message_id": message_id,
            "account_id": "wink-acc-1",
            "title": "New season",
            "body": "Watch now",
            "deep_link": "wink://series/1",
        }),
        ChannelId::Elk => json!({
            "message_id": message_id,
            "account_id": "lk-1",
            "title": "Offer",
            "text": "Internet 500",
            "offer_code": "HI500",
            "surfaces": ["mobile", "web"],
        }),
        ChannelId::Eissd => json!({
            "message_id": message_id,
            "customer_id": "cust-1",
            "offer_code": "TV-3M",
            "campaign_id": "summer",
        }),
        other => panic!("no request for {other}"),
    }
}

/// The contract's send path of `channel`.
pub fn send_path(channel: ChannelId) -> &'static str {
    match channel {
        ChannelId::Wink => wink::SEND_PATH,
        ChannelId::Elk => elk::SEND_PATH,
        ChannelId::Eissd => eissd::SEND_PATH,
        other => panic!("no send path for {other}"),
    }
}

/// The URL a connector sends to: the base URL + the contract's `SEND_PATH`.
pub fn send_url(mock: &ChannelMock) -> String {
    format!("{}{}", mock.base_url(), send_path(mock.channel()))
}

/// POSTs `body` as JSON to the mock's send URL.
pub async fn send(mock: &ChannelMock, body: &Value) -> reqwest::Response {
    client()
        .post(send_url(mock))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The answer's `ErrorBody`, checked to be one.
pub async fn error_body(response: reqwest::Response) -> ErrorBody {
    let value: Value = response.json().await.unwrap();
    assert!(value["error"].is_string(), "not an ErrorBody: {value}");
    serde_json::from_value(value).unwrap()
}

/// One webhook the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Hook {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub answered: u16,
}

impl Hook {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Hooks {
    got: Mutex<Vec<Hook>>,
    /// Statuses the next webhooks get, before 200.
    script: Mutex<VecDeque<u16>>,
}

/// Takes webhooks on any path under `/ingest/`.
pub struct Receiver {
    addr: std::net::SocketAddr,
    hooks: Arc<Hooks>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let hooks = Arc::new(Hooks::default());
        let app = Router::new()
            .route("/ingest/{channel}", post(take))
            .with_state(hooks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, hooks }
    }

    pub fn url(&self, channel: ChannelId) -> String {
        format!("http://{}/ingest/{channel}", self.addr)
    }

    /// The next webhooks are answered with these statuses, then 200.
    pub fn script(&self, statuses: &[u16]) {
        self.hooks.script.lock().unwrap().extend(statuses);
    }

    /// Every webhook received, whatever it was answered.
    pub fn all(&self) -> Vec<Hook> {
        self.hooks.got.lock().unwrap().clone()
    }

    /// Webhooks answered 2xx.
    pub fn taken(&self) -> Vec<Hook> {
        self.all()
            .into_iter()
            .filter(|h| (200..300).contains(&h.answered))
            .collect()
    }

    /// Waits for `n` webhooks answered 2xx.
    pub async fn wait_for(&self, n: usize) -> Vec<Hook> {
        assert!(
            wait_until(|| self.taken().len() >= n).await,
            "expected {n} webhooks, got {:?}",
            self.all()
        );
        self.taken()
    }
}

async fn take(State(hooks): State<Arc<Hooks>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = hooks.script.lock().unwrap().pop_front().unwrap_or(200);
    hooks.got.lock().unwrap().push(Hook {
        headers,
        body,
        answered: status,
    });
    StatusCode::from_u16(status).unwrap()
}

/// Polls `condition` for up to [`WAIT`].
pub async fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}
