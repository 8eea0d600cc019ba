//! The HTTP server's limits (issue 10): per-route body limits before authentication, the header
//! and request timeouts, JSON nesting, and `/metrics` without a store count per scrape. The hub
//! runs in-process on the embedded default, with credentials on every route so that the tests can
//! tell "refused for its size" from "refused for its credentials".

use std::time::{Duration, Instant};

use clm_contracts::ChannelId;
use clm_hub::api::{HEADER_READ_TIMEOUT, REQUEST_TIMEOUT};
use clm_hub::config::SoapCaller;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{TestHub, sandbox_config, start_hub};

const API_TOKEN: &str = "api-tok-3e9";
const INGEST_TOKEN: &str = "ingest-tok-77";
const SOAP_USER: (&str, &str) = ("SAP_CRM_PRD", "Kampagne-2026!");

/// The embedded default with an API token, ingest tokens for SMS and Wink, and one SOAP caller.
async fn guarded_hub() -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(dir.path());
    config.server.api_token = Some(API_TOKEN.into());
    for id in [ChannelId::Sms, ChannelId::Wink] {
        config.channels.get_mut(id).ingest_mut().unwrap().token = Some(INGEST_TOKEN.into());
    }
    config.soap.callers = vec![SoapCaller {
        username: SOAP_USER.0.into(),
        password: SOAP_USER.1.into(),
        systems: vec!["SAP_CRM".into()],
    }];
    config.validate().unwrap();
    start_hub(config, dir).await
}

