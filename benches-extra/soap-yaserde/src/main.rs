//! SubmitResponses envelope (the SAP CRM sample, 4 responses) parsed N times by the hub's codec
//! (quick-xml) and by yaserde-derived structs; figures are parses/s and their ratio, same run.
use std::time::Instant;

use clm_contracts::soap::codec::{Limits, parse_envelope};
use yaserde::YaDeserialize;

#[derive(Debug, Default, YaDeserialize)]
#[yaserde(rename = "Envelope", prefix = "soap-env", namespaces = {"soap-env" = "http://schemas.xmlsoap.org/soap/envelope/"})]
struct Envelope {
    #[yaserde(rename = "Header", prefix = "soap-env")]
    header: Header,
    #[yaserde(rename = "Body", prefix = "soap-env")]
    body: Body,
}

#[derive(Debug, Default, YaDeserialize)]
#[yaserde(prefix = "wsse", namespaces = {"soap-env" = "http://schemas.xmlsoap.org/soap/envelope/", "wsse" = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"})]
struct Header {
    #[yaserde(rename = "Security", prefix = "wsse")]
    security: Security,
}

#[derive(Debug, Default, YaDeserialize)]
#[yaserde(prefix = "wsse", namespaces = {"wsse" = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"})]
struct Security {
    #[yaserde(rename = "UsernameToken", prefix = "wsse")]
    token: UsernameToken,
}

#[derive(Debug, Default, YaDeserialize)]
#[yaserde(prefix = "wsse", namespaces = {"wsse" = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"})]
struct UsernameToken {
    #[yaserde(rename = "Username", prefix = "wsse")]
    username: String,
    #[yaserde(rename = "Password", prefix = "wsse")]
    password: String,
}

#[derive(Debug, Default, YaDeserialize)]
#[yaserde(prefix = "soap-env", namespaces = {"soap-env" = "http://schemas.xmlsoap.org/soap/envelope/", "n0" = "urn:clm:hub:responses:v1"})]
struct Body {
    #[yaserde(rename = "SubmitResponses", prefix = "n0")]
    submit: SubmitResponses,
}

#[derive(Debug, Default, YaDeserialize)]
#[yaserde(prefix = "n0", namespaces = {"n0" = "urn:clm:hub:responses:v1"})]
struct SubmitResponses {
    #[yaserde(rename = "SourceSystem", prefix = "n0")]
    source_system: String,
    #[yaserde(rename = "Response", prefix = "n0")]
    responses: Vec<Response>,
}

#[derive(Debug, Default, YaDeserialize)]
#[yaserde(prefix = "n0", namespaces = {"n0" = "urn:clm:hub:responses:v1"})]
struct Response {
    #[yaserde(rename = "ResponseId", prefix = "n0")]
    response_id: String,
    #[yaserde(rename = "MessageId", prefix = "n0")]
    message_id: Option<String>,
    #[yaserde(rename = "CrmId", prefix = "n0")]
    crm_id: Option<String>,
    #[yaserde(rename = "Kind", prefix = "n0")]
    kind: String,
    #[yaserde(rename = "OccurredAt", prefix = "n0")]
    occurred_at: String,
    #[yaserde(rename = "Detail", prefix = "n0")]
    detail: Option<String>,
}

fn main() {
    let path = std::env::args().nth(1).expect("sample path");
    let n: usize = std::env::args().nth(2).map_or(20_000, |s| s.parse().unwrap());
    let text = std::fs::read_to_string(path).unwrap();
    // Both must read the same thing first.
    let ours = parse_envelope(text.as_bytes(), Limits::DEFAULT).expect("codec parses");
    let theirs: Envelope = yaserde::de::from_str(&text).expect("yaserde parses");
    assert_eq!(theirs.body.submit.responses.len(), 4, "{theirs:?}");
    assert_eq!(theirs.header.security.token.username, "SAP_CRM_PRD");
    let _ = ours;
    for round in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(parse_envelope(std::hint::black_box(text.as_bytes()), Limits::DEFAULT).unwrap());
        }
        let codec = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n {
            let e: Envelope = yaserde::de::from_str(std::hint::black_box(&text)).unwrap();
            std::hint::black_box(e);
        }
        let yas = n as f64 / t.elapsed().as_secs_f64();
        println!("round {round}: codec (quick-xml) {codec:.0} envelopes/s, yaserde {yas:.0} envelopes/s, codec/yaserde {:.2}x", codec / yas);
    }
}
