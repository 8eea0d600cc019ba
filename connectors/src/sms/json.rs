//! The JSON gateway dialect (`clm_contracts::sms::wire::JsonSendRequest` and friends).

use std::time::Duration;

use chrono::{DateTime, Utc};
use clm_contracts::Communication;
use clm_contracts::ResponseKind;
use clm_contracts::sms::wire::{JsonDlr, JsonSendRequest, JsonSendResponse};

use super::SmsConfig;
use crate::outcome::{
    Outcome, Report, ReportError, ReportRef, answer_excerpt, classify_http_error,
};

pub fn request(
    client: &reqwest::Client,
    config: &SmsConfig,
    comm: &Communication,
    dlr_route: Option<String>,
    now: DateTime<Utc>,
) -> reqwest::RequestBuilder {
    let body = JsonSendRequest {
        from: config.from.clone(),
        to: comm.recipient.clone(),
        text: comm.content.text.clone().unwrap_or_default(),
        client_ref: comm.id.to_string(),
        validity_minutes: super::validity_minutes(comm, now),
        dlr_url: dlr_route,
    };
    let mut rb = client.post(&config.url).json(&body);
    if let Some(user) = &config.username {
        rb = rb.basic_auth(user, config.password.as_ref());
    }
    rb
}

/// 2xx with a message id: sent. 2xx without a readable body: the gateway took it, so still sent
/// (resending would duplicate), but without an id; reports correlate by `client_ref`.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Outcome {
    let answer = answer_excerpt(status, body);
    if (200..300).contains(&status) {
        let external_id = serde_json::from_str::<JsonSendResponse>(body)
            .ok()
            .map(|r| r.message_id)
            .filter(|id| !id.is_empty());
        return Outcome::Sent {
            external_id,
            answer,
        };
    }
    classify_http_error(status, retry_after, answer)
}

/// A JSON delivery report; one per message. `route_id` is the `id` the hub put into the
/// report's URL, used when the report itself carries no `client_ref`.
pub fn parse_report(body: &[u8], route_id: Option<&str>) -> Result<Report, ReportError> {
    let dlr: JsonDlr = serde_json::from_slice(body)
        .map_err(|e| ReportError(format!("not a delivery report: {e}")))?;
    let kind = match dlr.status.as_str() {
        "delivered" => ResponseKind::Delivered,
        "undelivered" | "expired" | "rejected" => ResponseKind::Undelivered,
        "buffered" => ResponseKind::Buffered,
        other => return Err(ReportError(format!("unknown report status `{other}`"))),
    };
    let reference = match dlr.client_ref.as_deref().map(uuid::Uuid::parse_str) {
        Some(Ok(id)) => ReportRef::Ours(id),
        Some(Err(_)) => return Err(ReportError("`client_ref` is not a communication id".into())),
        None => match route_id.map(uuid::Uuid::parse_str) {
            Some(Ok(id)) => ReportRef::Ours(id),
            Some(Err(_)) => return Err(ReportError("`id` is not a communication id".into())),
            None if !dlr.message_id.is_empty() => ReportRef::External(dlr.message_id.clone()),
            None => return Err(ReportError("report names no message".into())),
        },
    };
    let detail = match (&dlr.error_code, dlr.status.as_str()) {
        (Some(code), s) => Some(format!("{s} (error {code})")),
        (None, s) => Some(s.to_owned()),
    };
    Ok(Report {
        reference,
        kind,
        occurred_at: dlr.done_at,
        detail,
        dedupe_key: format!("{}:{}", kind.as_str(), dlr.message_id),
        whole_message: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_with_and_without_a_readable_id() {
        match classify(200, None, r#"{"message_id":"m-1","parts":2}"#) {
            Outcome::Sent { external_id, .. } => assert_eq!(external_id.as_deref(), Some("m-1")),
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            classify(200, None, "<html>"),
            Outcome::Sent {
                external_id: None,
                ..
            }
        ));
        assert!(matches!(classify(429, Some(Duration::from_secs(3)), "{}"),
            Outcome::Retry { throttled: true, after: Some(d), .. } if d == Duration::from_secs(3)));
    }

    #[test]
    fn reports_correlate_by_client_ref_first() {
        let r = parse_report(br#"{"message_id":"m-1","client_ref":"0190b7a0-0000-7000-8000-000000000001","status":"delivered"}"#, None).unwrap();
        assert!(matches!(r.reference, ReportRef::Ours(_)));
        assert_eq!(r.kind, ResponseKind::Delivered);
        let r = parse_report(
            br#"{"message_id":"m-1","status":"undelivered","error_code":"001"}"#,
            None,
        )
        .unwrap();
        assert_eq!(r.reference, ReportRef::External("m-1".into()));
        assert_eq!(r.detail.as_deref(), Some("undelivered (error 001)"));
        assert!(parse_report(b"nope", None).is_err());
        let r = parse_report(
            br#"{"message_id":"m-2","status":"delivered"}"#,
            Some("0190b7a0-0000-7000-8000-000000000001"),
        )
        .unwrap();
        assert!(
            matches!(r.reference, ReportRef::Ours(_)),
            "the route's id is used"
        );
        assert!(parse_report(br#"{"message_id":"m","status":"lost"}"#, None).is_err());
    }
}
