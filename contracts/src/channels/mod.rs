//! Wire contracts of the three HTTP JSON channels: [`wink`], [`elk`] and [`eissd`].
//!
//! The real systems' APIs are not public, so the hub defines them here; the connectors
//! (`clm-connectors`) and the mocks (`clm-mocks`) are both built from these types, never from each
//! other. `contracts/README.md` describes the endpoints, auth, status codes and webhooks, and
//! `contracts/examples/` holds one JSON example per operation.
//!
//! Conventions shared by all three:
//! - `message_id` is always the hub's communication id ([`crate::Communication::id`]), so every
//!   answer and every response can be correlated without a lookup table.
//! - Timestamps are RFC 3339 in UTC.
//! - Request and response (webhook, DWH row) bodies are strict (`deny_unknown_fields`): a misspelt
//!   field fails instead of being silently dropped. Answers from the channel are read tolerantly, so
//!   a channel adding a field does not break sending.
//! - A send is answered 2xx with the channel's answer body (sent); 429 (with `Retry-After`) means
//!   "retry later" and slows the whole channel down; 503, 408, 401/403 and other 5xx are retried
//!   with backoff (after `Retry-After` when given); any other 4xx means refused (failed, no retry).
//!   Non-2xx answers carry an [`ErrorBody`].

pub mod eissd;
pub mod elk;
pub mod email;
pub mod wink;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Header carrying the HMAC signature of a webhook body: `sha256=<lowercase hex HMAC-SHA256 of
/// the raw body, keyed with the channel's shared secret>`.
pub const SIGNATURE_HEADER: &str = "X-CLM-Signature";
/// Prefix of the [`SIGNATURE_HEADER`] value.
pub const SIGNATURE_PREFIX: &str = "sha256=";

/// The error body of every non-2xx answer of the three channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Machine-readable error code, e.g. `invalid_account`, `rate_limited`, `unavailable`.
    pub error: String,
    /// Human-readable explanation, for logs and attempt records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::{ErrorBody, eissd, elk, email, wink};
    use crate::ResponseKind;

    fn examples_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
    }

    /// Deserializes `contracts/examples/<file>` into `T`, serializes it back, and checks nothing
    /// was lost or added.
    fn round_trip<T: DeserializeOwned + Serialize>(file: &str) -> T {
        let text = std::fs::read_to_string(examples_dir().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let original: serde_json::Value = serde_json::from_str(&text).unwrap();
        let typed: T = serde_json::from_value(original.clone())
            .unwrap_or_else(|e| panic!("{file} does not match its type: {e}"));
        let again = serde_json::to_value(&typed).unwrap();
        assert_eq!(again, original, "{file} does not round-trip");
        typed
    }

    /// Every example, checked against its type; returns the file names checked.
    fn check_all() -> Vec<&'static str> {
        let mut seen = Vec::new();
        let mut ok = |file: &'static str| seen.push(file);

        round_trip::<wink::SendRequest>("wink-send-request.json");
        ok("wink-send-request.json");
        round_trip::<wink::SendResponse>("wink-send-response.json");
        ok("wink-send-response.json");
        round_trip::<ErrorBody>("wink-error.json");
        ok("wink-error.json");
        let w: wink::Webhook = round_trip("wink-webhook-clicked.json");
        assert_eq!(w.response_kind(), ResponseKind::Clicked);
        ok("wink-webhook-clicked.json");

        round_trip::<elk::SendRequest>("elk-send-request.json");
        ok("elk-send-request.json");
        round_trip::<elk::SendResponse>("elk-send-response.json");
        ok("elk-send-response.json");
        round_trip::<ErrorBody>("elk-error.json");
        ok("elk-error.json");
        let e: elk::Webhook = round_trip("elk-webhook-offer-accepted.json");
        assert_eq!(e.response_kind(), ResponseKind::OfferAccepted);
        ok("elk-webhook-offer-accepted.json");

        round_trip::<eissd::SendRequest>("eissd-send-request.json");
        ok("eissd-send-request.json");
        round_trip::<eissd::SendResponse>("eissd-send-response.json");
        ok("eissd-send-response.json");
        round_trip::<ErrorBody>("eissd-error.json");
        ok("eissd-error.json");
        let r: eissd::ResponseRow = round_trip("eissd-response-row.json");
        assert_eq!(r.response_kind(), ResponseKind::Interested);
        ok("eissd-response-row.json");

        let m: email::Webhook = round_trip("email-webhook-bounced.json");
        assert_eq!(m.response_kind(), ResponseKind::Undelivered);
        assert!(m.suppresses());
        ok("email-webhook-bounced.json");

        seen
    }

    #[test]
    fn every_example_deserializes_and_round_trips() {
        let checked: BTreeSet<String> = check_all().into_iter().map(String::from).collect();
        let on_disk: BTreeSet<String> = std::fs::read_dir(examples_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".json"))
            .collect();
        assert_eq!(
            checked, on_disk,
            "every example in contracts/examples/ must be checked"
        );
    }

    #[test]
    fn misspelt_fields_are_refused() {
        let mut request: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(examples_dir().join("wink-send-request.json")).unwrap(),
        )
        .unwrap();
        let body = request["body"].take();
        request.as_object_mut().unwrap().remove("body");
        request["bdy"] = body;
        assert!(serde_json::from_value::<wink::SendRequest>(request).is_err());

        let mut hook: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(examples_dir().join("elk-webhook-offer-accepted.json"))
                .unwrap(),
        )
        .unwrap();
        hook["surfce"] = "web".into();
        assert!(serde_json::from_value::<elk::Webhook>(hook).is_err());
    }

    #[test]
    fn answers_tolerate_new_fields() {
        let answer = serde_json::json!({"wink_id": "w-1", "accepted_at": "2025-06-01T10:00:00Z", "queue": 3});
        assert!(serde_json::from_value::<wink::SendResponse>(answer).is_ok());
    }

    #[test]
    fn readme_documents_the_eissd_table_as_defined() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(eissd::DDL.trim()),
            "contracts/README.md must contain eissd::DDL verbatim"
        );
    }
}
