//! The Kannel `sendsms` dialect: `GET /cgi-bin/sendsms?...` (or `POST` with the same parameters
//! form-encoded), and Kannel-style delivery reports to the `dlr-url` with its `%` escapes
//! substituted.
//!
//! The query is percent-decoded to bytes by hand: `text` in `coding=2` is UTF-16BE, which a
//! UTF-8 form parser would mangle.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use clm_contracts::sms::wire::kannel::{self as wire, ACCEPTED};
use clm_contracts::sms::{Coding, segment};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::dlr::{DlrJob, DlrOutcome};
use super::record::{Dialect, ReceivedSms};
use super::state::{Shared, Verdict};

const AUTH_FAILED: &str = "Authorization failed for sendsms";
const MISSING_TO: &str = "Missing receiver number, rejected";
const MISSING_TEXT: &str = "Missing text, rejected";
const SENDING_FAILED: &str = "Sending failed.";
const THROTTLED: &str = "Throttling: too many requests, try again later";
/// What `%i` (the SMSC id) becomes in delivery reports.
const SMSC_NAME: &str = "mock-smsc";

/// `GET`/`POST /cgi-bin/sendsms`.
pub(crate) async fn sendsms(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let params = Params::parse(query.as_deref().unwrap_or_default().as_bytes(), &body);
    let empty: &[u8] = &[];
    let decision = shared.decide(Some((
        params.username.as_deref().unwrap_or(empty),
        params.password.as_deref().unwrap_or(empty),
    )));
    let verdict = Verdict::new(decision.outcome, || {
        if !decision.authorized {
            Err((403, AUTH_FAILED.into()))
        } else if params.to.as_deref().is_none_or(<[u8]>::is_empty) {
            Err((400, MISSING_TO.into()))
        } else if params.text.is_none() {
            Err((400, MISSING_TEXT.into()))
        } else {
            Ok(())
        }
    });

    let text = decode_text(
        params.text.as_deref().unwrap_or_default(),
        params.coding.as_deref(),
        params.charset.as_deref(),
    );
    let coding = match params.coding.as_deref() {
        Some(b"2") => Coding::Ucs2,
        None | Some(b"0") => Coding::Gsm7,
        Some(_) => segment(&text).coding,
    };
    let parts = parts_in(&text, coding);
    let dlr_url = params.dlr_url.as_deref().map(lossy);
    let mut record = ReceivedSms {
        at: Utc::now(),
        dialect: Dialect::Kannel,
        from: params.from.as_deref().map(lossy).unwrap_or_default(),
        to: params.to.as_deref().map(lossy).unwrap_or_default(),
        text,
        coding,
        parts: u32::try_from(parts).unwrap_or(u32::MAX),
        client_ref: dlr_url.as_deref().and_then(client_ref_in),
        status: verdict.status(202),
        message_id: None,
        validity_minutes: params
            .validity
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok()),
        dlr_url,
    };

    if let Verdict::Hold = verdict {
        shared.recorder.record(record);
        shared.hold().await;
        return (StatusCode::SERVICE_UNAVAILABLE, SENDING_FAILED).into_response();
    }
    shared.pause(decision.latency).await;
    if let Verdict::Accept = verdict {
        let part_ids: Vec<String> = (0..parts.max(1)).map(|_| super::new_message_id()).collect();
        record.message_id = part_ids.first().cloned();
        let mask = params
            .dlr_mask
            .as_deref()
            .and_then(|m| lossy(m).parse::<u32>().ok());
        if let (Some(template), Some(outcome)) = (&record.dlr_url, decision.dlr.draw())
            && mask.is_none_or(|m| m & report_type(outcome) != 0)
        {
            let job = DlrJob::Kannel {
                template: template.clone(),
                part_ids,
                outcome,
                to: record.to.clone(),
                from: record.from.clone(),
                method: decision.dlr.method,
            };
            shared.dlr.spawn(
                Duration::from_millis(decision.dlr.delay_ms),
                Duration::from_millis(decision.dlr.retry_for_ms),
                job,
            );
        }
    }
    shared.recorder.record(record);
    respond(verdict)
}

