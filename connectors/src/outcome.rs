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

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
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

/// Classifies a transport error (no HTTP answer). A connect error never reached the channel, so
/// retry; a timeout may have, so it is `Unknown` (the dispatcher's policy may still retry it).
pub fn classify_transport_error(err: &reqwest::Error) -> Outcome {
    let answer = format!("transport error: {}", error_chain(err));
    if err.is_timeout() {
        Outcome::Unknown {
            reason: "timed out waiting for the channel's answer".into(),
            answer,
        }
    } else if err.is_connect() {
        Outcome::Retry {
            after: None,
            reason: "could not connect to the channel".into(),
            answer,
            throttled: false,
        }
    } else {
        Outcome::Retry {
            after: None,
            reason: "connection to the channel broke before an answer".into(),
            answer,
            throttled: false,
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
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
}
