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
/// Longest recipient (an e-mail address is at most 254 octets, RFC 5321 §4.5.3.1.3).
pub const MAX_RECIPIENT_LEN: usize = 320;
/// Longest subject, template id or offer code.
pub const MAX_SHORT_TEXT_LEN: usize = 1024;
/// Longest text or HTML body.
pub const MAX_BODY_LEN: usize = 256 * 1024;
/// Most attributes, and the longest attribute value.
pub const MAX_ATTRIBUTES: usize = 64;
pub const MAX_ATTRIBUTE_LEN: usize = 1024;
/// Largest `content.params`, serialized.
pub const MAX_PARAMS_LEN: usize = 64 * 1024;

/// Text the stores can hold: PostgreSQL refuses U+0000 in `text` (SQLite would keep it, and
/// every reader would then see a truncated string), so it is refused at the door on both, with
/// the field named. (A lone surrogate cannot reach here: JSON parsing refuses it.)
pub fn storable(field: &'static str, value: &str, max_len: usize) -> Result<(), ValidationError> {
    if value.contains('\0') {
        return Err(invalid(
            field,
            "contains U+0000 (NUL), which cannot be stored",
        ));
    }
    if value.len() > max_len {
        return Err(invalid(field, format!("is longer than {max_len} bytes")));
    }
    Ok(())
}

/// Replaces what a store cannot hold (U+0000) in text that comes from a channel and cannot be
/// refused (an answer, a diagnostic), and caps its length at a character boundary.
pub fn sanitize(value: &str, max_len: usize) -> std::borrow::Cow<'_, str> {
    if !value.contains('\0') && value.len() <= max_len {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out: String = value.replace('\0', "\u{FFFD}");
    if out.len() > max_len {
        let mut end = max_len;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    std::borrow::Cow::Owned(out)
}

/// A short, printable rendering of an untrusted key for an error message.
fn key_for_message(key: &str) -> String {
    let shown: String = key.chars().take(40).collect();
    format!("{shown:?}")
}

fn storable_json(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => !s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().all(storable_json),
        serde_json::Value::Object(o) => {
            o.iter().all(|(k, v)| !k.contains('\0') && storable_json(v))
        }
        _ => true,
    }
}

