//! Mapping, answers, auth, transport errors and TLS of the JSON HTTP connector, against servers
//! started in the test on 127.0.0.1; webhook and DWH row parsing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use clm_contracts::channels::{eissd, elk, wink};
use clm_contracts::{ChannelId, Communication, Content, ResponseKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use super::*;
use crate::outcome::{Report, ReportError, ReportRef};

// ---------------------------------------------------------------------------------------------
// Fixtures

const TOKEN: &str = "tok-SECRET-4f1a";

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn comm(channel: ChannelId) -> Communication {
    Communication {
        id: Uuid::parse_str("0190a5e2-7c1d-7b3e-9f00-3c2a1b4d5e6f").unwrap(),
        campaign_id: "camp-1".into(),
        customer_id: "cust-1".into(),
        channel,
        recipient: "acc-1".into(),
        content: Content {
            subject: Some("Title".into()),
            text: Some("Hello".into()),
            offer_code: Some("OFF-1".into()),
            ..Content::default()
        },
        not_before: Some(ts("2025-06-01T08:00:00Z")),
        expires_at: Some(ts("2025-06-02T08:00:00Z")),
        priority: 5,
        timezone: None,
        attributes: BTreeMap::new(),
    }
}

fn endpoint(base_url: &str, auth: Auth) -> Endpoint {
    Endpoint {
        base_url: base_url.into(),
        auth,
        tls: TlsFiles::default(),
        connect_timeout: Duration::from_secs(5),
        pool_size: 2,
    }
}

fn bearer() -> Auth {
    Auth::Bearer {
        token: TOKEN.into(),
    }
}

fn example(file: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contracts/examples")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a mock server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

type SeenLog = Arc<Mutex<Vec<Seen>>>;

/// A handler answering every request with `status`, `headers` and `body`.
fn answer(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> impl Fn() -> Response + Clone + Send + Sync + 'static {
    move || {
        let mut r = Response::builder().status(status);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(Body::from(body)).unwrap()
    }
}

fn recording_router(
    seen: SeenLog,
    reply: impl Fn() -> Response + Clone + Send + Sync + 'static,
) -> Router {
    Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let seen = seen.clone();
        let reply = reply.clone();
        async move {
            seen.lock().unwrap().push(Seen {
                path: uri.path().to_owned(),
                headers,
                body,
            });
            reply()
        }
    })
}

