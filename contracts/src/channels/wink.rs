//! Wink: push / in-app notification to a Wink account, over HTTPS.
//!
//! `POST {base}/v1/notifications` with a [`SendRequest`], answered 2xx with a [`SendResponse`];
//! errors carry an [`ErrorBody`]. Wink posts a [`Webhook`] to the hub's `/ingest/wink` for every
//! event of a notification.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use super::ErrorBody;
use crate::ResponseKind;

/// Path of the send endpoint, relative to the configured base URL.
pub const SEND_PATH: &str = "/v1/notifications";
/// The hub's route for Wink webhooks.
pub const INGEST_PATH: &str = "/ingest/wink";

/// One notification to one Wink account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The hub's communication id; Wink echoes it in every webhook and treats a repeated id as the
    /// same notification (idempotency key).
    pub message_id: Uuid,
    /// The Wink account to notify (the communication's `recipient`).
    pub account_id: String,
    /// Notification title (the communication's `content.subject`).
    pub title: String,
    /// Notification text (the communication's `content.text`).
    pub body: String,
    /// Where a tap leads inside the app, e.g. `wink://movie/123`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep_link: Option<String>,
    /// HTTPS URL of an image shown with the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// After this instant Wink must not show the notification any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Wink's 2xx answer: the notification was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SendResponse {
    /// Wink's id of the notification (the attempt's external id).
    pub wink_id: String,
    /// When Wink accepted it.
    pub accepted_at: DateTime<Utc>,
}

/// What happened to a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// Reached the account's device.
    Delivered,
    /// Displayed to the user.
    Shown,
    /// The user tapped it.
    Clicked,
    /// The user swiped it away.
    Dismissed,
}

/// One event, POSTed by Wink to `/ingest/wink`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Wink's unique id of this event; the hub deduplicates on it.
    pub event_id: String,
    /// The `message_id` of the [`SendRequest`] (the hub's communication id).
    pub message_id: Uuid,
    /// Wink's id of the notification, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wink_id: Option<String>,
    pub kind: WebhookKind,
    /// When it happened on Wink's side.
    pub occurred_at: DateTime<Utc>,
}

impl Webhook {
    /// The shared response kind this event is recorded and published as.
    pub fn response_kind(&self) -> ResponseKind {
        match self.kind {
            WebhookKind::Delivered => ResponseKind::Delivered,
            WebhookKind::Shown => ResponseKind::Shown,
            WebhookKind::Clicked => ResponseKind::Clicked,
            WebhookKind::Dismissed => ResponseKind::Dismissed,
        }
    }
}
