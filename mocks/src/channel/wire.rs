//! What differs between wink, elk and eissd: the strict request parse, the answer, the ids, the
//! response kinds and the response bodies. Everything is built from `clm_contracts::channels`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use clm_contracts::ChannelId;
use clm_contracts::channels::{ErrorBody, eissd, elk, wink};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub(crate) fn send_path(channel: ChannelId) -> &'static str {
    match channel {
        ChannelId::Wink => wink::SEND_PATH,
        ChannelId::Elk => elk::SEND_PATH,
        _ => eissd::SEND_PATH,
    }
}

/// A fresh v4 UUID from the thread's generator (no system call per id).
pub(crate) fn fresh_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random::<u128>().to_le_bytes()).into_uuid()
}

/// The channel's id of an accepted message, in the style of the contract's examples.
pub(crate) fn new_external_id(channel: ChannelId) -> String {
    let id = fresh_uuid().simple();
    match channel {
        ChannelId::Wink => format!("wn-{id}"),
        ChannelId::Elk => format!("elk-msg-{id}"),
        _ => format!("EISSD-{id}"),
    }
}

/// What the mock needs from a valid send request; the rest is only recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Parsed {
    pub(crate) message_id: Uuid,
    /// elk: the first surface, reported in webhooks.
    pub(crate) surface: Option<elk::Surface>,
}

/// Parses `body` as the channel's strict `SendRequest` and checks the fields a real channel
/// would refuse; the error names the field.
pub(crate) fn parse(channel: ChannelId, body: &[u8]) -> Result<Parsed, String> {
    let required =
        |pairs: &[(&str, &str)]| match pairs.iter().find(|(_, value)| value.trim().is_empty()) {
            Some((name, _)) => Err(format!("{name} must not be empty")),
            None => Ok(()),
        };
    match channel {
        ChannelId::Wink => {
            let r: wink::SendRequest = strict(body)?;
            required(&[
                ("account_id", &r.account_id),
                ("title", &r.title),
                ("body", &r.body),
            ])?;
            Ok(Parsed {
                message_id: r.message_id,
                surface: None,
            })
        }
        ChannelId::Elk => {
            let r: elk::SendRequest = strict(body)?;
            required(&[
                ("account_id", &r.account_id),
                ("title", &r.title),
                ("text", &r.text),
            ])?;
            let Some(surface) = r.surfaces.first().copied() else {
                return Err("surfaces must hold at least one of web, mobile".to_owned());
            };
            Ok(Parsed {
                message_id: r.message_id,
                surface: Some(surface),
            })
        }
        _ => {
            let r: eissd::SendRequest = strict(body)?;
            required(&[
                ("customer_id", &r.customer_id),
                ("offer_code", &r.offer_code),
                ("campaign_id", &r.campaign_id),
            ])?;
            Ok(Parsed {
                message_id: r.message_id,
                surface: None,
            })
        }
    }
}

/// `serde_json` with the path of the field that failed in front of the error.
fn strict<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// The `message_id` of a body that is JSON but maybe not a valid request, for the record.
pub(crate) fn loose_message_id(body: &serde_json::Value) -> Option<Uuid> {
    body.get("message_id")?.as_str()?.parse().ok()
}

/// The 2xx answer to an accepted send.
pub(crate) fn answer(
    channel: ChannelId,
    external_id: &str,
    accepted_at: DateTime<Utc>,
) -> Response {
    let external_id = external_id.to_owned();
    match channel {
        ChannelId::Wink => json(
            StatusCode::OK,
            &wink::SendResponse {
                wink_id: external_id,
                accepted_at,
            },
        ),
        ChannelId::Elk => json(
            StatusCode::OK,
            &elk::SendResponse {
                elk_id: external_id,
            },
        ),
        _ => json(
            StatusCode::OK,
            &eissd::SendResponse {
                eissd_id: external_id,
            },
        ),
    }
}

/// A non-2xx answer with the contract's `ErrorBody`.
pub(crate) fn error(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: error.to_owned(),
        message: Some(message.into()),
    };
    json(status, &body)
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    (status, Json(body)).into_response()
}

/// The machine code of an error status, as the channels' `ErrorBody.error`.
pub(crate) fn error_code(status: StatusCode) -> String {
    match status.as_u16() {
        400 => "invalid_request".to_owned(),
        401 => "unauthorized".to_owned(),
        429 => "rate_limited".to_owned(),
        503 => "unavailable".to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace([' ', '-'], "_"),
    }
}

/// A response kind of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Wink(wink::WebhookKind),
    Elk(elk::WebhookKind),
    Eissd(eissd::RowKind),
}

impl Kind {
    /// `name` as the contract spells it (`delivered`, `offer_accepted`, `opted_out`, …).
    pub(crate) fn parse(channel: ChannelId, name: &str) -> Result<Kind, String> {
        let value = serde_json::Value::String(name.to_owned());
        let parsed = match channel {
            ChannelId::Wink => serde_json::from_value(value).map(Kind::Wink).ok(),
            ChannelId::Elk => serde_json::from_value(value).map(Kind::Elk).ok(),
            ChannelId::Eissd => serde_json::from_value(value).map(Kind::Eissd).ok(),
            _ => None,
        };
        parsed.ok_or_else(|| {
            let known = match channel {
                ChannelId::Wink => "delivered, shown, clicked, dismissed",
                ChannelId::Elk => "delivered, read, offer_accepted, offer_declined",
                _ => "accepted, declined, interested, opted_out",
            };
            format!("kinds: `{name}` is not a {channel} kind (one of {known})")
        })
    }

