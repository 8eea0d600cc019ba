//! Events the hub publishes (through the outbox) for the campaign engine: one per status change and
//! one per response. On AMQP they go to exchange `clm.events` with routing keys
//! `status.<channel>.<state>` and `response.<channel>.<kind>`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::channel::ChannelId;
use crate::lifecycle::{ResponseKind, Status};

/// A communication changed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusEvent {
    pub communication_id: Uuid,
    pub campaign_id: String,
    pub channel: ChannelId,
    pub status: Status,
    pub at: DateTime<Utc>,
    /// Number of attempts made so far.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// A channel reported something about a communication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResponseEvent {
    pub response_id: Uuid,
    pub communication_id: Uuid,
    pub campaign_id: String,
    pub channel: ChannelId,
    pub kind: ResponseKind,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Everything the outbox carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Status(StatusEvent),
    Response(ResponseEvent),
}

impl Event {
    /// AMQP routing key on `clm.events`.
    pub fn routing_key(&self) -> String {
        match self {
            Event::Status(e) => format!("status.{}.{}", e.channel, e.status),
            Event::Response(e) => format!("response.{}.{}", e.channel, e.kind.as_str()),
        }
    }

    pub fn communication_id(&self) -> Uuid {
        match self {
            Event::Status(e) => e.communication_id,
            Event::Response(e) => e.communication_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_follow_the_contract() {
        let s = Event::Status(StatusEvent {
            communication_id: Uuid::nil(),
            campaign_id: "c".into(),
            channel: ChannelId::CrmB2c,
            status: Status::RetryWait,
            at: Utc::now(),
            attempts: 1,
            reason: None,
            external_id: None,
        });
        assert_eq!(s.routing_key(), "status.crm_b2c.retry_wait");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["type"], "status");
        let r = Event::Response(ResponseEvent {
            response_id: Uuid::nil(),
            communication_id: Uuid::nil(),
            campaign_id: "c".into(),
            channel: ChannelId::Sms,
            kind: ResponseKind::Delivered,
            at: Utc::now(),
            occurred_at: None,
            detail: None,
        });
        assert_eq!(r.routing_key(), "response.sms.delivered");
    }
}
