//! Kannel `sendsms` (Kannel User's Guide, "Sending SMS messages": `/cgi-bin/sendsms`) and its
//! `dlr-url` delivery reports.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clm_contracts::Communication;
use clm_contracts::ResponseKind;
use clm_contracts::sms::wire::kannel as k;
use clm_contracts::sms::{Coding, segment};

use super::SmsConfig;
use crate::outcome::{
    Outcome, Report, ReportError, ReportRef, answer_excerpt, classify_http_error,
};

fn push(q: &mut String, key: &str, value: &[u8]) {
    if !q.is_empty() {
        q.push('&');
    }
    q.push_str(key);
    q.push('=');
    q.extend(form_urlencoded::byte_serialize(value));
}

/// The `sendsms` query string. GSM-alphabet text goes as UTF-8 with `coding=0`; anything else
/// (Cyrillic) as UCS-2: `coding=2`, `charset=UTF-16BE`, and the text as UTF-16BE bytes, which is
/// what Kannel expects for coding 2 without transcoding.
pub fn query(
    config: &SmsConfig,
    comm: &Communication,
    dlr_route: Option<&str>,
    now: DateTime<Utc>,
) -> String {
    let text = comm.content.text.as_deref().unwrap_or_default();
    let mut q = String::with_capacity(256 + text.len() * 6);
    if let Some(u) = &config.username {
        push(&mut q, k::USERNAME, u.as_bytes());
    }
    if let Some(p) = &config.password {
        push(&mut q, k::PASSWORD, p.as_bytes());
    }
    push(&mut q, k::FROM, config.from.as_bytes());
    push(&mut q, k::TO, comm.recipient.as_bytes());
    match segment(text).coding {
        Coding::Gsm7 => {
            push(&mut q, k::TEXT, text.as_bytes());
            push(&mut q, k::CODING, k::CODING_GSM7.as_bytes());
            push(&mut q, k::CHARSET, b"UTF-8");
        }
        Coding::Ucs2 => {
            let bytes: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
            push(&mut q, k::TEXT, &bytes);
            push(&mut q, k::CODING, k::CODING_UCS2.as_bytes());
            push(&mut q, k::CHARSET, b"UTF-16BE");
        }
    }
    if let Some(route) = dlr_route {
        push(
            &mut q,
            k::DLR_MASK,
            dlr_mask(config.dlr_mask).to_string().as_bytes(),
        );
        push(&mut q, k::DLR_URL, route.as_bytes());
    }
    if let Some(minutes) = super::validity_minutes(comm, now) {
        push(&mut q, k::VALIDITY, minutes.to_string().as_bytes());
    }
    q
}

/// The `dlr-mask` sent: the configured one, plus 8 ("delivered to SMSC") whenever a final report
/// is asked for, because Kannel's type-8 report is how the hub recognises its one report for a
/// whole multi-part message (see [`super::parts`]).
pub fn dlr_mask(configured: u32) -> u32 {
    if configured & (k::DLR_DELIVERED | k::DLR_UNDELIVERED) != 0 {
        configured | k::DLR_DELIVERED_TO_SMSC
    } else {
        configured
    }
}

pub fn request(
    client: &reqwest::Client,
    config: &SmsConfig,
    comm: &Communication,
    dlr_route: Option<&str>,
    now: DateTime<Utc>,
) -> reqwest::RequestBuilder {
    let q = query(config, comm, dlr_route, now);
    let sep = if config.url.contains('?') { '&' } else { '?' };
    client.get(format!("{}{sep}{q}", config.url))
}

/// Kannel answers 202 `0: Accepted for delivery` or `3: Queued for later delivery`; it gives no
/// message id (reports correlate by the id we put in `dlr-url`).
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Outcome {
    let answer = answer_excerpt(status, body);
    if (200..300).contains(&status) {
        return Outcome::Sent {
            external_id: None,
            answer,
        };
    }
    classify_http_error(status, retry_after, answer)
}

