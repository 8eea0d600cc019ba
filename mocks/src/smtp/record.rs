//! What the SMTP mock received: a bounded buffer of [`ReceivedMail`]s and the counters of
//! [`SmtpStats`] (never truncated). Also the little message parsing the records and the feedback
//! need: header fields, MIME parts, the first link of the HTML part.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::util::base64_decode;

/// One message the mock took: answered `250` after its final `.`, or held without an answer by
/// a `hang` fault (`answered: false`: the client timed out, the relay has the message). Messages
/// refused at any stage are only counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedMail {
    /// The queue id of `250 2.0.0 Ok: queued as <id>` (also given to held messages).
    pub id: String,
    pub at: DateTime<Utc>,
    /// The envelope sender of `MAIL FROM`; empty for the null sender `<>`.
    pub envelope_from: String,
    /// The envelope recipients accepted at `RCPT TO`, in order.
    pub recipients: Vec<String>,
    /// The `AUTH` username of the session, when it authenticated.
    pub authenticated_as: Option<String>,
    /// False when a `hang` fault kept the reply after the final `.` back.
    pub answered: bool,
    /// `Subject` as written (unfolded, RFC 2047 encoded words left as they are).
    pub subject: Option<String>,
    /// `Message-ID` as written, angle brackets included.
    pub message_id: Option<String>,
    /// The `From` header field.
    pub from: Option<String>,
    /// The `To` header field.
    pub to: Option<String>,
    pub list_unsubscribe: Option<String>,
    pub list_unsubscribe_post: Option<String>,
    /// A `DKIM-Signature` header field is present.
    pub dkim_signature: bool,
    /// Every header field as `[name, value]`, in order, unfolded.
    pub headers: Vec<(String, String)>,
    /// The message as received, after dot-unstuffing, without the final `.` line. In JSON a
    /// string when it is UTF-8, `{"base64": "…"}` otherwise.
    #[serde(with = "raw_json")]
    pub raw: Vec<u8>,
}

impl ReceivedMail {
    /// Parses the header of `raw`.
    pub(crate) fn new(
        id: String,
        envelope_from: String,
        recipients: Vec<String>,
        authenticated_as: Option<String>,
        answered: bool,
        raw: Vec<u8>,
    ) -> ReceivedMail {
        let (headers, _) = split_header(&raw);
        let headers = parse_header_fields(headers);
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        ReceivedMail {
            id,
            at: Utc::now(),
            envelope_from,
            recipients,
            authenticated_as,
            answered,
            subject: find("Subject"),
            message_id: find("Message-ID"),
            from: find("From"),
            to: find("To"),
            list_unsubscribe: find("List-Unsubscribe"),
            list_unsubscribe_post: find("List-Unsubscribe-Post"),
            dkim_signature: find("DKIM-Signature").is_some(),
            headers,
            raw,
        }
    }

    /// The first header field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The message body: everything after the blank line that ends the header.
    pub fn body(&self) -> &[u8] {
        split_header(&self.raw).1
    }

    /// The first `http://` or `https://` link of the HTML part (`href` first, then any URL in
    /// the HTML), or of the whole body when there is no HTML part.
    pub fn first_link(&self) -> Option<String> {
        first_link(&self.raw)
    }
}

/// `raw` as a JSON string when it is UTF-8, `{"base64": "…"}` otherwise.
mod raw_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Binary { base64: String },
    }

    pub(super) fn serialize<S: Serializer>(raw: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(raw) {
            Ok(text) => Raw::Text(text.to_owned()),
            Err(_) => Raw::Binary {
                base64: crate::util::base64(raw),
            },
        }
        .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Text(text) => Ok(text.into_bytes()),
            Raw::Binary { base64 } => crate::util::base64_decode(base64.as_bytes())
                .ok_or_else(|| serde::de::Error::custom("raw.base64 is not base64")),
        }
    }
}

/// Counters since start or the last reset; unlike the records, never truncated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmtpStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Messages answered `250` after the final `.`.
    pub messages_accepted: u64,
    /// Messages recorded but never answered (`hang` after the final `.`).
    pub messages_hung: u64,
    /// `RCPT TO` answered 4xx or 5xx (faults, greylisting, syntax, too many recipients).
    pub rejected_rcpt: u64,
    /// `DATA` commands answered 4xx or 5xx.
    pub rejected_data: u64,
    /// Messages answered 4xx or 5xx after the final `.` (faults, size, line length).
    pub rejected_end_of_data: u64,
    /// First attempts answered `450 4.7.1` by `greylist_first` (also in `rejected_rcpt`).
    pub greylisted: u64,
    /// Connections closed by a `disconnect` fault (or after an injected 421).
    pub disconnects: u64,
    /// Replies held back by a `hang` fault, at any stage.
    pub hangs: u64,
    /// Replies delayed by a `slow` fault.
    pub slow_replies: u64,
    pub auth_succeeded: u64,
    pub auth_failed: u64,
    /// Feedback webhooks the hub answered 2xx.
    pub feedback_sent: u64,
    /// Feedback webhooks given up on (after retries, or without a destination or Message-ID).
    pub feedback_failed: u64,
    /// Feedback attempts repeated after a failure.
    pub feedback_retries: u64,
}