    /// The contract's spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Wink(k) => match k {
                wink::WebhookKind::Delivered => "delivered",
                wink::WebhookKind::Shown => "shown",
                wink::WebhookKind::Clicked => "clicked",
                wink::WebhookKind::Dismissed => "dismissed",
            },
            Kind::Elk(k) => match k {
                elk::WebhookKind::Delivered => "delivered",
                elk::WebhookKind::Read => "read",
                elk::WebhookKind::OfferAccepted => "offer_accepted",
                elk::WebhookKind::OfferDeclined => "offer_declined",
            },
            Kind::Eissd(k) => match k {
                eissd::RowKind::Accepted => "accepted",
                eissd::RowKind::Declined => "declined",
                eissd::RowKind::Interested => "interested",
                eissd::RowKind::OptedOut => "opted_out",
            },
        }
    }
}

/// The message a response is about.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) message_id: Uuid,
    pub(crate) external_id: Option<String>,
    pub(crate) surface: Option<elk::Surface>,
}

/// The webhook body for a wink or elk event (`None` for eissd), with a fresh `event_id`.
pub(crate) fn webhook(target: &Target, kind: Kind) -> Option<(String, Vec<u8>)> {
    let event_id = format!("evt-{}", fresh_uuid());
    let body = match kind {
        Kind::Wink(kind) => serde_json::to_vec(&wink::Webhook {
            event_id: event_id.clone(),
            message_id: target.message_id,
            wink_id: target.external_id.clone(),
            kind,
            occurred_at: Utc::now(),
        }),
        Kind::Elk(kind) => serde_json::to_vec(&elk::Webhook {
            event_id: event_id.clone(),
            message_id: target.message_id,
            elk_id: target.external_id.clone(),
            kind,
            occurred_at: Utc::now(),
            surface: target.surface,
        }),
        Kind::Eissd(_) => return None,
    };
    // Serializing these plain structs cannot fail.
    body.ok().map(|body| (event_id, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_the_field() {
        let id = Uuid::nil();
        let ok = format!(r#"{{"message_id":"{id}","account_id":"a","title":"t","body":"b"}}"#);
        assert_eq!(
            parse(ChannelId::Wink, ok.as_bytes()).unwrap().message_id,
            id
        );

        let wrong_type =
            format!(r#"{{"message_id":"{id}","account_id":1,"title":"t","body":"b"}}"#);
        let err = parse(ChannelId::Wink, wrong_type.as_bytes()).unwrap_err();
        assert!(err.starts_with("account_id: "), "{err}");

        let missing = format!(r#"{{"message_id":"{id}","account_id":"a","title":"t"}}"#);
        let err = parse(ChannelId::Wink, missing.as_bytes()).unwrap_err();
        assert!(err.contains("`body`"), "{err}");

        let unknown =
            format!(r#"{{"message_id":"{id}","account_id":"a","title":"t","body":"b","bdy":1}}"#);
        let err = parse(ChannelId::Wink, unknown.as_bytes()).unwrap_err();
        assert!(err.contains("`bdy`"), "{err}");

        let empty = format!(r#"{{"message_id":"{id}","account_id":" ","title":"t","body":"b"}}"#);
        let err = parse(ChannelId::Wink, empty.as_bytes()).unwrap_err();
        assert!(err.starts_with("account_id"), "{err}");

        let no_surface = format!(
            r#"{{"message_id":"{id}","account_id":"a","title":"t","text":"x","surfaces":[]}}"#
        );
        let err = parse(ChannelId::Elk, no_surface.as_bytes()).unwrap_err();
        assert!(err.starts_with("surfaces"), "{err}");

        let trailing = format!("{ok} x");
        assert!(parse(ChannelId::Wink, trailing.as_bytes()).is_err());
    }

    #[test]
    fn kinds_are_the_contract_spellings() {
        for (channel, name) in [
            (ChannelId::Wink, "clicked"),
            (ChannelId::Elk, "offer_accepted"),
            (ChannelId::Eissd, "opted_out"),
        ] {
            assert_eq!(Kind::parse(channel, name).unwrap().as_str(), name);
        }
        let err = Kind::parse(ChannelId::Wink, "read").unwrap_err();
        assert!(err.contains("`read`"), "{err}");
        assert!(Kind::parse(ChannelId::Eissd, "delivered").is_err());
    }

    #[test]
    fn error_codes_are_snake_case() {
        assert_eq!(
            error_code(StatusCode::INTERNAL_SERVER_ERROR),
            "internal_server_error"
        );
        assert_eq!(error_code(StatusCode::SERVICE_UNAVAILABLE), "unavailable");
        assert_eq!(error_code(StatusCode::TOO_MANY_REQUESTS), "rate_limited");
    }
}
