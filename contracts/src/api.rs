//! Bodies of the HTTP API (`/v1/...`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::channel::ChannelId;
use crate::communication::Communication;
use crate::lifecycle::{AttemptRecord, ResponseRecord, Status};

/// Most communications one `POST /v1/communications` may carry.
pub const MAX_BATCH: usize = 1000;

/// `POST /v1/communications` with several communications.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SubmitBatch {
    pub communications: Vec<Communication>,
}

/// What became of one submitted item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubmitOutcome {
    /// Stored; it will be sent.
    Accepted,
    /// A communication with this id was already stored; nothing new was stored.
    Duplicate,
    /// Invalid; `error` says why. Nothing was stored.
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubmitResult {
    /// The item's id, when it had a readable one.
    #[serde(default)]
    pub id: Option<String>,
    pub outcome: SubmitOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Answer to `POST /v1/communications` (HTTP 202), one result per item, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubmitResponse {
    pub results: Vec<SubmitResult>,
}

/// `GET /v1/communications/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommunicationView {
    pub id: Uuid,
    pub channel: ChannelId,
    pub campaign_id: String,
    pub customer_id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub received_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the next attempt is due, while one is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub attempts: Vec<AttemptRecord>,
    pub responses: Vec<ResponseRecord>,
}

/// `GET /v1/communications`: one page of a search, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchPage {
    pub items: Vec<CommunicationSummary>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A communication as a search lists it: no content, the recipient masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommunicationSummary {
    pub id: Uuid,
    pub channel: ChannelId,
    pub campaign_id: String,
    pub customer_id: String,
    /// Masked ([`crate::communication::mask_recipient`]): `+7900***4567`, `iv***@example.ru`.
    pub recipient: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Parts the channel bills (SMS segments).
    pub parts: u32,
    pub received_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/campaigns/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CancelResponse {
    pub campaign_id: String,
    /// Pending communications moved to `cancelled` by this call.
    pub cancelled: u64,
}

/// One channel in `GET /v1/channels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelView {
    pub id: ChannelId,
    /// `disabled`, `running`, `paused`, `throttled` or `breaker_open`.
    pub state: String,
    pub enabled: bool,
    pub paused: bool,
    /// Communications waiting to be sent (received, scheduled, retry_wait).
    pub queue_depth: u64,
    pub in_flight: u64,
    pub limits: ChannelLimits,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_until: Option<DateTime<Utc>>,
    pub counters: ChannelCounters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelLimits {
    /// Messages per second.
    pub rate: f64,
    pub burst: u32,
    pub concurrency: u32,
    pub timeout_ms: u64,
    pub max_attempts: u32,
}

/// Counts since this hub process started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelCounters {
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub unknown: u64,
    pub expired: u64,
    pub cancelled: u64,
    pub responses: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelsResponse {
    pub channels: Vec<ChannelView>,
}

/// Every error answer of the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: String,
}
