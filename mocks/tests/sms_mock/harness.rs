//! Shared helpers: a started mock, a client, and a tiny receiver of delivery reports.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::routing::any;
use clm_contracts::sms::wire::JsonSendRequest;
use clm_mocks::SmsMock;
use percent_encoding::{NON_ALPHANUMERIC, percent_encode};

pub async fn start() -> SmsMock {
    SmsMock::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A Kannel `GET` with UTF-8 form-encoded parameters.
pub async fn kannel_get(sms: &SmsMock, params: &[(&str, &str)]) -> reqwest::Response {
    client()
        .get(sms.kannel_url())
        .query(params)
        .send()
        .await
        .unwrap()
}

/// `text` as UTF-16BE bytes, percent-encoded, as a Kannel client sends `coding=2`.
pub fn ucs2_query(text: &str) -> String {
    let bytes: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    percent_encode(&bytes, NON_ALPHANUMERIC).to_string()
}

pub fn json_body(client_ref: &str, text: &str, dlr_url: Option<&str>) -> JsonSendRequest {
    JsonSendRequest {
        from: "Shop".to_owned(),
        to: "+79161234567".to_owned(),
        text: text.to_owned(),
        client_ref: client_ref.to_owned(),
        validity_minutes: Some(60),
        dlr_url: dlr_url.map(str::to_owned),
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Report {
    pub method: String,
    pub query: String,
    pub body: String,
}

impl Report {
    pub fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// Takes delivery reports on any path; `/refuse` answers 400.
pub struct Receiver {
    addr: std::net::SocketAddr,
    reports: Arc<Mutex<Vec<Report>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .fallback(any(take))
            .with_state(reports.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, reports }
    }

    pub fn url(&self) -> String {
        format!("http://{}/dlr", self.addr)
    }

    pub fn reports(&self) -> Vec<Report> {
        self.reports.lock().unwrap().clone()
    }

    /// Waits up to 3 s for `n` reports.
    pub async fn wait_for(&self, n: usize) -> Vec<Report> {
        for _ in 0..300 {
            let reports = self.reports();
            if reports.len() >= n {
                return reports;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} reports, got {:?}", self.reports());
    }
}

async fn take(
    State(reports): State<Arc<Mutex<Vec<Report>>>>,
    method: Method,
    uri: axum::http::Uri,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> StatusCode {
    if uri.path().ends_with("/refuse") {
        return StatusCode::BAD_REQUEST;
    }
    reports.lock().unwrap().push(Report {
        method: method.to_string(),
        query: query.unwrap_or_default(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    StatusCode::OK
}

/// Polls `condition` for up to 3 s.
pub async fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..300 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
