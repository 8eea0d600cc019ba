//! E-mail: what relays (or their delivery-event services) post to the hub's `/ingest/email`.
//!
//! Sending is SMTP (RFC 5321) through the corporate relay; every message carries a `Message-ID`
//! made from the communication id, which is how a [`Webhook`] names its message. The hub's own
//! tracking (open pixel, click redirects, one-click unsubscribe, RFC 8058) records the same
//! kinds of response without a webhook.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ResponseKind;

/// The hub's route for e-mail events.
pub const INGEST_PATH: &str = "/ingest/email";

/// What happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// The recipient's server accepted it.
    Delivered,
    /// It came back: see [`Bounce`].
    Bounced,
    /// The recipient opened it.
    Opened,
    /// The recipient followed a link (`url`).
    Clicked,
    /// The recipient unsubscribed.
    Unsubscribed,
    /// The recipient marked it as spam (a feedback loop report).
    Complained,
}

/// Whether a bounce is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BounceType {
    /// The address does not exist or never will accept mail: the address is suppressed.
    Hard,
    /// A temporary failure (mailbox full, server down); the relay may still deliver.
    Soft,
}

/// Details of a bounce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bounce {
    #[serde(rename = "type")]
    pub bounce_type: BounceType,
    /// The remote server's answer, e.g. `smtp; 550 5.1.1 user unknown` (RFC 3464
    /// Diagnostic-Code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<String>,
}

/// One event, POSTed to `/ingest/email` (authenticated by HMAC of the body or HTTP Basic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The sender's unique id of this event; the hub deduplicates on it.
    pub event_id: String,
    /// The `Message-ID` header of the message, as sent (`<…@…>`).
    pub message_id: String,
    pub kind: WebhookKind,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Bounces only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce: Option<Bounce>,
    /// Clicks only: the link followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Webhook {
    /// The shared response kind this event is recorded as. A soft bounce is not final: it is
    /// recorded as `buffered` (the relay keeps trying), a hard one as `undelivered`.
    pub fn response_kind(&self) -> ResponseKind {
        match self.kind {
            WebhookKind::Delivered => ResponseKind::Delivered,
            WebhookKind::Bounced => match self.bounce.as_ref().map(|b| b.bounce_type) {
                Some(BounceType::Soft) => ResponseKind::Buffered,
                _ => ResponseKind::Undelivered,
            },
            WebhookKind::Opened => ResponseKind::Opened,
            WebhookKind::Clicked => ResponseKind::Clicked,
            WebhookKind::Unsubscribed => ResponseKind::Unsubscribed,
            WebhookKind::Complained => ResponseKind::Complained,
        }
    }

    /// Whether the address must not be mailed again: a hard bounce, a complaint, an unsubscribe.
    pub fn suppresses(&self) -> bool {
        match self.kind {
            WebhookKind::Bounced => self
                .bounce
                .as_ref()
                .is_none_or(|b| b.bounce_type == BounceType::Hard),
            WebhookKind::Unsubscribed | WebhookKind::Complained => true,
            _ => false,
        }
    }
}
