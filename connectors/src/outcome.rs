//! The classification every connector makes, and the HTTP part of it that several share.
//!
//! HTTP 429 and 503 are throttling or overload: retry, after `Retry-After` when given, and a 429
//! slows the whole channel. 408 and other 5xx: retry. 401/403: retry too, because they mean our
//! credentials or the gateway's configuration are wrong for every message, not that this message
//! is bad; retrying lets the breaker open and an operator fix it without failing a campaign.
//! Other 4xx: the message itself is refused, fail without retry.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clm_contracts::ResponseKind;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The channel took it.
    Sent {
        external_id: Option<String>,
        answer: String,
    },
    /// Not taken; worth trying again (no earlier than `after`, when the channel said so).
    Retry {
        after: Option<Duration>,
        reason: String,
        answer: String,
        /// The channel asked us to slow down (429, SMSC throttling): slow the whole channel.
        throttled: bool,
    },
    /// Not taken and never will be.
    Fail { reason: String, answer: String },
    /// May have been taken: do not resend blindly.
    Unknown { reason: String, answer: String },
}

impl Outcome {
    pub fn answer(&self) -> &str {
        match self {
            Outcome::Sent { answer, .. }
            | Outcome::Retry { answer, .. }
            | Outcome::Fail { answer, .. }
            | Outcome::Unknown { answer, .. } => answer,
        }
    }

    /// Counts against the circuit breaker: the channel looks unhealthy.
    pub fn is_channel_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Retry {
                throttled: false,
                ..
            } | Outcome::Unknown { .. }
        )
    }
}

/// Most characters of a channel's answer kept for the attempt log.
pub const ANSWER_EXCERPT: usize = 200;

/// `"503 Service Unavailable: <first 200 chars of body>"`, single line.
pub fn answer_excerpt(status: u16, body: &str) -> String {
    let mut s = String::with_capacity(ANSWER_EXCERPT + 8);
    s.push_str(&status.to_string());
    let body = body.trim();
    if !body.is_empty() {
        s.push_str(": ");
        for c in body.chars().take(ANSWER_EXCERPT) {
            s.push(if c.is_control() { ' ' } else { c });
        }
    }
    s
}

/// A channel's answer body, read no further than a cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CappedBody {
    /// The body, or its first `cap` bytes when it is longer.
    pub bytes: Vec<u8>,
    /// The body went on past the cap: `bytes` is only its start and the rest was never read
    /// (the connection is dropped rather than drained). Classify it as an answer that could not
    /// be understood, whatever the start looks like.
    pub over_cap: bool,
}

impl CappedBody {
    /// The bytes as text, invalid UTF-8 replaced.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }
}

/// Reads the body of `response`, holding at most `cap` bytes: a channel (or whatever answers in
/// its place) cannot make the hub buffer more than that per attempt, however long its answer.
/// The start is kept for the attempt log's excerpt.
///
/// Every HTTP connector reads its answers through this, on a client built with
/// `.redirect(reqwest::redirect::Policy::none())`: a redirect is classified like any other
/// answer, never followed with the message and the credentials.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<CappedBody, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(CappedBody {
                bytes,
                over_cap: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(CappedBody {
        bytes,
        over_cap: false,
    })
}

/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    // A day at most: a larger value is a broken gateway, not a plan.
    Some(d.min(MAX_RETRY_AFTER))
}

/// Classifies a non-2xx HTTP answer.
pub fn classify_http_error(status: u16, retry_after: Option<Duration>, answer: String) -> Outcome {
    match status {
        429 => Outcome::Retry {
            after: retry_after,
            reason: "throttled by the channel (429)".into(),
            answer,
            throttled: true,
        },
        503 => Outcome::Retry {
            after: retry_after,
            reason: "channel unavailable (503)".into(),
            answer,
            throttled: false,
        },
        401 | 403 => Outcome::Retry {
            after: retry_after,
            reason: format!("channel refused our credentials ({status}); check the gateway config"),
            answer,
            throttled: false,
        },
        408 | 500..=599 => Outcome::Retry {
            after: retry_after,
            reason: format!("channel error ({status})"),
            answer,
            throttled: false,
        },
        _ => Outcome::Fail {
            reason: format!("channel refused the message ({status})"),
            answer,
        },
    }
}

/// Classifies a transport error (no HTTP answer). A connect error (refused, unreachable, connect
/// timeout) never reached the channel, so retry. Anything after the connection was up (a reset, a
/// read timeout) may have reached it: `Unknown`, which the dispatcher's `on_timeout` policy may turn
/// into a retry for channels where a duplicate is harmless.
///
/// The error text never includes the request URL: a Kannel URL carries the password, the MSISDN
/// and the message text.
pub fn classify_transport_error(err: &reqwest::Error) -> Outcome {
    let answer = format!("transport error: {}", error_chain(&err_without_url(err)));
    // reqwest marks a connect timeout as both: it is a connect failure first.
    if err.is_connect() {
        Outcome::Retry {
            after: None,
            reason: "could not connect to the channel".into(),
            answer,
            throttled: false,
        }
    } else if err.is_timeout() {
        Outcome::Unknown {
            reason: "timed out waiting for the channel's answer".into(),
            answer,
        }
    } else {
        Outcome::Unknown {
            reason: "the connection broke after the request went out".into(),
            answer,
        }
    }
}