impl Communication {
    /// Everything the store must be able to hold: no U+0000 anywhere, every field within its
    /// length. Checked first, so a poisoned item is refused before it can fail a batch.
    fn check_storable(&self) -> Result<(), ValidationError> {
        storable("campaign_id", &self.campaign_id, MAX_ID_LEN)?;
        storable("customer_id", &self.customer_id, MAX_ID_LEN)?;
        storable("recipient", &self.recipient, MAX_RECIPIENT_LEN)?;
        let c = &self.content;
        let short = [
            ("content.subject", &c.subject),
            ("content.template_id", &c.template_id),
            ("content.offer_code", &c.offer_code),
        ];
        for (field, v) in short {
            if let Some(v) = v {
                storable(field, v, MAX_SHORT_TEXT_LEN)?;
            }
        }
        for (field, v) in [("content.text", &c.text), ("content.html", &c.html)] {
            if let Some(v) = v {
                storable(field, v, MAX_BODY_LEN)?;
            }
        }
        for (k, v) in &c.params {
            if k.contains('\0') || !storable_json(v) {
                return Err(invalid(
                    "content.params",
                    format!(
                        "parameter {} contains U+0000 (NUL), which cannot be stored",
                        key_for_message(k)
                    ),
                ));
            }
        }
        if !c.params.is_empty() {
            let size = serde_json::to_string(&c.params).map_or(usize::MAX, |s| s.len());
            if size > MAX_PARAMS_LEN {
                return Err(invalid(
                    "content.params",
                    format!("is larger than {MAX_PARAMS_LEN} bytes"),
                ));
            }
        }
        if let Some(tz) = &self.timezone {
            storable("timezone", tz, MAX_ID_LEN)?;
        }
        if self.attributes.len() > MAX_ATTRIBUTES {
            return Err(invalid(
                "attributes",
                format!("has more than {MAX_ATTRIBUTES} entries"),
            ));
        }
        for (k, v) in &self.attributes {
            let key_ok = !k.trim().is_empty() && !k.contains('\0') && k.len() <= MAX_ID_LEN;
            if !key_ok {
                return Err(invalid(
                    "attributes",
                    format!(
                        "key {} must be 1 to {MAX_ID_LEN} bytes without U+0000",
                        key_for_message(k)
                    ),
                ));
            }
            if v.contains('\0') || v.len() > MAX_ATTRIBUTE_LEN {
                return Err(invalid(
                    "attributes",
                    format!(
                        "value of {} must be at most {MAX_ATTRIBUTE_LEN} bytes without U+0000",
                        key_for_message(k)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks what serde cannot: value ranges, formats and what the channel needs.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.check_storable()?;
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
                // A template id alone cannot be sent: nothing renders it into a body yet.
                let body = |v: &Option<String>| v.as_deref().is_some_and(|t| !t.trim().is_empty());
                if !body(&self.content.text) && !body(&self.content.html) {
                    return Err(invalid("content", "e-mail needs text or html"));
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

/// One mailbox, `local@domain`: the e-mail channel sends one transaction per recipient, so a
/// list (`a@x.ru,b@y.ru`), a display name (`Ann <a@x.ru>`) or a quoted local part is refused
/// here rather than failing at every send.
fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"()<>[]:;@\\,\"".contains(c));
    let labels_ok = domain.split('.').all(|l| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c == '-' || c.is_alphanumeric())
    });
    local_ok && domain.contains('.') && domain.len() <= 253 && labels_ok
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
    fn nul_anywhere_is_refused_with_its_field() {
        type Poison = Box<dyn Fn(&mut Communication)>;
        let cases: Vec<(&str, Poison)> = vec![
            ("campaign_id", Box::new(|c| c.campaign_id = "cmp\0".into())),
            ("customer_id", Box::new(|c| c.customer_id = "\0".into())),
            (
                "recipient",
                Box::new(|c| c.recipient = "+7900123\u{0}4567".into()),
            ),
            (
                "content.text",
                Box::new(|c| c.content.text = Some("При\0вет".into())),
            ),
            (
                "content.subject",
                Box::new(|c| c.content.subject = Some("\0".into())),
            ),
            (
                "content.html",
                Box::new(|c| c.content.html = Some("<p>\0".into())),
            ),
            (
                "content.template_id",
                Box::new(|c| c.content.template_id = Some("t\0".into())),
            ),
            (
                "content.offer_code",
                Box::new(|c| c.content.offer_code = Some("\0".into())),
            ),
            (
                "timezone",
                Box::new(|c| c.timezone = Some("Europe/Moscow\0".into())),
            ),
            (
                "content.params",
                Box::new(|c| {
                    c.content
                        .params
                        .insert("name".into(), serde_json::json!(["ok", {"x": "a\0"}]));
                }),
            ),
            (
                "attributes",
                Box::new(|c| {
                    c.attributes.insert("category".into(), "mark\0eting".into());
                }),
            ),
            (
                "attributes",
                Box::new(|c| {
                    c.attributes.insert("k\0".into(), "v".into());
                }),
            ),
        ];
        for (field, poison) in cases {
            let mut c = sms();
            poison(&mut c);
            let err = c.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(
                !err.message.contains('\0'),
                "the message never echoes the NUL"
            );
        }
    }

    #[test]
    fn over_long_fields_are_refused_with_their_field() {
        let mut c = sms();
        c.recipient = format!("+7{}", "9".repeat(400));
        assert_eq!(c.validate().unwrap_err().field, "recipient");
        let mut c = sms();
        c.content.subject = Some("s".repeat(MAX_SHORT_TEXT_LEN + 1));
        assert_eq!(c.validate().unwrap_err().field, "content.subject");
        let mut c = sms();
        c.content.html = Some("h".repeat(MAX_BODY_LEN + 1));
        assert_eq!(c.validate().unwrap_err().field, "content.html");
        let mut c = sms();
        c.content
            .params
            .insert("big".into(), "x".repeat(MAX_PARAMS_LEN).into());
        assert_eq!(c.validate().unwrap_err().field, "content.params");
        let mut c = sms();
        for i in 0..=MAX_ATTRIBUTES {
            c.attributes.insert(format!("k{i}"), "v".into());
        }
        assert_eq!(c.validate().unwrap_err().field, "attributes");
        let mut c = sms();
        c.attributes
            .insert("k".into(), "v".repeat(MAX_ATTRIBUTE_LEN + 1));
        assert_eq!(c.validate().unwrap_err().field, "attributes");
    }

    #[test]
    fn sanitize_replaces_nul_and_cuts_at_a_char_boundary() {
        assert!(matches!(
            sanitize("ok", 10),
            std::borrow::Cow::Borrowed("ok")
        ));
        assert_eq!(sanitize("a\0b", 10), "a\u{FFFD}b");
        assert_eq!(sanitize("привет", 5), "пр");
    }

    #[test]
    fn email_needs_one_mailbox_and_a_body() {
        let mut c = sms();
        c.channel = ChannelId::Email;
        c.content.subject = Some("Hi".into());
        for ok in [
            "a@x.ru",
            "ivan.petrov+promo@mail.example.com",
            "user@пример.рф",
        ] {
            c.recipient = ok.into();
            assert!(c.validate().is_ok(), "{ok}");
        }
        for bad in [
            "a@x.ru,b@y.ru",
            "a@x.ru;b@y.ru",
            "Ann <a@x.ru>",
            "a@b@x.ru",
            "a@x..ru",
            "@x.ru",
            "a@x",
            "a b@x.ru",
            ".a@x.ru",
            "a@-x.ru",
        ] {
            c.recipient = bad.into();
            assert_eq!(c.validate().unwrap_err().field, "recipient", "{bad}");
        }
        c.recipient = "a@x.ru".into();
        c.content.text = None;
        c.content.template_id = Some("welcome".into());
        assert_eq!(c.validate().unwrap_err().field, "content");
        c.content.html = Some("<p>Hi</p>".into());
        assert!(c.validate().is_ok());
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

/// A recipient as logs, lists and the console show it: an e-mail address keeps two characters
/// of its local part and its domain (`iv***@example.ru`); a phone number its first five and last
/// four characters (`+7900***4567`); anything else (an account or CRM id) its first and last two
/// when it is long enough to keep something hidden, else nothing.
pub fn mask_recipient(recipient: &str) -> String {
    let r = recipient.trim();
    let chars: Vec<char> = r.chars().collect();
    let keep = |head: usize, tail: usize| -> String {
        let h: String = chars[..head].iter().collect();
        let t: String = chars[chars.len() - tail..].iter().collect();
        format!("{h}***{t}")
    };
    if let Some((local, domain)) = r.rsplit_once('@') {
        let head: String = local
            .chars()
            .take(2.min(local.chars().count().saturating_sub(1)))
            .collect();
        return format!("{head}***@{domain}");
    }
    let phone = chars.len() >= 10
        && chars
            .iter()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || (i == 0 && *c == '+'));
    if phone {
        keep(5, 4)
    } else if chars.len() >= 8 {
        keep(2, 2)
    } else {
        "***".to_owned()
    }
}

#[cfg(test)]
mod mask_tests {
    use super::mask_recipient;

    #[test]
    fn recipients_are_masked_keeping_what_identifies_the_kind_only() {
        assert_eq!(mask_recipient("+79001234567"), "+7900***4567");
        assert_eq!(mask_recipient("79001234567"), "79001***4567");
        assert_eq!(mask_recipient("ivan@example.ru"), "iv***@example.ru");
        assert_eq!(mask_recipient("i@example.ru"), "***@example.ru");
        assert_eq!(mask_recipient("wink-account-1"), "wi***-1");
        assert_eq!(mask_recipient("c-1"), "***");
        assert_eq!(mask_recipient("Иван-Петров-1"), "Ив***-1");
        assert!(!mask_recipient("ivan.petrov@example.ru").contains("ivan.petrov"));
    }
}
