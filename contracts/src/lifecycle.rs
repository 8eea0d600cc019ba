//! Lifecycle states, attempt records and response records.
//!
//! `received → scheduled → sending → sent → delivered`, with `retry_wait` between attempts, and the
//! end states `failed`, `expired`, `cancelled`, `rejected`, `unknown`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::channel::ChannelId;

/// Where a communication is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Stored, not yet looked at by a dispatcher.
    Received,
    /// Waiting for its time (`not_before`, send window) or its turn.
    Scheduled,
    /// Claimed by a dispatcher; an attempt is under way.
    Sending,
    /// The last attempt failed in a way worth retrying; the next one is scheduled.
    RetryWait,
    /// The channel took it.
    Sent,
    /// The channel reported delivery to the customer.
    Delivered,
    /// The channel refused it, or retries ran out.
    Failed,
    /// `expires_at` passed before the channel took it.
    Expired,
    /// Its campaign was cancelled before the channel took it.
    Cancelled,
    /// Invalid input; never stored as a communication.
    Rejected,
    /// The outcome could not be established (e.g. a timeout after the request was sent).
    Unknown,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Received,
        Status::Scheduled,
        Status::Sending,
        Status::RetryWait,
        Status::Sent,
        Status::Delivered,
        Status::Failed,
        Status::Expired,
        Status::Cancelled,
        Status::Rejected,
        Status::Unknown,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Scheduled => "scheduled",
            Status::Sending => "sending",
            Status::RetryWait => "retry_wait",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
            Status::Rejected => "rejected",
            Status::Unknown => "unknown",
        }
    }

    /// Still waiting to be (re)sent: a cancel or an expiry may still stop it.
    pub const fn is_pending(self) -> bool {
        matches!(
            self,
            Status::Received | Status::Scheduled | Status::RetryWait
        )
    }

    /// No dispatcher will touch it again. `sent` and `unknown` are not final for responses
    /// (a delivery report can still arrive), but they are for sending.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            Status::Delivered
                | Status::Failed
                | Status::Expired
                | Status::Cancelled
                | Status::Rejected
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// How one attempt's result was classified, once, where the channel's answer was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    /// The channel took it.
    Sent,
    /// Worth another attempt (5xx, 429, connection refused, …).
    Retry,
    /// Will not succeed if repeated (4xx, invalid recipient, …).
    Fail,
    /// May or may not have been taken: not resent blindly.
    Unknown,
}

impl Classification {
    pub const fn as_str(self) -> &'static str {
        match self {
            Classification::Sent => "sent",
            Classification::Retry => "retry",
            Classification::Fail => "fail",
            Classification::Unknown => "unknown",
        }
    }
}

impl FromStr for Classification {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Classification::Sent,
            Classification::Retry,
            Classification::Fail,
            Classification::Unknown,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// One attempt to hand a communication to its channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub classification: Classification,
    /// What the channel answered (status code and a short excerpt), or the transport error.
    pub answer: String,
    /// Why it was classified so, when not plainly sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The channel's own id for the message, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// What a channel said about a communication after taking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseKind {
    /// Reached the customer's device or mailbox.
    Delivered,
    /// Will not reach the customer (SMS DLR failure, hard bounce, …).
    Undelivered,
    /// Accepted by an intermediate (SMSC buffered it); not yet final.
    Buffered,
    Shown,
    Read,
    Opened,
    Clicked,
    Dismissed,
    OfferAccepted,
    OfferDeclined,
    Interested,
    OptedOut,
    Unsubscribed,
    Complained,
}

impl ResponseKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ResponseKind::Delivered => "delivered",
            ResponseKind::Undelivered => "undelivered",
            ResponseKind::Buffered => "buffered",
            ResponseKind::Shown => "shown",
            ResponseKind::Read => "read",
            ResponseKind::Opened => "opened",
            ResponseKind::Clicked => "clicked",
            ResponseKind::Dismissed => "dismissed",
            ResponseKind::OfferAccepted => "offer_accepted",
            ResponseKind::OfferDeclined => "offer_declined",
            ResponseKind::Interested => "interested",
            ResponseKind::OptedOut => "opted_out",
            ResponseKind::Unsubscribed => "unsubscribed",
            ResponseKind::Complained => "complained",
        }
    }

    /// The status a response moves its communication to, if any.
    pub const fn advances_to(self) -> Option<Status> {
        match self {
            ResponseKind::Delivered => Some(Status::Delivered),
            ResponseKind::Undelivered => Some(Status::Failed),
            _ => None,
        }
    }
}

impl FromStr for ResponseKind {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| UnknownStatus(s.to_owned()))
    }
}

/// One response, as stored and as shown by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResponseRecord {
    pub id: Uuid,
    pub communication_id: Uuid,
    pub channel: ChannelId,
    pub kind: ResponseKind,
    pub received_at: DateTime<Utc>,
    /// When the channel says it happened, if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Channel-specific detail (DLR status text, error code, clicked URL, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_classify() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
            assert!(!(s.is_pending() && s.is_final()));
        }
        assert!(Status::Delivered.is_final());
        assert!(!Status::Sent.is_final());
    }

    #[test]
    fn response_kinds_parse_from_their_wire_names() {
        assert_eq!(
            "offer_accepted".parse::<ResponseKind>().unwrap(),
            ResponseKind::OfferAccepted
        );
        assert_eq!(ResponseKind::OfferAccepted.as_str(), "offer_accepted");
        assert!("nope".parse::<ResponseKind>().is_err());
    }
}
