//! The communication the campaign engine submits (over HTTP or AMQP), and its validation.
//!
//! Validation is split in two: serde rejects what is structurally wrong (missing field, wrong type,
//! unknown field), [`Communication::validate`] rejects what is well-formed but unusable (an MSISDN
//! that is not one, an empty text, an unknown time zone). Both produce a message that names the field.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::channel::ChannelId;

/// One communication: one message to one recipient over one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Communication {
    /// Idempotency key chosen by the campaign engine: the same id twice is one communication.
    pub id: Uuid,
    pub campaign_id: String,
    pub customer_id: String,
    pub channel: ChannelId,
    /// MSISDN (sms), e-mail address (email) or account id (other channels).
    pub recipient: String,
    #[serde(default)]
    pub content: Content,
    /// Not sent before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// Never sent after this instant; it ends `expired` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// 0 (lowest) to 9 (highest); higher priorities are claimed first.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// IANA zone of the recipient (`Asia/Vladivostok`), for send windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

fn default_priority() -> u8 {
    5
}

/// What is said; which fields a channel needs depends on the channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_code: Option<String>,
}

/// A well-formed communication that cannot be delivered as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// JSON path of the offending field, e.g. `content.text`.
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field,
        message: message.into(),
    }
}

/// Longest SMS text accepted: 10 concatenated UCS-2 parts (67 characters each).
pub const SMS_MAX_CHARS: usize = 670;
/// Longest id-like field (campaign, customer, attribute keys).
pub const MAX_ID_LEN: usize = 128;

impl Communication {
    /// Checks what serde cannot: value ranges, formats and what the channel needs.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.id.is_nil() {
            return Err(invalid("id", "must not be the nil UUID"));
        }
        non_blank_id("campaign_id", &self.campaign_id)?;
        non_blank_id("customer_id", &self.customer_id)?;
        if self.recipient.trim().is_empty() {
            return Err(invalid("recipient", "must not be empty"));
        }
        if self.priority > 9 {
            return Err(invalid("priority", "must be between 0 and 9"));
        }
        if let Some(tz) = &self.timezone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(invalid(
                "timezone",
                "is not an IANA time zone name (e.g. Europe/Moscow)",
            ));
        }
        if let (Some(nb), Some(exp)) = (self.not_before, self.expires_at)
            && exp <= nb
        {
            return Err(invalid("expires_at", "must be later than not_before"));
        }
        match self.channel {
            ChannelId::Sms => {
                if !is_msisdn(&self.recipient) {
                    return Err(invalid(
                        "recipient",
                        "is not an MSISDN (10 to 15 digits, optional leading +)",
                    ));
                }
                let text = self.content.text.as_deref().unwrap_or("");
                if text.trim().is_empty() {
                    return Err(invalid("content.text", "is required for sms"));
                }
                if text.chars().count() > SMS_MAX_CHARS {
                    return Err(invalid(
                        "content.text",
                        format!("is longer than {SMS_MAX_CHARS} characters"),
                    ));
                }
            }
            ChannelId::Email => {
                if !looks_like_email(&self.recipient) {
                    return Err(invalid("recipient", "is not an e-mail address"));
                }
                if self.content.text.is_none()
                    && self.content.html.is_none()
                    && self.content.template_id.is_none()
                {
                    return Err(invalid("content", "e-mail needs text, html or template_id"));
                }
            }
            ChannelId::Wink | ChannelId::Elk => {
                required("content.subject", &self.content.subject, self.channel)?;
                required("content.text", &self.content.text, self.channel)?;
                if self.channel == ChannelId::Elk {
                    elk_surfaces(self)?;
                }
            }
            ChannelId::Eissd => {
                required("content.offer_code", &self.content.offer_code, self.channel)?;
            }
            _ => {
                if self.content.text.is_none()
                    && self.content.template_id.is_none()
                    && self.content.offer_code.is_none()
                {
                    return Err(invalid("content", "needs text, template_id or offer_code"));
                }
            }
        }
        Ok(())
    }
}

/// The attribute naming the ELK surfaces: `web`, `mobile` or `web,mobile` (both when absent).
pub const ELK_SURFACES_ATTRIBUTE: &str = "surfaces";

