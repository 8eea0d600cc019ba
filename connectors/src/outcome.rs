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
mod tests {
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

    #[tokio::test]
    async fn a_refused_connection_retries_and_the_url_never_reaches_the_log() {
        crate::install_crypto_provider();
        // Bind then drop a listener: its port now refuses connections.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