fn err_without_url(err: &reqwest::Error) -> String {
    let mut s = String::new();
    // `without_url` needs ownership; the Display of the source chain carries no URL.
    let top = err.to_string();
    let top = match top.find(" for url (") {
        Some(i) => top[..i].to_owned(),
        None => top,
    };
    s.push_str(&top);
    let mut src = std::error::Error::source(err);
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

fn error_chain(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// How a response report names its communication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRef {
    /// Our communication id, echoed back.
    Ours(uuid::Uuid),
    /// The channel's id from the send answer.
    External(String),
}

/// A response from a channel (delivery report, webhook), parsed but not yet correlated.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub reference: ReportRef,
    pub kind: ResponseKind,
    pub occurred_at: Option<DateTime<Utc>>,
    pub detail: Option<String>,
    /// The same key twice for one communication is one response.
    pub dedupe_key: String,
    /// Speaks for the whole message rather than one part of it.
    pub whole_message: bool,
}

/// A report that cannot be used; the message says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReportError(pub String);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("99999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn statuses_are_classified_once() {
        let c = |s| classify_http_error(s, None, String::new());
        assert!(matches!(
            c(429),
            Outcome::Retry {
                throttled: true,
                ..
            }
        ));
        assert!(matches!(
            c(503),
            Outcome::Retry {
                throttled: false,
                ..
            }
        ));
        assert!(matches!(c(500), Outcome::Retry { .. }));
        assert!(matches!(c(408), Outcome::Retry { .. }));
        assert!(matches!(c(400), Outcome::Fail { .. }));
        assert!(matches!(c(404), Outcome::Fail { .. }));
        assert!(matches!(c(403), Outcome::Retry { .. }));
    }

    #[test]
    fn answer_excerpt_is_one_short_line() {
        let a = answer_excerpt(503, &format!("line1\nline2{}", "x".repeat(500)));
        assert!(a.starts_with("503: line1 line2"));
        assert!(!a.contains('\n'));
        assert!(a.chars().count() <= ANSWER_EXCERPT + 5);
    }

    /// A server on 127.0.0.1 answering every request with `status` and a body of `len` bytes of
    /// `x`, written 64 KiB at a time until done or the client goes away; returns its URL and the
    /// bytes of body it managed to write.
    pub(crate) async fn long_answer(
        status: u16,
        len: usize,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = std::sync::Arc::clone(&written);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let w = std::sync::Arc::clone(&w);
                tokio::spawn(async move {
                    // The request: read until the end of the headers (the tests send no body).
                    let mut req = Vec::new();
                    let mut buf = [0_u8; 4096];
                    while !req.windows(4).any(|x| x == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
                    );
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let block = vec![b'x'; 64 * 1024];
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(block.len());
                        if socket.write_all(&block[..n]).await.is_err() {
                            return;
                        }
                        w.fetch_add(n, Ordering::Relaxed);
                        left -= n;
                    }
                });
            }
        });
        (url, written)
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_read_no_further() {
        use std::sync::atomic::Ordering;
        const CAP: usize = 64 * 1024;
        const LONG: usize = 10 * 1024 * 1024;
        crate::install_crypto_provider();
        let (url, written) = long_answer(200, LONG).await;
        let client = reqwest::Client::new();
        let body = read_capped(client.get(&url).send().await.unwrap(), CAP)
            .await
            .unwrap();
        assert!(body.over_cap);
        assert_eq!(body.bytes.len(), CAP, "holds the cap's worth, no more");
        // The rest was never asked for: the server's writes stall, then fail, once the socket
        // buffers are full.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let sent = written.load(Ordering::Relaxed);
        assert!(sent < LONG, "the whole answer was read ({sent} bytes)");

        // Exactly the cap: read whole.
        let (url, _) = long_answer(200, CAP).await;
        let body = read_capped(client.get(&url).send().await.unwrap(), CAP)
            .await
            .unwrap();
        assert!(!body.over_cap);
        assert_eq!(body.bytes.len(), CAP);
    }

    #[tokio::test]
    async fn a_refused_connection_retries_and_the_url_never_reaches_the_log() {
        crate::install_crypto_provider();
        let (_refusing, port) = crate::test_ports::refusing();
        let url =
            format!("http://127.0.0.1:{port}/cgi-bin/sendsms?password=hunter2&to=79001234567");
        let err = reqwest::get(&url).await.unwrap_err();
        let outcome = classify_transport_error(&err);
        assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
        assert!(
            !outcome.answer().contains("hunter2"),
            "{}",
            outcome.answer()
        );
        assert!(!outcome.answer().contains("79001234567"));
    }
}