fn respond(verdict: Verdict) -> Response {
    match verdict {
        Verdict::Accept => (StatusCode::ACCEPTED, ACCEPTED).into_response(),
        Verdict::Reject(status, reason) => {
            (status_code(status), reason.into_owned()).into_response()
        }
        Verdict::Throttle(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(RETRY_AFTER, secs.to_string())],
            THROTTLED,
        )
            .into_response(),
        Verdict::Fail(status) => (status_code(status), SENDING_FAILED).into_response(),
        Verdict::Hold => (StatusCode::SERVICE_UNAVAILABLE, SENDING_FAILED).into_response(),
    }
}

pub(crate) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The `sendsms` parameters the mock looks at, percent-decoded to bytes.
#[derive(Default)]
struct Params {
    username: Option<Vec<u8>>,
    password: Option<Vec<u8>>,
    from: Option<Vec<u8>>,
    to: Option<Vec<u8>>,
    text: Option<Vec<u8>>,
    coding: Option<Vec<u8>>,
    charset: Option<Vec<u8>>,
    dlr_mask: Option<Vec<u8>>,
    dlr_url: Option<Vec<u8>>,
    validity: Option<Vec<u8>>,
}

impl Params {
    /// Reads the query, then the form body (a `POST`); a later value wins.
    fn parse(query: &[u8], body: &[u8]) -> Self {
        let mut params = Params::default();
        for pair in query
            .split(|b| *b == b'&')
            .chain(body.split(|b| *b == b'&'))
        {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            let key = percent_decode(key);
            let slot = match std::str::from_utf8(&key) {
                Ok(wire::USERNAME) => &mut params.username,
                Ok(wire::PASSWORD) => &mut params.password,
                Ok(wire::FROM) => &mut params.from,
                Ok(wire::TO) => &mut params.to,
                Ok(wire::TEXT) => &mut params.text,
                Ok(wire::CODING) => &mut params.coding,
                Ok(wire::CHARSET) => &mut params.charset,
                Ok(wire::DLR_MASK) => &mut params.dlr_mask,
                Ok(wire::DLR_URL) => &mut params.dlr_url,
                Ok(wire::VALIDITY) => &mut params.validity,
                _ => continue,
            };
            *slot = Some(percent_decode(value));
        }
        params
    }
}

/// `application/x-www-form-urlencoded` decoding to bytes: `+` is a space, `%XX` a byte, and a
/// malformed escape stays as it is.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let high = input.get(i + 1).copied().and_then(hex);
                let low = input.get(i + 2).copied().and_then(hex);
                if let (Some(high), Some(low)) = (high, low) {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Decodes `text` by `charset`; without one, `coding=2` means UTF-16BE (Kannel's default for
/// UCS-2) and anything else UTF-8.
fn decode_text(text: &[u8], coding: Option<&[u8]>, charset: Option<&[u8]>) -> String {
    let charset = charset.map(|c| lossy(c).trim().to_ascii_uppercase());
    match charset.as_deref() {
        Some("UTF-16BE" | "UTF-16" | "UCS-2" | "UCS-2BE" | "UTF16BE") => utf16be(text),
        Some("ISO-8859-1" | "ISO8859-1" | "LATIN1") => {
            text.iter().map(|b| char::from(*b)).collect()
        }
        None if coding == Some(b"2") => utf16be(text),
        _ => lossy(text),
    }
}

fn utf16be(bytes: &[u8]) -> String {
    let chunks = bytes.chunks_exact(2);
    let odd = !chunks.remainder().is_empty();
    let mut text: String =
        char::decode_utf16(chunks.map(|pair| u16::from_be_bytes([pair[0], pair[1]])))
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
    if odd {
        text.push(char::REPLACEMENT_CHARACTER);
    }
    text
}

/// Parts as the client's coding makes them: UCS-2 text that would fit GSM 7-bit still takes 70/67.
fn parts_in(text: &str, coding: Coding) -> usize {
    let natural = segment(text);
    if coding == Coding::Ucs2 && natural.coding == Coding::Gsm7 {
        let units = text.encode_utf16().count();
        if units <= 70 { 1 } else { units.div_ceil(67) }
    } else {
        natural.parts
    }
}

/// The `id` query parameter of a `dlr-url`: the hub's reference.
fn client_ref_in(dlr_url: &str) -> Option<String> {
    let (_, query) = dlr_url.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "id")
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
}

fn report_type(outcome: DlrOutcome) -> u32 {
    match outcome {
        DlrOutcome::Delivered => wire::DLR_DELIVERED,
        DlrOutcome::Undelivered => wire::DLR_UNDELIVERED,
    }
}

/// Characters left as they are inside a substituted query value (RFC 3986 unreserved).
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a delivery report of one part says.
pub(crate) struct ReportFields<'a> {
    pub(crate) outcome: DlrOutcome,
    pub(crate) smsc_id: &'a str,
    pub(crate) to: &'a str,
    pub(crate) from: &'a str,
    pub(crate) done_at: DateTime<Utc>,
}