/// One `dlr-url` call: the query parameters the hub put there (`id`, `type`, `answer`,
/// `smsc_id`, `ts`) as Kannel filled them in. Kannel reports once per message for a text it
/// split itself (on the first part), some SMSCs once per part; a report that carries an SMSC id
/// (`%F`) names that part, one without speaks for the whole message. How the reports of a
/// multi-part message add up is [`super::parts`].
pub fn parse_report(params: &[(String, String)]) -> Result<Report, ReportError> {
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let id = get("id").ok_or_else(|| ReportError("missing `id`".into()))?;
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| ReportError("`id` is not a communication id".into()))?;
    let ty: u32 = get("type")
        .ok_or_else(|| ReportError("missing `type` (Kannel %d)".into()))?
        .parse()
        .map_err(|_| ReportError("`type` is not a Kannel report type".into()))?;
    let kind = match ty {
        k::DLR_DELIVERED => ResponseKind::Delivered,
        k::DLR_UNDELIVERED | k::DLR_NOT_DELIVERED_TO_SMSC => ResponseKind::Undelivered,
        k::DLR_QUEUED_ON_SMSC | k::DLR_DELIVERED_TO_SMSC => ResponseKind::Buffered,
        other => return Err(ReportError(format!("unknown Kannel report type {other}"))),
    };
    let occurred_at = get("ts")
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0));
    let smsc_id = get("smsc_id").filter(|s| !s.is_empty() && !s.starts_with('%'));
    // An SMPP receipt ends with `text:` and the message's first characters: personal data that
    // has no business in a response record, so it is cut off.
    let answer = get("answer")
        .filter(|s| !s.is_empty() && !s.starts_with('%'))
        .map(|s| s.split(" text:").next().unwrap_or_default().trim());
    // Each part has its own SMSC id; without one, the report type is all that tells reports apart.
    let dedupe_key = super::parts::dedupe_key(kind, smsc_id);
    Ok(Report {
        reference: ReportRef::Ours(id),
        kind,
        occurred_at,
        detail: answer.map(|a| a.chars().take(200).collect()),
        dedupe_key,
        whole_message: smsc_id.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SmsConfig {
        SmsConfig {
            dialect: super::super::Dialect::Kannel,
            url: "http://gw/cgi-bin/sendsms".into(),
            username: Some("u".into()),
            password: Some("p&w".into()),
            from: "RTK".into(),
            dlr_mask: 31,
            dlr_url: None,
            dlr_token: None,
            connect_timeout: Duration::from_secs(1),
            pool_size: 1,
        }
    }

    fn comm(text: &str) -> Communication {
        serde_json::from_value(serde_json::json!({
            "id": "0190b7a0-0000-7000-8000-000000000001", "campaign_id": "c", "customer_id": "c",
            "channel": "sms", "recipient": "+79001234567", "content": {"text": text},
            "expires_at": "2030-01-01T01:30:00Z"
        }))
        .unwrap()
    }

    fn params(q: &str) -> Vec<(String, Vec<u8>)> {
        q.split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                let v: Vec<u8> =
                    percent_encoding::percent_decode_str(&v.replace('+', " ")).collect();
                (k.to_owned(), v)
            })
            .collect()
    }

    #[test]
    fn cyrillic_goes_as_ucs2_utf16be_bytes() {
        let now = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let q = query(
            &config(),
            &comm("Привет"),
            Some("http://hub/ingest/sms?id=x&type=%d"),
            now,
        );
        let p = params(&q);
        let get = |k: &str| {
            p.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let expected: Vec<u8> = "Привет".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(get("text"), expected);
        assert_eq!(get("coding"), b"2");
        assert_eq!(get("charset"), b"UTF-16BE");
        assert_eq!(get("password"), b"p&w");
        assert_eq!(get("dlr-url"), b"http://hub/ingest/sms?id=x&type=%d");
        assert_eq!(get("dlr-mask"), b"31");
        assert_eq!(get("validity"), b"90");
    }

    #[test]
    fn latin_goes_as_gsm7_utf8() {
        let q = query(&config(), &comm("Hello {world}"), None, Utc::now());
        let p = params(&q);
        let get = |k: &str| {
            p.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("text"), b"Hello {world}");
        assert_eq!(get("coding"), b"0");
        assert!(!q.contains("dlr-url"));
    }

    #[test]
    fn the_dlr_mask_always_asks_for_delivered_to_smsc() {
        assert_eq!(dlr_mask(31), 31);
        assert_eq!(dlr_mask(1), 9);
        assert_eq!(dlr_mask(3), 11);
        assert_eq!(dlr_mask(16), 16);
    }

    #[test]
    fn kannel_answers_are_classified() {
        assert!(matches!(
            classify(202, None, "0: Accepted for delivery"),
            Outcome::Sent { .. }
        ));
        assert!(matches!(
            classify(503, None, "Sending failed."),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(400, None, "Missing receiver number"),
            Outcome::Fail { .. }
        ));
    }

    #[test]
    fn reports_map_kannel_types() {
        let p = |ty: &str, smsc: &str| {
            vec![
                (
                    "id".to_owned(),
                    "0190b7a0-0000-7000-8000-000000000001".to_owned(),
                ),
                ("type".to_owned(), ty.to_owned()),
                ("smsc_id".to_owned(), smsc.to_owned()),
                ("ts".to_owned(), "1700000000".to_owned()),
            ]
        };
        let r = parse_report(&p("1", "abc")).unwrap();
        assert_eq!(r.kind, ResponseKind::Delivered);
        assert_eq!(r.dedupe_key, "delivered:abc");
        assert!(!r.whole_message);
        assert_eq!(
            parse_report(&p("2", "x")).unwrap().kind,
            ResponseKind::Undelivered
        );
        assert_eq!(
            parse_report(&p("8", "x")).unwrap().kind,
            ResponseKind::Buffered
        );
        assert!(parse_report(&p("3", "x")).is_err());
        assert!(parse_report(&p("x", "x")).is_err());
        assert!(parse_report(&[]).is_err());
    }
}