/// The peak resident set of this process so far (`VmHWM`), in KiB. Each nextest test is a
/// process of its own, with the hub in it.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Sends `head` (a request line and headers, no body unless it holds one) on a new connection and
/// returns the status of the answer, failing if none comes within 10 s.
async fn raw_status(hub: &TestHub, head: String) -> u16 {
    let exchange = async {
        let mut s = TcpStream::connect(hub.hub.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0_u8; 4096];
        // The status line is enough; the hub may close without reading what was announced.
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("an answer within 10 s");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_json_body_gets_400_quickly_with_bounded_memory() {
    let hub = guarded_hub().await;
    let post = |path: &str, body: String| {
        let mut rb = hub.client.post(hub.url(path)).body(body);
        rb = if path.starts_with("/v1") {
            rb.bearer_auth(API_TOKEN)
        } else {
            rb.header("X-CLM-Token", INGEST_TOKEN)
        };
        async move {
            let r = tokio::time::timeout(Duration::from_secs(10), rb.send())
                .await
                .expect("answered within 10 s")
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    // Warm up both routes (allocator arenas, the store's connections, lazy statics).
    assert_eq!(post("/v1/communications", "[]".into()).await.0, 400);
    assert_eq!(post("/ingest/wink", "[]".into()).await.0, 400);

    let before = peak_rss_kib();
    let arrays = "[".repeat(100_000);
    let objects = r#"{"a":"#.repeat(100_000);
    for body in [arrays, objects] {
        for path in ["/v1/communications", "/ingest/wink"] {
            let (status, text) = post(path, body.clone()).await;
            assert_eq!(status, 400, "{path}: {text}");
            assert!(text.len() < 1024, "{path}: a short error: {text}");
        }
    }
    let grown = peak_rss_kib().saturating_sub(before);
    eprintln!("VmHWM grew by {grown} KiB for four 100 000-deep bodies (100-500 KB each)");
    // The bodies themselves are 0.1-0.5 MB; a parser that recursed or built the nesting would
    // take tens of MB (or the stack).
    assert!(grown < 8 * 1024, "peak RSS grew by {grown} KiB");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_413_before_authentication() {
    let hub = guarded_hub().await;
    let soap_max = hub.hub.shared.config.soap.max_bytes;
    // Announced sizes just over each route's limit, with wrong credentials and no body sent:
    // the limit answers before authentication and before a byte of the body is read.
    let cases = [
        (
            "/v1/communications",
            16 * 1024 * 1024,
            "Authorization: Bearer wrong",
        ),
        ("/ingest/sms", 1024 * 1024, "X-CLM-Token: wrong"),
        ("/ingest/wink", 1024 * 1024, "X-CLM-Token: wrong"),
        (
            "/soap/responses",
            soap_max + 64 * 1024,
            "Authorization: Basic d3Jvbmc6d3Jvbmc=",
        ),
        ("/u/some-token", 16 * 1024, "Cookie: a=b"),
    ];
    for (path, limit, credentials) in cases {
        let head = |len: usize| {
            format!(
                "POST {path} HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n\
                 {credentials}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )
        };
        assert_eq!(raw_status(&hub, head(limit + 1)).await, 413, "{path}");
    }
    // Under the limit, the same wrong credentials are what is refused.
    let r = hub
        .client
        .post(hub.url("/v1/communications"))
        .bearer_auth("wrong")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = hub
        .client
        .post(hub.url("/ingest/wink"))
        .header("X-CLM-Token", "wrong")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Without a Content-Length (chunked), the body is cut off at the limit as it is read: 413
    // after 1 MiB, not the 4 MiB sent.
    let exchange = async {
        let mut s = TcpStream::connect(hub.hub.addr).await.unwrap();
        let head = "POST /ingest/wink HTTP/1.1\r\nHost: hub\r\nX-CLM-Token: wrong\r\n\
                    Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        let size = 64 * 1024;
        let mut chunk = format!("{size:x}\r\n").into_bytes();
        chunk.extend(std::iter::repeat_n(b' ', size));
        chunk.extend_from_slice(b"\r\n");
        for _ in 0..64 {
            if s.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("answered within 10 s");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    hub.stop().await;
}

/// Reads until the hub closes the connection (EOF or a reset); how long after `started` that was.
async fn until_closed(
    s: &mut (impl AsyncReadExt + Unpin),
    started: Instant,
    limit: Duration,
) -> Duration {
    let mut buf = [0_u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), s.read(&mut buf)).await {
            Err(_) => panic!("the connection was still open after {limit:?}"),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            // An error answer may come first; the close follows.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let hub = guarded_hub().await;
    // A property, not a benchmark: closed after the timeout, well before three of them.
    let limit = HEADER_READ_TIMEOUT * 3;
    // Slowloris: a request line, then a header byte every half second, never the blank line.
    let started = Instant::now();
    let (mut reader, mut writer) = TcpStream::connect(hub.hub.addr).await.unwrap().into_split();
    writer
        .write_all(b"POST /v1/communications HTTP/1.1\r\nHost: hub\r\nX-Slow: ")
        .await
        .unwrap();
    let drip = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let closed = until_closed(&mut reader, started, limit).await;
    drip.abort();
    eprintln!("slowloris connection closed after {closed:?}");
    assert!(closed >= HEADER_READ_TIMEOUT, "{closed:?}");

    // A connection that sends nothing at all is closed the same way.
    let started = Instant::now();
    let mut idle = TcpStream::connect(hub.hub.addr).await.unwrap();
    let closed = until_closed(&mut idle, started, limit).await;
    eprintln!("idle connection closed after {closed:?}");

    // Meanwhile the hub answers everyone else.
    let r = hub.client.get(hub.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_cut_off_at_the_request_timeout() {
    let hub = guarded_hub().await;
    let started = Instant::now();
    let mut s = TcpStream::connect(hub.hub.addr).await.unwrap();
    s.write_all(
        format!(
            "POST /ingest/wink HTTP/1.1\r\nHost: hub\r\nX-CLM-Token: {INGEST_TOKEN}\r\n\
             Content-Length: 100000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let limit = REQUEST_TIMEOUT * 2;
    let mut answer = Vec::new();
    let mut buf = [0_u8; 1024];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Headers done; the body at a byte every half second.
                let _ = s.write_all(b" ").await;
            }
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            },
        }
        assert!(started.elapsed() < limit, "no answer after {limit:?}");
    }
    let answer = String::from_utf8_lossy(&answer);
    eprintln!("trickling body answered after {:?}", started.elapsed());
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(started.elapsed() >= REQUEST_TIMEOUT - Duration::from_millis(100));
    hub.stop().await;
}

fn refreshes(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("clm_depth_refreshes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no clm_depth_refreshes_total in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrapes_share_one_depth_count() {
    let hub = guarded_hub().await;
    let first = hub.metrics_text().await;
    assert!(first.contains("# TYPE clm_queue_depth gauge"), "{first}");
    let start = refreshes(&first);
    let started = Instant::now();
    // Twenty scrapes, half of them at once, and the channel list, which shares the count.
    let mut texts = Vec::new();
    for _ in 0..10 {
        texts.push(hub.metrics_text().await);
    }
    let concurrent = (0..10).map(|_| hub.metrics_text());
    texts.extend(futures_util::future::join_all(concurrent).await);
    let r = hub
        .client
        .get(hub.url("/v1/channels"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let elapsed = started.elapsed();
    let end = refreshes(&hub.metrics_text().await);
    // One count per DEPTH_MAX_AGE at most, one more for the boundary.
    let allowed = 1 + elapsed.as_secs() / clm_hub::metrics::DEPTH_MAX_AGE.as_secs() + 1;
    assert!(
        end - start <= allowed,
        "{} counts for 21 reads in {elapsed:?}",
        end - start
    );
    for t in &texts {
        assert!(t.contains("# TYPE clm_queue_depth gauge"), "{t}");
    }
    hub.stop().await;
}
