//! ELK/MLK: message in the customer's personal account, web and mobile, over HTTPS.
//!
//! `POST {base}/v1/messages` with a [`SendRequest`], answered 2xx with a [`SendResponse`]; errors
//! carry an [`ErrorBody`]. ELK posts a [`Webhook`] to the hub's `/ingest/elk` for every event.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use super::ErrorBody;
use crate::ResponseKind;

/// Path of the send endpoint, relative to the configured base URL.
pub const SEND_PATH: &str = "/v1/messages";
/// The hub's route for ELK webhooks.
pub const INGEST_PATH: &str = "/ingest/elk";

/// Where in the personal account a message appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Surface {
    /// The web personal account (ELK).
    Web,
    /// The mobile app (MLK).
    Mobile,
}

/// One message to one personal account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The hub's communication id; ELK echoes it in every webhook and treats a repeated id as the
    /// same message (idempotency key).
    pub message_id: Uuid,
    /// The personal account (the communication's `recipient`).
    pub account_id: String,
    /// Message title (the communication's `content.subject`).
    pub title: String,
    /// Message text (the communication's `content.text`).
    pub text: String,
    /// Offer shown with accept / decline buttons (the communication's `content.offer_code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_code: Option<String>,
    /// Where to show it: at least one of `web`, `mobile`.
    #[schemars(length(min = 1))]
    pub surfaces: Vec<Surface>,
    /// After this instant ELK must not show the message any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// ELK's 2xx answer: the message was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SendResponse {
    /// ELK's id of the message (the attempt's external id).
    pub elk_id: String,
}

/// What happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// Placed in the personal account.
    Delivered,
    /// Opened by the customer.
    Read,
    /// The customer accepted the offer.
    OfferAccepted,
    /// The customer declined the offer.
    OfferDeclined,
}

/// One event, POSTed by ELK to `/ingest/elk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// ELK's unique id of this event; the hub deduplicates on it.
    pub event_id: String,
    /// The `message_id` of the [`SendRequest`] (the hub's communication id).
    pub message_id: Uuid,
    /// ELK's id of the message, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elk_id: Option<String>,
    pub kind: WebhookKind,
    /// When it happened on ELK's side.
    pub occurred_at: DateTime<Utc>,
    /// Where it happened, when ELK knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surface: Option<Surface>,
}

impl Webhook {
    /// The shared response kind this event is recorded and published as.
    pub fn response_kind(&self) -> ResponseKind {
        match self.kind {
            WebhookKind::Delivered => ResponseKind::Delivered,
            WebhookKind::Read => ResponseKind::Read,
            WebhookKind::OfferAccepted => ResponseKind::OfferAccepted,
            WebhookKind::OfferDeclined => ResponseKind::OfferDeclined,
        }
    }
}
