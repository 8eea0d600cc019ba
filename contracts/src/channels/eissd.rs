//! EISSD: offer hand-off to sales support over HTTP; responses come back as rows of a DWH table.
//!
//! `POST {base}/v1/offers` with a [`SendRequest`], answered 2xx with a [`SendResponse`]; errors
//! carry an [`ErrorBody`]. EISSD writes the customer's reaction as a [`ResponseRow`] into the
//! Greenplum table [`TABLE`] ([`DDL`]), which the hub polls over the PostgreSQL protocol in
//! `created_at` order.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use super::ErrorBody;
use crate::ResponseKind;

/// Path of the send endpoint, relative to the configured base URL.
pub const SEND_PATH: &str = "/v1/offers";
/// The DWH table the responses land in.
pub const TABLE: &str = "eissd_responses";

/// The table's DDL (PostgreSQL / Greenplum); `contracts/README.md` shows the same text. The poller
/// reads rows in `(created_at, response_id)` order from its watermark, which the index serves, and
/// deduplicates rows it sees twice on `response_id`.
pub const DDL: &str = "\
CREATE TABLE eissd_responses (
    response_id text        NOT NULL PRIMARY KEY,
    message_id  uuid        NOT NULL,
    eissd_id    text,
    kind        text        NOT NULL
        CHECK (kind IN ('accepted', 'declined', 'interested', 'opted_out')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX eissd_responses_created_at_idx ON eissd_responses (created_at, response_id);
";

/// The same table in SQLite, the DWH of the embedded default (the EISSD mock writes it, the hub
/// polls it). `created_at` is text in the one format [`SQLITE_TIME_FORMAT`] (UTC, fixed width), so
/// text order is time order; a `CHECK` refuses any other shape, since one such row would sort out
/// of place and stop the poller's reading.
pub const DDL_SQLITE: &str = "\
CREATE TABLE IF NOT EXISTS eissd_responses (
    response_id TEXT NOT NULL PRIMARY KEY,
    message_id  TEXT NOT NULL,
    eissd_id    TEXT,
    kind        TEXT NOT NULL
        CHECK (kind IN ('accepted', 'declined', 'interested', 'opted_out')),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        CHECK (created_at GLOB
            '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]Z')
);
CREATE INDEX IF NOT EXISTS eissd_responses_created_at_idx ON eissd_responses (created_at, response_id);
";

/// `created_at` in the SQLite table: `2025-06-01T10:00:00.123Z` (chrono format string).
pub const SQLITE_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// One offer for one customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The hub's communication id; EISSD writes it into every response row and treats a repeated
    /// id as the same hand-off (idempotency key).
    pub message_id: Uuid,
    /// The customer (the communication's `customer_id`).
    pub customer_id: String,
    /// The offer sales should present (the communication's `content.offer_code`).
    pub offer_code: String,
    /// The campaign the offer belongs to (the communication's `campaign_id`).
    pub campaign_id: String,
    /// Sales may present the offer from this instant (the communication's `not_before`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<DateTime<Utc>>,
    /// Sales must not present the offer after this instant (the communication's `expires_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
}

/// EISSD's 2xx answer: the hand-off was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SendResponse {
    /// EISSD's id of the hand-off (the attempt's external id).
    pub eissd_id: String,
}

/// The customer's reaction, column `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// Took the offer.
    Accepted,
    /// Turned it down.
    Declined,
    /// Asked to be contacted about it.
    Interested,
    /// Asked not to be offered anything again.
    OptedOut,
}

/// One row of [`TABLE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseRow {
    /// Unique id of the row; the hub deduplicates on it.
    pub response_id: String,
    /// The `message_id` of the [`SendRequest`] (the hub's communication id).
    pub message_id: Uuid,
    /// EISSD's id of the hand-off, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eissd_id: Option<String>,
    pub kind: RowKind,
    /// When the row was written; the poller's watermark column.
    pub created_at: DateTime<Utc>,
}

impl ResponseRow {
    /// The shared response kind this row is recorded and published as.
    pub fn response_kind(&self) -> ResponseKind {
        match self.kind {
            RowKind::Accepted => ResponseKind::OfferAccepted,
            RowKind::Declined => ResponseKind::OfferDeclined,
            RowKind::Interested => ResponseKind::Interested,
            RowKind::OptedOut => ResponseKind::OptedOut,
        }
    }
}