/// Counter names, so [`Recorder::count`] takes one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    Connections,
    RejectedRcpt,
    RejectedData,
    RejectedEndOfData,
    Greylisted,
    Disconnects,
    Hangs,
    SlowReplies,
    AuthSucceeded,
    AuthFailed,
}

const COUNTERS: usize = 10;

pub(crate) struct Recorder {
    capacity: usize,
    accepted: AtomicU64,
    hung: AtomicU64,
    counters: [AtomicU64; COUNTERS],
    log: Mutex<VecDeque<ReceivedMail>>,
}

impl Recorder {
    pub(crate) fn new(capacity: usize) -> Self {
        Recorder {
            capacity,
            accepted: AtomicU64::new(0),
            hung: AtomicU64::new(0),
            counters: Default::default(),
            log: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn count(&self, counter: Counter) {
        self.counters[counter as usize].fetch_add(1, Relaxed);
    }

    /// Keeps `mail` (the oldest dropped beyond the capacity) and counts it.
    pub(crate) fn record(&self, mail: ReceivedMail) {
        let answered = mail.answered;
        if self.capacity > 0 {
            let mut log = self.log();
            if log.len() >= self.capacity {
                log.pop_front();
            }
            log.push_back(mail);
        }
        // Counted after the record is stored, so whoever sees the count also sees the record.
        if answered {
            self.accepted.fetch_add(1, Relaxed);
        } else {
            self.hung.fetch_add(1, Relaxed);
        }
    }

    /// Messages taken: answered or held.
    pub(crate) fn taken(&self) -> u64 {
        self.accepted.load(Relaxed) + self.hung.load(Relaxed)
    }

    /// The newest `limit` records (all with `None`), oldest first.
    pub(crate) fn received(&self, limit: Option<usize>) -> Vec<ReceivedMail> {
        let log = self.log();
        let skip = limit.map_or(0, |l| log.len().saturating_sub(l));
        log.iter().skip(skip).cloned().collect()
    }

    /// The counters; the feedback counters are filled in by the caller.
    pub(crate) fn stats(&self) -> SmtpStats {
        let c = |counter: Counter| self.counters[counter as usize].load(Relaxed);
        SmtpStats {
            connections: c(Counter::Connections),
            messages_accepted: self.accepted.load(Relaxed),
            messages_hung: self.hung.load(Relaxed),
            rejected_rcpt: c(Counter::RejectedRcpt),
            rejected_data: c(Counter::RejectedData),
            rejected_end_of_data: c(Counter::RejectedEndOfData),
            greylisted: c(Counter::Greylisted),
            disconnects: c(Counter::Disconnects),
            hangs: c(Counter::Hangs),
            slow_replies: c(Counter::SlowReplies),
            auth_succeeded: c(Counter::AuthSucceeded),
            auth_failed: c(Counter::AuthFailed),
            ..SmtpStats::default()
        }
    }

    pub(crate) fn reset(&self) {
        self.log().clear();
        for counter in self.counters.iter().chain([&self.accepted, &self.hung]) {
            counter.store(0, Relaxed);
        }
    }

    fn log(&self) -> MutexGuard<'_, VecDeque<ReceivedMail>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The header and the body of a message (or MIME part): split at the first empty line (CRLF or
/// bare LF). Without one, everything is header.
pub(crate) fn split_header(raw: &[u8]) -> (&[u8], &[u8]) {
    if raw.starts_with(b"\r\n") {
        return (&[], &raw[2..]);
    }
    if raw.starts_with(b"\n") {
        return (&[], &raw[1..]);
    }
    let mut i = 0;
    while let Some(pos) = raw[i..].iter().position(|b| *b == b'\n') {
        let next = i + pos + 1;
        let rest = &raw[next..];
        if rest.starts_with(b"\r\n") {
            return (&raw[..next], &raw[next + 2..]);
        }
        if rest.starts_with(b"\n") {
            return (&raw[..next], &raw[next + 1..]);
        }
        i = next;
    }
    (raw, &[])
}

/// Header fields as `(name, value)`, unfolded (a line break before white space removed), the
/// value trimmed. Lines that are no field are skipped.
pub(crate) fn parse_header_fields(header: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(header);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(line);
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':')
            && !name.is_empty()
            && !name.contains([' ', '\t'])
        {
            fields.push((name.to_owned(), value.to_owned()));
        }
    }
    for (_, value) in &mut fields {
        *value = value.trim().to_owned();
    }
    fields
}

/// A parameter of a header value like `multipart/alternative; boundary="b1"` (case-insensitive
/// name, quotes removed).
fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|part| {
        let (key, v) = part.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The decoded content of the first part of `raw` whose type is `mime` (e.g. `text/html`),
/// looking into nested multiparts; a single-part message counts when its type matches (no
/// `Content-Type` is `text/plain`).
pub(crate) fn find_part(raw: &[u8], mime: &str, depth: u8) -> Option<Vec<u8>> {
    let (header, body) = split_header(raw);
    let fields = parse_header_fields(header);
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let content_type = get("Content-Type").unwrap_or("text/plain");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence.starts_with("multipart/") {
        if depth >= 8 {
            return None;
        }
        let boundary = parameter(content_type, "boundary")?;
        return multipart_parts(body, &boundary)
            .into_iter()
            .find_map(|part| find_part(part, mime, depth + 1));
    }
    if essence != mime {
        return None;
    }
    let encoding = get("Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    Some(match encoding.as_str() {
        "base64" => base64_decode(body)?,
        "quoted-printable" => quoted_printable(body),
        _ => body.to_vec(),
    })
}

/// The parts between `--boundary` lines, up to `--boundary--`.
fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i <= body.len() {
        let end = body[i..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(body.len(), |p| i + p);
        let line = &body[i..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(delimiter.as_bytes()) {
            let rest = rest.trim_ascii_end();
            if rest.is_empty() || rest == b"--" {
                if let Some(s) = start {
                    // The line break before the delimiter belongs to it.
                    let mut e = i;
                    if e > s && body[e - 1] == b'\n' {
                        e -= 1;
                        if e > s && body[e - 1] == b'\r' {
                            e -= 1;
                        }
                    }
                    parts.push(&body[s..e]);
                }
                if rest == b"--" {
                    break;
                }
                start = Some((end + 1).min(body.len()));
            }
        }
        i = end + 1;
    }
    parts
}

/// Quoted-printable (RFC 2045) decoded: `=XX` escapes and soft line breaks; anything malformed
/// is kept as it is.
pub(crate) fn quoted_printable(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'=' {
            match (input.get(i + 1), input.get(i + 2)) {
                (Some(b'\r'), Some(b'\n')) => {
                    i += 3;
                    continue;
                }
                (Some(b'\n'), _) => {
                    i += 2;
                    continue;
                }
                (Some(&a), Some(&b)) => {
                    if let (Some(a), Some(b)) = (hex(a), hex(b)) {
                        out.push((a * 16 + b) as u8);
                        i += 3;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// The first http(s) link of the HTML part of `raw` (an `href` first, then any URL in it), or of
/// the whole body when there is no HTML part. `&amp;` in the link is decoded.
pub(crate) fn first_link(raw: &[u8]) -> Option<String> {
    match find_part(raw, "text/html", 0) {
        Some(html) => {
            let html = String::from_utf8_lossy(&html);
            href_link(&html).or_else(|| bare_link(&html))
        }
        None => {
            let text =
                find_part(raw, "text/plain", 0).unwrap_or_else(|| split_header(raw).1.to_vec());
            bare_link(&String::from_utf8_lossy(&text))
        }
    }
}

/// The first `href="http…"` (or `'…'`) value.
fn href_link(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find("href") {
        let after = from + pos + 4;
        from = after;
        let rest = html[after..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        let (quote, rest) = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => (Some(q), &rest[1..]),
            _ => (None, rest),
        };
        let end = match quote {
            Some(q) => rest.find(q),
            None => rest.find(|c: char| c.is_whitespace() || c == '>'),
        }
        .unwrap_or(rest.len());
        let link = rest[..end].trim();
        if is_http(link) {
            return Some(link.replace("&amp;", "&"));
        }
    }
    None
}

/// The first `http://` or `https://` URL in free text, up to white space, a quote or `<>`.
fn bare_link(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let start = match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
        .unwrap_or(rest.len());
    Some(rest[..end].replace("&amp;", "&"))
}

fn is_http(link: &str) -> bool {
    let lower = link.to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")) && link.len() > 8
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTIPART: &str = "From: Shop <news@shop.example>\r\n\
        To: =?utf-8?b?0JjQstCw0L0=?= <ivan@example.com>\r\n\
        Subject: =?utf-8?b?0KHQutC40LTQutCw?=\r\n \r\n\
        \t=?utf-8?b?INC00L3Rjw==?=\r\n\
        Message-ID: <c0ffee@hub.example>\r\n\
        List-Unsubscribe: <https://hub.example/u/t>\r\n\
        List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
        \r\n\
        preamble\r\n\
        --outer\r\n\
        Content-Type: multipart/alternative; boundary=inner\r\n\
        \r\n\
        --inner\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        \r\n\
        See http://plain.example/first\r\n\
        --inner\r\n\
        Content-Type: text/html; charset=utf-8\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\
        \r\n\
        <p>Hi <a class=3D\"x\" href=3D\"https://shop.example/offer?a=3D1&amp;b=\r\n\
        =3D2\">offer</a> http://later.example</p>\r\n\
        --inner--\r\n\
        --outer--\r\n";

    #[test]
    fn headers_are_unfolded_and_found() {
        let mail = ReceivedMail::new(
            "Q1".into(),
            "news@shop.example".into(),
            vec!["ivan@example.com".into()],
            None,
            true,
            MULTIPART.as_bytes().to_vec(),
        );
        assert_eq!(
            mail.subject.as_deref(),
            Some("=?utf-8?b?0KHQutC40LTQutCw?= \t=?utf-8?b?INC00L3Rjw==?=")
        );
        assert_eq!(mail.message_id.as_deref(), Some("<c0ffee@hub.example>"));
        assert_eq!(mail.from.as_deref(), Some("Shop <news@shop.example>"));
        assert_eq!(
            mail.list_unsubscribe_post.as_deref(),
            Some("List-Unsubscribe=One-Click")
        );
        assert!(!mail.dkim_signature);
        assert_eq!(mail.header("mime-version"), Some("1.0"));
        assert!(mail.body().starts_with(b"preamble"));
        assert_eq!(
            mail.first_link().as_deref(),
            Some("https://shop.example/offer?a=1&b=2"),
            "the HTML part's href, decoded"
        );
    }

    #[test]
    fn links_without_html_and_base64_parts() {
        assert_eq!(
            first_link(b"Subject: x\r\n\r\nGo to https://a.example/x.\r\n").as_deref(),
            Some("https://a.example/x.")
        );
        assert_eq!(first_link(b"Subject: x\r\n\r\nno links\r\n"), None);
        let html = crate::util::base64(b"<a href='http://b.example/p'>p</a>");
        let raw = format!(
            "Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n{html}\r\n"
        );
        assert_eq!(
            first_link(raw.as_bytes()).as_deref(),
            Some("http://b.example/p")
        );
    }

    #[test]
    fn quoted_printable_decodes_escapes_and_soft_breaks() {
        assert_eq!(quoted_printable(b"a=3Db=\r\nc=\nd=ZZ="), b"a=bcd=ZZ=");
        assert_eq!(
            String::from_utf8(quoted_printable(b"=D0=9F=D1=80=D0=B8")).unwrap(),
            "При"
        );
    }

    #[test]
    fn raw_is_text_or_base64_in_json() {
        let mut mail = ReceivedMail::new(
            "Q".into(),
            String::new(),
            vec![],
            None,
            true,
            b"Subject: t\r\n\r\nhi\r\n".to_vec(),
        );
        let json = serde_json::to_value(&mail).unwrap();
        assert_eq!(json["raw"], "Subject: t\r\n\r\nhi\r\n");
        assert_eq!(serde_json::from_value::<ReceivedMail>(json).unwrap(), mail);
        mail.raw = vec![0xff, 0xfe, b'x'];
        let json = serde_json::to_value(&mail).unwrap();
        assert_eq!(json["raw"]["base64"], "//54");
        assert_eq!(serde_json::from_value::<ReceivedMail>(json).unwrap(), mail);
    }

    #[test]
    fn header_split_handles_bare_lf_and_no_body() {
        assert_eq!(
            split_header(b"A: 1\nB: 2\n\nbody"),
            (&b"A: 1\nB: 2\n"[..], &b"body"[..])
        );
        assert_eq!(split_header(b"A: 1\r\n"), (&b"A: 1\r\n"[..], &b""[..]));
        assert_eq!(split_header(b"\r\nbody"), (&b""[..], &b"body"[..]));
    }
}