/// Substitutes Kannel's `dlr-url` escapes: `%d` report type, `%A` SMSC answer, `%F` SMSC message
/// id, `%T` unix time, `%p` receiver, `%P` sender, `%i` SMSC id. Other `%` sequences stay.
pub(crate) fn substitute(template: &str, fields: &ReportFields<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 160);
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let rest = chars.clone();
        match chars.next() {
            Some('d') => out.push_str(&report_type(fields.outcome).to_string()),
            Some('A') => out.extend(utf8_percent_encode(&smsc_answer(fields), VALUE)),
            Some('F') => out.extend(utf8_percent_encode(fields.smsc_id, VALUE)),
            Some('T') => out.push_str(&fields.done_at.timestamp().to_string()),
            Some('p') => out.extend(utf8_percent_encode(fields.to, VALUE)),
            Some('P') => out.extend(utf8_percent_encode(fields.from, VALUE)),
            Some('i') => out.push_str(SMSC_NAME),
            _ => {
                out.push('%');
                chars = rest;
            }
        }
    }
    out
}

/// An SMPP delivery receipt text (SMPP 3.4 appendix B), without the message's first characters.
fn smsc_answer(fields: &ReportFields<'_>) -> String {
    let (delivered, stat, err) = match fields.outcome {
        DlrOutcome::Delivered => ("001", "DELIVRD", "000"),
        DlrOutcome::Undelivered => ("000", "UNDELIV", "001"),
    };
    let date = fields.done_at.format("%y%m%d%H%M");
    format!(
        "id:{} sub:001 dlvrd:{delivered} submit date:{date} done date:{date} stat:{stat} err:{err} text:",
        fields.smsc_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16be_text_survives_percent_decoding() {
        let bytes: Vec<u8> = "Привет".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let query = format!(
            "to=%2B79161234567&coding=2&text={}",
            percent_encoding::percent_encode(&bytes, NON_ALPHANUMERIC)
        );
        let params = Params::parse(query.as_bytes(), b"");
        assert_eq!(params.to.as_deref(), Some(&b"+79161234567"[..]));
        let text = decode_text(&params.text.unwrap(), Some(b"2"), None);
        assert_eq!(text, "Привет");
    }

    #[test]
    fn plus_is_space_and_bad_escapes_stay() {
        assert_eq!(percent_decode(b"a+b%2Bc%zz%4"), b"a b+c%zz%4");
    }

    #[test]
    fn escapes_are_substituted_and_others_kept() {
        let fields = ReportFields {
            outcome: DlrOutcome::Undelivered,
            smsc_id: "m1",
            to: "+7916",
            from: "Shop",
            done_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        let url = substitute(
            "http://h/d?id=x%2Fy&type=%d&smsc_id=%F&ts=%T&to=%p&i=%i&a=%A",
            &fields,
        );
        assert!(url.starts_with(
            "http://h/d?id=x%2Fy&type=2&smsc_id=m1&ts=1700000000&to=%2B7916&i=mock-smsc&a=id%3Am1%20"
        ));
        assert!(url.contains("stat%3AUNDELIV%20err%3A001"));
    }

    #[test]
    fn ucs2_parts_use_70_and_67_even_for_latin_text() {
        assert_eq!(parts_in(&"a".repeat(100), Coding::Ucs2), 2);
        assert_eq!(parts_in(&"a".repeat(100), Coding::Gsm7), 1);
    }

    #[test]
    fn client_ref_is_the_id_in_the_dlr_url() {
        assert_eq!(
            client_ref_in("http://hub/ingest/sms?id=abc&type=%d").as_deref(),
            Some("abc")
        );
        assert_eq!(client_ref_in("http://hub/ingest/sms"), None);
    }
}