/// A plain HTTP mock on 127.0.0.1; returns its base URL and what it sees.
async fn mock(reply: impl Fn() -> Response + Clone + Send + Sync + 'static) -> (String, SeenLog) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = SeenLog::default();
    let app = recording_router(seen.clone(), reply);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

async fn send_to(
    channel: ChannelId,
    reply: impl Fn() -> Response + Clone + Send + Sync + 'static,
) -> (Outcome, Vec<Seen>) {
    let (base, seen) = mock(reply).await;
    let connector = JsonHttpConnector::new(channel, endpoint(&base, bearer())).unwrap();
    let outcome = connector.send(&comm(channel)).await;
    let seen = seen.lock().unwrap().clone();
    (outcome, seen)
}

fn assert_no_secret(outcome: &Outcome) {
    let text = format!("{outcome:?}");
    assert!(!text.contains(TOKEN), "{text}");
    assert!(!text.contains("/v1/"), "the request URL leaked: {text}");
}

// ---------------------------------------------------------------------------------------------
// Mapping

/// A communication that maps onto the contract's example request of `channel`.
fn comm_for_example(channel: ChannelId, example: &serde_json::Value) -> Communication {
    let s = |k: &str| example[k].as_str().map(str::to_owned);
    let t = |k: &str| example[k].as_str().map(ts);
    let mut c = comm(channel);
    c.id = Uuid::parse_str(example["message_id"].as_str().unwrap()).unwrap();
    c.not_before = None;
    c.expires_at = t("expires_at");
    c.content.offer_code = None;
    match channel {
        ChannelId::Wink => {
            c.recipient = s("account_id").unwrap();
            c.content.subject = s("title");
            c.content.text = s("body");
            c.content
                .params
                .insert("deep_link".into(), example["deep_link"].clone());
            c.content
                .params
                .insert("image_url".into(), example["image_url"].clone());
            // Other params are the template's business, not Wink's.
            c.content.params.insert("name".into(), "Ivan".into());
        }
        ChannelId::Elk => {
            c.recipient = s("account_id").unwrap();
            c.content.subject = s("title");
            c.content.text = s("text");
            c.content.offer_code = s("offer_code");
            c.attributes.insert("surfaces".into(), "web, mobile".into());
        }
        ChannelId::Eissd => {
            c.customer_id = s("customer_id").unwrap();
            c.campaign_id = s("campaign_id").unwrap();
            c.content.offer_code = s("offer_code");
            c.not_before = t("valid_from");
            c.expires_at = t("valid_until");
        }
        _ => unreachable!(),
    }
    c
}

#[test]
fn each_channel_maps_onto_its_contract_example() {
    for (channel, file) in [
        (ChannelId::Wink, "wink-send-request.json"),
        (ChannelId::Elk, "elk-send-request.json"),
        (ChannelId::Eissd, "eissd-send-request.json"),
    ] {
        let expected: serde_json::Value = serde_json::from_slice(&example(file)).unwrap();
        let c = comm_for_example(channel, &expected);
        let body = request::body(channel, &c).unwrap();
        let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(got, expected, "{channel}");
        // And the strict contract type takes it.
        match channel {
            ChannelId::Wink => drop(serde_json::from_slice::<wink::SendRequest>(&body).unwrap()),
            ChannelId::Elk => drop(serde_json::from_slice::<elk::SendRequest>(&body).unwrap()),
            _ => drop(serde_json::from_slice::<eissd::SendRequest>(&body).unwrap()),
        }
    }
}

#[test]
fn wink_mapping_takes_the_params_and_leaves_out_what_is_absent() {
    let c = comm(ChannelId::Wink);
    let r = request::wink_request(&c).unwrap();
    assert_eq!(r.message_id, c.id);
    assert_eq!(r.account_id, "acc-1");
    assert_eq!(r.title, "Title");
    assert_eq!(r.body, "Hello");
    assert_eq!((r.deep_link, r.image_url), (None, None));
    assert_eq!(r.expires_at, c.expires_at);
    let json: serde_json::Value =
        serde_json::from_slice(&request::body(ChannelId::Wink, &c).unwrap()).unwrap();
    assert!(json.get("deep_link").is_none(), "{json}");

    let mut c = comm(ChannelId::Wink);
    c.content.params.insert("deep_link".into(), 42.into());
    let e = request::body(ChannelId::Wink, &c).unwrap_err();
    assert!(e.contains("content.params.deep_link"), "{e}");

    let mut c = comm(ChannelId::Wink);
    c.content
        .params
        .insert("image_url".into(), serde_json::Value::Null);
    assert_eq!(request::wink_request(&c).unwrap().image_url, None);

    let mut c = comm(ChannelId::Wink);
    c.content.subject = None;
    let e = request::body(ChannelId::Wink, &c).unwrap_err();
    assert!(e.contains("content.subject"), "{e}");
    let mut c = comm(ChannelId::Wink);
    c.content.text = Some("  ".into());
    let e = request::body(ChannelId::Wink, &c).unwrap_err();
    assert!(e.contains("content.text"), "{e}");
}

#[test]
fn elk_mapping_reads_the_surfaces_attribute() {
    let mut c = comm(ChannelId::Elk);
    let r = request::elk_request(&c).unwrap();
    assert_eq!(r.surfaces, vec![elk::Surface::Web, elk::Surface::Mobile]);
    assert_eq!(r.offer_code.as_deref(), Some("OFF-1"));
    assert_eq!((r.title.as_str(), r.text.as_str()), ("Title", "Hello"));

    c.attributes.insert("surfaces".into(), "mobile".into());
    assert_eq!(
        request::elk_request(&c).unwrap().surfaces,
        vec![elk::Surface::Mobile]
    );
    c.attributes.insert("surfaces".into(), "web,tv".into());
    let e = request::body(ChannelId::Elk, &c).unwrap_err();
    assert!(e.contains("attributes.surfaces"), "{e}");

    let mut c = comm(ChannelId::Elk);
    c.content.offer_code = None;
    let json: serde_json::Value =
        serde_json::from_slice(&request::body(ChannelId::Elk, &c).unwrap()).unwrap();
    assert!(json.get("offer_code").is_none(), "{json}");
    c.content.text = None;
    assert!(request::body(ChannelId::Elk, &c).is_err());
}

#[test]
fn eissd_mapping_needs_the_offer_code() {
    let c = comm(ChannelId::Eissd);
    let r = request::eissd_request(&c).unwrap();
    assert_eq!(r.customer_id, "cust-1");
    assert_eq!(r.campaign_id, "camp-1");
    assert_eq!(r.offer_code, "OFF-1");
    assert_eq!(r.valid_from, c.not_before);
    assert_eq!(r.valid_until, c.expires_at);

    let mut c = comm(ChannelId::Eissd);
    c.content.offer_code = None;
    let e = request::body(ChannelId::Eissd, &c).unwrap_err();
    assert!(e.contains("content.offer_code"), "{e}");
}

#[tokio::test]
async fn an_unmappable_communication_fails_without_a_request() {
    let mut c = comm(ChannelId::Wink);
    c.content.subject = None;
    let (base, seen) = mock(answer(200, &[], "{}")).await;
    let connector = JsonHttpConnector::new(ChannelId::Wink, endpoint(&base, bearer())).unwrap();
    match connector.send(&c).await {
        Outcome::Fail { reason, .. } => assert!(reason.contains("content.subject"), "{reason}"),
        o => panic!("{o:?}"),
    }
    // A communication of another channel is refused too.
    let c = comm(ChannelId::Elk);
    assert!(matches!(connector.send(&c).await, Outcome::Fail { .. }));
    assert!(seen.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Answers

#[tokio::test]
async fn a_2xx_is_sent_with_the_channels_id() {
    for (channel, body, id) in [
        (
            ChannelId::Wink,
            r#"{"wink_id":"w-1","accepted_at":"2025-06-01T10:00:00Z","queue":3}"#,
            "w-1",
        ),
        (ChannelId::Elk, r#"{"elk_id":"e-1"}"#, "e-1"),
        (ChannelId::Eissd, r#"{"eissd_id":"x-1"}"#, "x-1"),
    ] {
        let (outcome, seen) = send_to(channel, answer(201, &[], body)).await;
        match &outcome {
            Outcome::Sent {
                external_id,
                answer,
            } => {
                assert_eq!(external_id.as_deref(), Some(id), "{channel}");
                assert!(answer.starts_with("201: {"), "{answer}");
            }
            o => panic!("{channel}: {o:?}"),
        }
        assert_no_secret(&outcome);
        assert_eq!(seen.len(), 1);
        let req = &seen[0];
        assert_eq!(req.path, request::send_path(channel).unwrap());
        assert_eq!(req.headers["content-type"], "application/json");
        let sent: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(sent["message_id"], comm(channel).id.to_string());
    }
}

#[tokio::test]
async fn the_send_path_is_appended_to_the_base_url_prefix() {
    let (base, seen) = mock(answer(200, &[], r#"{"elk_id":"e-1"}"#)).await;
    let connector = JsonHttpConnector::new(
        ChannelId::Elk,
        endpoint(&format!("{base}/api/"), Auth::None),
    )
    .unwrap();
    assert!(connector.send_url().ends_with("/api/v1/messages"));
    assert!(matches!(
        connector.send(&comm(ChannelId::Elk)).await,
        Outcome::Sent { .. }
    ));
    assert_eq!(seen.lock().unwrap()[0].path, "/api/v1/messages");
}

#[tokio::test]
async fn a_2xx_with_an_unreadable_answer_is_still_sent() {
    for body in [
        "<html>ok</html>",
        "",
        r#"{"wink_id":""}"#,
        r#"{"id":"w-1"}"#,
    ] {
        let (outcome, _) = send_to(ChannelId::Wink, answer(200, &[], body)).await;
        match outcome {
            Outcome::Sent {
                external_id: None,
                answer,
            } => assert!(answer.contains("unreadable answer"), "{body}: {answer}"),
            o => panic!("{body}: {o:?}"),
        }
    }
}

#[tokio::test]
async fn an_answer_over_64_kib_is_unreadable_and_not_read_further() {
    use std::sync::atomic::Ordering;
    const LONG: usize = 10 * 1024 * 1024;
    for status in [200, 503] {
        let (url, written) = crate::outcome::tests::long_answer(status, LONG).await;
        let connector = JsonHttpConnector::new(
            ChannelId::Wink,
            endpoint(url.trim_end_matches('/'), bearer()),
        )
        .unwrap();
        let outcome = connector.send(&comm(ChannelId::Wink)).await;
        match (status, &outcome) {
            (
                200,
                Outcome::Sent {
                    external_id: None,
                    answer,
                },
            )
            | (503, Outcome::Retry { answer, .. }) => {
                assert!(answer.contains("longer than 64 KiB"), "{answer}");
                assert!(answer.len() < 300, "an excerpt, not the answer: {answer}");
            }
            _ => panic!("{status}: {outcome:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = written.load(Ordering::Relaxed);
        assert!(
            sent < LONG,
            "{status}: the whole answer was read ({sent} bytes)"
        );
    }
}

#[tokio::test]
async fn a_429_throttles_and_honours_retry_after() {
    let (outcome, _) = send_to(
        ChannelId::Wink,
        answer(
            429,
            &[("retry-after", "7")],
            r#"{"error":"rate_limited","message":"slow down"}"#,
        ),
    )
    .await;
    match &outcome {
        Outcome::Retry {
            after,
            throttled,
            answer,
            ..
        } => {
            assert_eq!(*after, Some(Duration::from_secs(7)));
            assert!(throttled);
            assert_eq!(answer, "429: rate_limited: slow down");
        }
        o => panic!("{o:?}"),
    }
    assert_no_secret(&outcome);
}

#[tokio::test]
async fn server_errors_retry_without_throttling() {
    let (outcome, _) = send_to(
        ChannelId::Elk,
        answer(503, &[("retry-after", "3")], r#"{"error":"unavailable"}"#),
    )
    .await;
    match outcome {
        Outcome::Retry {
            after,
            throttled,
            answer,
            ..
        } => {
            assert_eq!(after, Some(Duration::from_secs(3)));
            assert!(!throttled);
            assert_eq!(answer, "503: unavailable");
        }
        o => panic!("{o:?}"),
    }
    let (outcome, _) = send_to(ChannelId::Elk, answer(500, &[], "boom")).await;
    match outcome {
        Outcome::Retry {
            after,
            throttled,
            answer,
            ..
        } => {
            assert_eq!(after, None);
            assert!(!throttled);
            assert_eq!(answer, "500: boom");
        }
        o => panic!("{o:?}"),
    }
}

#[tokio::test]
async fn refusals_fail_with_the_error_body() {
    for status in [400, 404, 422] {
        let (outcome, _) = send_to(
            ChannelId::Eissd,
            answer(
                status,
                &[],
                r#"{"error":"invalid_offer","message":"no such offer","trace":"t-1"}"#,
            ),
        )
        .await;
        match outcome {
            Outcome::Fail { reason, answer } => {
                assert!(reason.contains(&status.to_string()), "{reason}");
                assert_eq!(answer, format!("{status}: invalid_offer: no such offer"));
            }
            o => panic!("{status}: {o:?}"),
        }
    }
    // Not an error body: the raw text, as an excerpt.
    let (outcome, _) = send_to(ChannelId::Eissd, answer(400, &[], "bad\nthings")).await;
    assert_eq!(outcome.answer(), "400: bad things");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (outcome, seen) = send_to(
        ChannelId::Wink,
        answer(307, &[("location", "/elsewhere")], ""),
    )
    .await;
    assert!(!matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
    assert_eq!(seen.len(), 1, "the redirect was followed");
}

// ---------------------------------------------------------------------------------------------
// Auth

#[tokio::test]
async fn each_auth_kind_sends_its_header() {
    let cases = [
        (Auth::None, None, None),
        (bearer(), Some(format!("Bearer {TOKEN}")), None),
        (
            Auth::Basic {
                username: "Aladdin".into(),
                password: "open sesame".into(),
            },
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".to_owned()),
            None,
        ),
        (
            Auth::ApiKey {
                header: "X-API-Key".into(),
                value: "k-SECRET-1".into(),
            },
            None,
            Some("k-SECRET-1"),
        ),
    ];
    for (auth, authorization, api_key) in cases {
        let (base, seen) = mock(answer(200, &[], r#"{"elk_id":"e-1"}"#)).await;
        let connector =
            JsonHttpConnector::new(ChannelId::Elk, endpoint(&base, auth.clone())).unwrap();
        let outcome = connector.send(&comm(ChannelId::Elk)).await;
        assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
        let seen = seen.lock().unwrap();
        let h = &seen[0].headers;
        assert_eq!(
            h.get("authorization")
                .map(|v| v.to_str().unwrap().to_owned()),
            authorization,
            "{auth:?}"
        );
        assert_eq!(
            h.get("x-api-key").map(|v| v.to_str().unwrap()),
            api_key,
            "{auth:?}"
        );
        assert_eq!(h["content-type"], "application/json");
    }
}

#[test]
fn debug_output_redacts_the_secrets() {
    for auth in [
        bearer(),
        Auth::Basic {
            username: "hub".into(),
            password: TOKEN.into(),
        },
        Auth::ApiKey {
            header: "X-API-Key".into(),
            value: TOKEN.into(),
        },
    ] {
        let text = format!("{:?}", endpoint("https://wink.example", auth));
        assert!(!text.contains(TOKEN), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
}

#[test]
fn bad_settings_are_refused_by_name() {
    let build = |channel, base: &str, auth| JsonHttpConnector::new(channel, endpoint(base, auth));

    let e = build(ChannelId::Sms, "https://x.example", Auth::None).unwrap_err();
    assert!(matches!(e, BuildError::Channel(ChannelId::Sms)), "{e}");

    for base in [
        "wink.example",
        "ftp://wink.example",
        "https://hub:pw-SECRET@wink.example",
        "https://wink.example/?key=1",
        "http://",
    ] {
        let e = build(ChannelId::Wink, base, Auth::None).unwrap_err();
        assert!(matches!(e, BuildError::BaseUrl(_)), "{base}: {e}");
        assert!(e.to_string().starts_with("base_url: "), "{e}");
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }

    let e = build(
        ChannelId::Wink,
        "https://wink.example",
        Auth::ApiKey {
            header: "X API Key".into(),
            value: "k".into(),
        },
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("`X API Key` is not a valid HTTP header name"),
        "{e}"
    );

    let e = build(
        ChannelId::Wink,
        "https://wink.example",
        Auth::Bearer {
            token: "SECRET\nInjected: yes".into(),
        },
    )
    .unwrap_err();
    assert!(matches!(e, BuildError::Auth(_)), "{e}");
    assert!(!e.to_string().contains("SECRET"), "{e}");

    let e = build(
        ChannelId::Wink,
        "https://wink.example",
        Auth::Bearer { token: " ".into() },
    )
    .unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Transport errors

#[tokio::test]
async fn a_refused_connection_retries() {
    let (_refusing, port) = crate::test_ports::refusing();
    let connector = JsonHttpConnector::new(
        ChannelId::Wink,
        endpoint(&format!("http://127.0.0.1:{port}"), bearer()),
    )
    .unwrap();
    let outcome = connector.send(&comm(ChannelId::Wink)).await;
    assert!(
        matches!(&outcome, Outcome::Retry { throttled: false, reason, .. } if reason.contains("connect")),
        "{outcome:?}"
    );
    assert_no_secret(&outcome);
}

/// A server that reads one whole request, writes `raw` (maybe nothing), then closes the
/// connection.
async fn hang_up_server(raw: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed first");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    break;
                }
            }
        }
        stream.write_all(raw).await.unwrap();
        stream.shutdown().await.ok();
        drop(stream);
    });
    addr
}

#[tokio::test]
async fn a_connection_closed_after_the_request_is_unknown() {
    let addr = hang_up_server(b"").await;
    let connector = JsonHttpConnector::new(
        ChannelId::Eissd,
        endpoint(&format!("http://{addr}"), bearer()),
    )
    .unwrap();
    let outcome = connector.send(&comm(ChannelId::Eissd)).await;
    assert!(matches!(outcome, Outcome::Unknown { .. }), "{outcome:?}");
    assert_no_secret(&outcome);
}

#[tokio::test]
async fn a_2xx_whose_body_breaks_off_is_still_sent() {
    let addr = hang_up_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"wink_id\"",
    )
    .await;
    let connector = JsonHttpConnector::new(
        ChannelId::Wink,
        endpoint(&format!("http://{addr}"), bearer()),
    )
    .unwrap();
    let outcome = connector.send(&comm(ChannelId::Wink)).await;
    match &outcome {
        Outcome::Sent {
            external_id: None,
            answer,
        } => assert!(
            answer.starts_with("200 (answer body could not be read"),
            "{answer}"
        ),
        o => panic!("{o:?}"),
    }
    assert_no_secret(&outcome);
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A test PKI in a temporary directory: a CA, a server certificate for 127.0.0.1 / localhost and a
/// client certificate, all from the CA; PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "CLM test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params.signed_by(&server_key, &*ca).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "clm-hub");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = params.signed_by(&client_key, &*ca).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &ca.pem());
        write("client.pem", &client_cert.pem());
        write("client-key.pem", &client_key.serialize_pem());
        write(
            "client-combined.pem",
            &format!("{}{}", client_cert.pem(), client_key.serialize_pem()),
        );
        write("server-key.pem", &server_key.serialize_pem());
        write("garbage.pem", "not a pem file at all\n");

        Pki {
            ca_der: ca.der().clone(),
            server_chain: vec![server_cert.der().clone()],
            server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn files(&self, ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> TlsFiles {
        TlsFiles {
            ca_file: ca.map(|n| self.path(n)),
            client_cert_file: cert.map(|n| self.path(n)),
            client_key_file: key.map(|n| self.path(n)),
        }
    }

    fn mtls(&self) -> TlsFiles {
        self.files(Some("ca.pem"), Some("client.pem"), Some("client-key.pem"))
    }
}

/// TCP + TLS handshake (client certificate required); handshake failures are recorded and the
/// connection dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    failures: Arc<Mutex<Vec<String>>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => self.failures.lock().unwrap().push(e.to_string()),
                Err(_) => self
                    .failures
                    .lock()
                    .unwrap()
                    .push("handshake timed out".into()),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

struct HttpsMock {
    base: String,
    seen: SeenLog,
    failures: Arc<Mutex<Vec<String>>>,
}

/// An HTTPS mock that requires a client certificate from the PKI's CA.
async fn https_mock(
    pki: &Pki,
    reply: impl Fn() -> Response + Clone + Send + Sync + 'static,
) -> HttpsMock {
    crate::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", tcp.local_addr().unwrap());
    let failures = Arc::new(Mutex::new(Vec::new()));
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        failures: failures.clone(),
    };
    let seen = SeenLog::default();
    let app = recording_router(seen.clone(), reply);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    HttpsMock {
        base,
        seen,
        failures,
    }
}

fn tls_endpoint(base: &str, tls: TlsFiles) -> Endpoint {
    Endpoint {
        tls,
        ..endpoint(base, bearer())
    }
}

const WINK_OK: &str = r#"{"wink_id":"w-1","accepted_at":"2025-06-01T10:00:00Z"}"#;

#[tokio::test]
async fn mutual_tls_with_a_private_ca_is_sent() {
    let pki = Pki::new();
    let server = https_mock(&pki, answer(200, &[], WINK_OK)).await;
    for tls in [
        pki.mtls(),
        // Certificate and key in one file, named twice.
        pki.files(
            Some("ca.pem"),
            Some("client-combined.pem"),
            Some("client-combined.pem"),
        ),
    ] {
        let connector =
            JsonHttpConnector::new(ChannelId::Wink, tls_endpoint(&server.base, tls)).unwrap();
        let outcome = connector.send(&comm(ChannelId::Wink)).await;
        match &outcome {
            Outcome::Sent { external_id, .. } => assert_eq!(external_id.as_deref(), Some("w-1")),
            o => panic!("{o:?}; server: {:?}", server.failures.lock().unwrap()),
        }
    }
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(seen[0].path, wink::SEND_PATH);
}

#[tokio::test]
async fn without_the_private_ca_the_server_is_not_trusted() {
    let pki = Pki::new();
    let server = https_mock(&pki, answer(200, &[], WINK_OK)).await;
    let tls = pki.files(None, Some("client.pem"), Some("client-key.pem"));
    let connector =
        JsonHttpConnector::new(ChannelId::Wink, tls_endpoint(&server.base, tls)).unwrap();
    let outcome = connector.send(&comm(ChannelId::Wink)).await;
    assert!(
        matches!(&outcome, Outcome::Retry { reason, .. } if reason.contains("connect")),
        "{outcome:?}"
    );
    assert!(outcome.answer().contains("certificate"), "{outcome:?}");
    assert_no_secret(&outcome);
    assert!(server.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn without_a_client_certificate_the_server_refuses() {
    let pki = Pki::new();
    let server = https_mock(&pki, answer(200, &[], WINK_OK)).await;
    let tls = pki.files(Some("ca.pem"), None, None);
    let connector =
        JsonHttpConnector::new(ChannelId::Wink, tls_endpoint(&server.base, tls)).unwrap();
    let outcome = connector.send(&comm(ChannelId::Wink)).await;
    assert!(!matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
    assert_no_secret(&outcome);
    assert!(server.seen.lock().unwrap().is_empty());
    // The refusal was the server's, for the missing certificate.
    let failures = server.failures.lock().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("certificate"), "{failures:?}");
}

#[test]
fn unusable_tls_files_are_refused_by_name() {
    let pki = Pki::new();
    let build = |tls: TlsFiles| {
        JsonHttpConnector::new(ChannelId::Elk, tls_endpoint("https://elk.example", tls))
            .unwrap_err()
            .to_string()
    };

    let e = build(pki.files(Some("missing.pem"), None, None));
    assert!(e.starts_with("ca_file `"), "{e}");
    assert!(
        e.contains("missing.pem") && e.contains("cannot read"),
        "{e}"
    );

    for not_a_cert in ["client-key.pem", "garbage.pem"] {
        let e = build(pki.files(Some(not_a_cert), None, None));
        assert!(e.starts_with("ca_file `") && e.contains(not_a_cert), "{e}");
        assert!(e.contains("no certificate"), "{e}");
    }

    let e = build(pki.files(Some("ca.pem"), Some("client.pem"), None));
    assert!(
        e.contains("client_cert_file is set without client_key_file"),
        "{e}"
    );
    let e = build(pki.files(Some("ca.pem"), None, Some("client-key.pem")));
    assert!(
        e.contains("client_key_file is set without client_cert_file"),
        "{e}"
    );

    let e = build(pki.files(None, Some("client-key.pem"), Some("client-key.pem")));
    assert!(e.starts_with("client_cert_file `"), "{e}");
    assert!(e.contains("no certificate"), "{e}");

    let e = build(pki.files(None, Some("client.pem"), Some("client.pem")));
    assert!(e.starts_with("client_key_file `"), "{e}");
    assert!(e.contains("no private key"), "{e}");

    let e = build(pki.files(None, Some("client.pem"), Some("server-key.pem")));
    assert!(e.starts_with("client_key_file `"), "{e}");
    assert!(e.contains("does not belong to"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Webhooks and DWH rows

fn hook_error(channel: ChannelId, body: &[u8]) -> String {
    match parse_webhook(channel, body) {
        Err(ReportError(msg)) => msg,
        Ok(r) => panic!("accepted: {r:?}"),
    }
}

fn edited(
    file: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&example(file)).unwrap();
    edit(v.as_object_mut().unwrap());
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn the_contract_examples_parse() {
    let r = parse_webhook(ChannelId::Wink, &example("wink-webhook-clicked.json")).unwrap();
    assert_eq!(
        r,
        Report {
            reference: ReportRef::Ours(
                Uuid::parse_str("0190a5e2-7c1d-7b3e-9f00-3c2a1b4d5e6f").unwrap()
            ),
            kind: ResponseKind::Clicked,
            occurred_at: Some(ts("2025-06-01T18:42:10Z")),
            detail: Some("wink_id=wn-5f3c9a12".into()),
            dedupe_key: "evt-8812-0003".into(),
            whole_message: true,
        }
    );

    let r = parse_webhook(ChannelId::Elk, &example("elk-webhook-offer-accepted.json")).unwrap();
    assert_eq!(
        r,
        Report {
            reference: ReportRef::Ours(
                Uuid::parse_str("0190a5e2-8a44-7c01-8e11-7d6c5b4a3f21").unwrap()
            ),
            kind: ResponseKind::OfferAccepted,
            occurred_at: Some(ts("2025-06-02T07:15:33Z")),
            detail: Some("elk_id=elk-msg-000918273 surface=mobile".into()),
            dedupe_key: "elk-evt-55102".into(),
            whole_message: true,
        }
    );

    // Optional fields absent: no detail.
    let body = edited("elk-webhook-offer-accepted.json", |o| {
        o.remove("elk_id");
        o.remove("surface");
    });
    assert_eq!(parse_webhook(ChannelId::Elk, &body).unwrap().detail, None);
}

#[test]
fn bad_webhooks_are_refused_naming_the_problem() {
    let e = hook_error(
        ChannelId::Wink,
        &edited("wink-webhook-clicked.json", |o| {
            o.insert("surfce".into(), "SECRET-VALUE".into());
        }),
    );
    assert!(
        e.starts_with("invalid wink webhook: unknown field `surfce`"),
        "{e}"
    );
    assert!(!e.contains("SECRET-VALUE"), "{e}");

    let e = hook_error(
        ChannelId::Elk,
        &edited("elk-webhook-offer-accepted.json", |o| {
            o.insert("kind".into(), "clicked".into());
        }),
    );
    assert!(e.contains("`kind`"), "{e}");
    assert!(e.contains("unknown variant"), "{e}");

    let e = hook_error(
        ChannelId::Wink,
        &edited("wink-webhook-clicked.json", |o| {
            o.remove("message_id");
        }),
    );
    assert!(e.contains("missing field `message_id`"), "{e}");

    let e = hook_error(
        ChannelId::Wink,
        &edited("wink-webhook-clicked.json", |o| {
            o.insert("message_id".into(), "m-1".into());
        }),
    );
    assert!(e.contains("`message_id`"), "{e}");

    let e = hook_error(
        ChannelId::Wink,
        &edited("wink-webhook-clicked.json", |o| {
            o.insert("event_id".into(), "".into());
        }),
    );
    assert!(e.contains("`event_id`"), "{e}");

    for empty in [&b""[..], b"  \r\n"] {
        let e = hook_error(ChannelId::Elk, empty);
        assert!(e.starts_with("empty body"), "{e}");
    }

    for not_an_object in [&b"SECRET-BODY text"[..], b"[\"SECRET\"]", b"\"SECRET\""] {
        let e = hook_error(ChannelId::Wink, not_an_object);
        assert_eq!(e, "invalid wink webhook: expected a JSON object");
    }
    let e = hook_error(ChannelId::Wink, b"{SECRET}");
    assert!(e.starts_with("invalid wink webhook: "), "{e}");
    assert!(!e.contains("SECRET"), "{e}");

    let mut trailing = example("wink-webhook-clicked.json");
    trailing.extend_from_slice(b" {}");
    let e = hook_error(ChannelId::Wink, &trailing);
    assert!(e.contains("trailing"), "{e}");

    let e = hook_error(ChannelId::Eissd, &example("eissd-response-row.json"));
    assert!(e.contains("eissd"), "{e}");
    assert!(parse_webhook(ChannelId::Sms, b"{}").is_err());
}

#[test]
fn a_dwh_row_is_a_report() {
    let row: eissd::ResponseRow =
        serde_json::from_slice(&example("eissd-response-row.json")).unwrap();
    assert_eq!(
        row_report(&row),
        Report {
            reference: ReportRef::Ours(
                Uuid::parse_str("0190a5e2-9b10-7d22-a3c4-112233445566").unwrap()
            ),
            kind: ResponseKind::Interested,
            occurred_at: Some(ts("2025-06-03T09:12:45Z")),
            detail: Some("eissd_id=EISSD-2025-0004417".into()),
            dedupe_key: "resp-20250603-000121".into(),
            whole_message: true,
        }
    );
    let row = eissd::ResponseRow {
        eissd_id: None,
        ..row
    };
    assert_eq!(row_report(&row).detail, None);
}