/// The surfaces an ELK communication asks for (attribute [`ELK_SURFACES_ATTRIBUTE`]); both when
/// the attribute is absent.
pub fn elk_surfaces(
    comm: &Communication,
) -> Result<Vec<crate::channels::elk::Surface>, ValidationError> {
    use crate::channels::elk::Surface;
    let Some(list) = comm.attributes.get(ELK_SURFACES_ATTRIBUTE) else {
        return Ok(vec![Surface::Web, Surface::Mobile]);
    };
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim) {
        let s = match item {
            "web" => Surface::Web,
            "mobile" => Surface::Mobile,
            other => {
                return Err(invalid(
                    "attributes.surfaces",
                    format!("`{other}` is not a surface (web, mobile)"),
                ));
            }
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

fn required(
    field: &'static str,
    value: &Option<String>,
    channel: ChannelId,
) -> Result<(), ValidationError> {
    if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
        return Err(invalid(field, format!("is required for {channel}")));
    }
    Ok(())
}

fn non_blank_id(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(invalid(field, format!("is longer than {MAX_ID_LEN} bytes")));
    }
    Ok(())
}

/// E.164-style MSISDN: optional `+`, then 10 to 15 digits.
pub fn is_msisdn(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    (10..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

fn looks_like_email(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sms() -> Communication {
        serde_json::from_value(serde_json::json!({
            "id": "0190b7a0-0000-7000-8000-000000000001",
            "campaign_id": "cmp-1",
            "customer_id": "cust-1",
            "channel": "sms",
            "recipient": "+79001234567",
            "content": {"text": "Привет"}
        }))
        .unwrap()
    }

    #[test]
    fn a_plain_sms_is_valid_and_gets_default_priority() {
        let c = sms();
        assert_eq!(c.priority, 5);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err = serde_json::from_value::<Communication>(serde_json::json!({
            "id": "0190b7a0-0000-7000-8000-000000000001",
            "campaign_id": "c", "customer_id": "c", "channel": "sms",
            "recipient": "+79001234567", "content": {"text": "x"}, "priorty": 3
        }))
        .unwrap_err();
        assert!(err.to_string().contains("priorty"), "{err}");
    }

    #[test]
    fn sms_needs_an_msisdn_and_a_text() {
        let mut c = sms();
        c.recipient = "hello".into();
        assert_eq!(c.validate().unwrap_err().field, "recipient");
        let mut c = sms();
        c.content.text = Some("  ".into());
        assert_eq!(c.validate().unwrap_err().field, "content.text");
    }

    #[test]
    fn bad_time_zone_and_inverted_window_are_rejected() {
        let mut c = sms();
        c.timezone = Some("Mars/Olympus".into());
        assert_eq!(c.validate().unwrap_err().field, "timezone");
        let mut c = sms();
        c.timezone = Some("Asia/Vladivostok".into());
        c.validate().unwrap();
        c.not_before = Some(Utc::now());
        c.expires_at = Some(Utc::now() - chrono::Duration::hours(1));
        assert_eq!(c.validate().unwrap_err().field, "expires_at");
    }

    #[test]
    fn priority_above_nine_is_rejected() {
        let mut c = sms();
        c.priority = 10;
        assert_eq!(c.validate().unwrap_err().field, "priority");
    }

    #[test]
    fn msisdn_accepts_e164_forms_only() {
        assert!(is_msisdn("+79001234567"));
        assert!(is_msisdn("79001234567"));
        assert!(!is_msisdn("+7900"));
        assert!(!is_msisdn("+7900123456a"));
    }

    #[test]
    fn http_channels_need_their_fields() {
        let mut c = sms();
        c.channel = ChannelId::Wink;
        c.recipient = "acc-1".into();
        c.content.subject = None;
        assert_eq!(c.validate().unwrap_err().field, "content.subject");
        c.content.subject = Some("Скидка".into());
        assert!(c.validate().is_ok());

        c.channel = ChannelId::Elk;
        c.attributes
            .insert(ELK_SURFACES_ATTRIBUTE.into(), "web, tv".into());
        assert_eq!(c.validate().unwrap_err().field, "attributes.surfaces");
        c.attributes
            .insert(ELK_SURFACES_ATTRIBUTE.into(), "mobile,mobile".into());
        assert_eq!(
            elk_surfaces(&c).unwrap(),
            vec![crate::channels::elk::Surface::Mobile]
        );
        c.attributes.clear();
        assert_eq!(elk_surfaces(&c).unwrap().len(), 2);

        c.channel = ChannelId::Eissd;
        assert_eq!(c.validate().unwrap_err().field, "content.offer_code");
        c.content.offer_code = Some("OFF-1".into());
        assert!(c.validate().is_ok());
    }
}
