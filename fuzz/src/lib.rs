//! The fuzz targets of the hub's parsers of outside input, one function per target.
//!
//! Each function takes the raw bytes a caller could send and walks them down the path the hub
//! takes (`hub/src/ingest.rs`, `hub/src/soap.rs`, `hub/src/api.rs`, `hub/src/config.rs`): any
//! input may be refused, none may panic, and what is accepted must hold the invariants asserted
//! here (a read envelope writes and reads back the same, a valid communication survives its JSON
//! round trip, a stored response has no NUL, …).
//!
//! The same functions are used twice: by the libFuzzer binaries in `fuzz_targets/` (built by
//! `cargo fuzz`, run by `scripts/fuzz.sh`), and by `hub/tests/fuzz_seeds.rs`, which includes this
//! file as a module and replays every committed seed under `fuzz/corpus/<target>/` in the normal
//! test run. So the crate only uses what the hub's tests can use too.
//!
//! Input formats (seeds are written in them):
//! - `soap_envelope`, `soap_prelude`: the HTTP body of a SOAP request or answer.
//! - `sms_kannel_dlr`: `QUERY\nBODY`: the `dlr-url` query string, then (a POSTed report) the
//!   form-encoded body; without a newline all of it is the query (a GET report).
//! - `sms_json_dlr`: `QUERY\nBODY`: the query string of the report URL (its `id`), then the
//!   JSON body; the first line is always the query (it may be empty).
//! - `webhook_wink`, `webhook_elk`, `webhook_email`: the POSTed JSON body.
//! - `communication_json`: the body of `POST /v1/communications` (one object or
//!   `{"communications": [...]}`), which is also what an AMQP message carries.
//! - `hub_config`: a TOML config file; after a line `#--env--`, `KEY=VALUE` lines are the
//!   process environment (`CLM_HUB__…`).

use clm_connectors::outcome::{Report, ReportRef};
use clm_contracts::ChannelId;
use clm_contracts::soap::codec::{
    Body, FaultCode, Limits, Parsed, Prelude, envelope, parse_envelope, parse_prelude,
};
use clm_hub::store::{IncomingResponse, MAX_DETAIL_LEN};

/// A fuzz target: the raw input in, a panic for a finding.
pub type Target = fn(&[u8]);

/// Every target by name: the names of the `fuzz_targets/` binaries and of the corpus folders.
pub const TARGETS: &[(&str, Target)] = &[
    ("soap_envelope", soap_envelope),
    ("soap_prelude", soap_prelude),
    ("sms_kannel_dlr", sms_kannel_dlr),
    ("sms_json_dlr", sms_json_dlr),
    ("webhook_wink", webhook_wink),
    ("webhook_elk", webhook_elk),
    ("webhook_email", webhook_email),
    ("communication_json", communication_json),
    ("hub_config", hub_config),
];

// --- SOAP -----------------------------------------------------------------------------------------

/// `parse_envelope` with the hub's limits. What it reads must agree with `parse_prelude`, and
/// must be written (`envelope`) and read back as the same message.
pub fn soap_envelope(data: &[u8]) {
    let Ok(parsed) = parse_envelope(data, Limits::DEFAULT) else {
        // Refused: the prelude may still have read the header; it must not panic either.
        let _ = parse_prelude(data, Limits::DEFAULT);
        return;
    };
    assert_eq!(
        parse_prelude(data, Limits::DEFAULT),
        Some(Prelude {
            version: parsed.version,
            security: parsed.security.clone(),
        }),
        "the prelude reads the version and token as the envelope does"
    );
    round_trip(&parsed);
}

/// Written back and read again: the same message (faults: what a fault envelope carries).
fn round_trip(parsed: &Parsed) {
    let xml = envelope(parsed.version, &parsed.body, parsed.security.as_ref());
    // What we write is never refused for its size: escaping may make it longer than the input.
    let unbounded = Limits {
        max_bytes: usize::MAX,
        max_nodes: usize::MAX,
        ..Limits::DEFAULT
    };
    let again = match parse_envelope(xml.as_bytes(), unbounded) {
        Ok(p) => p,
        Err(e) => panic!("a written envelope is refused: {e}\n{xml}"),
    };
    assert_eq!(again.version, parsed.version);
    assert_eq!(again.security, parsed.security, "{xml}");
    assert!(again.must_understand.is_empty());
    match (&parsed.body, &again.body) {
        (Body::Fault(f), Body::Fault(g)) => {
            let code = match &f.code {
                FaultCode::Other(_) => FaultCode::Server,
                c => c.clone(),
            };
            assert_eq!(g.code, code, "{xml}");
            assert_eq!(g.subcode, None);
            assert_eq!(g.reason, f.reason, "{xml}");
            assert_eq!(g.detail, f.detail, "{xml}");
        }
        (a, b) => assert_eq!(a, b, "{xml}"),
    }
}

/// `parse_prelude` alone, with the hub's limits: an endpoint calls it on every request before
/// anything else.
pub fn soap_prelude(data: &[u8]) {
    if let Some(prelude) = parse_prelude(data, Limits::DEFAULT)
        && let Some(sec) = &prelude.security
    {
        assert_eq!(sec.username, sec.username.trim_matches(xml_space));
    }
}

fn xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

// --- SMS delivery reports -------------------------------------------------------------------------

/// The first line and the rest (no newline: all of it and nothing).
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A Kannel report as `hub::ingest::parse_sms` reads it: the query's parameters, then the form
/// body's.
pub fn sms_kannel_dlr(data: &[u8]) {
    let (query, body) = split_line(data);
    let mut params: Vec<(String, String)> = form_urlencoded::parse(query).into_owned().collect();
    params.extend(form_urlencoded::parse(body).into_owned());
    if let Ok(report) = clm_connectors::sms::kannel::parse_report(&params) {
        assert!(matches!(report.reference, ReportRef::Ours(_)));
        if let Some(d) = &report.detail {
            assert!(d.chars().count() <= 200, "a Kannel answer is cut to 200");
        }
        stored(ChannelId::Sms, report);
    }
}

/// A JSON-dialect report as `hub::ingest::parse_sms` reads it: the route's `id`, then the body.
pub fn sms_json_dlr(data: &[u8]) {
    let (query, body) = split_line(data);
    let route_id = form_urlencoded::parse(query)
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.into_owned());
    if let Ok(report) = clm_connectors::sms::json::parse_report(body, route_id.as_deref()) {
        stored(ChannelId::Sms, report);
    }
}

// --- webhooks -------------------------------------------------------------------------------------

pub fn webhook_wink(data: &[u8]) {
    webhook(ChannelId::Wink, data);
}

pub fn webhook_elk(data: &[u8]) {
    webhook(ChannelId::Elk, data);
}

fn webhook(channel: ChannelId, data: &[u8]) {
    if let Ok(report) = clm_connectors::json_http::parse_webhook(channel, data) {
        assert!(!report.dedupe_key.trim().is_empty());
        stored(channel, report);
    }
}

/// An e-mail event as `hub::ingest::ingest_email` reads it, and the `Message-ID` parser on the
/// raw input as well.
pub fn webhook_email(data: &[u8]) {
    use clm_connectors::email::{communication_of_message_id, mask_addresses, message_id};
    use clm_contracts::channels::email::Webhook;
    use clm_contracts::communication::storable;
    use clm_hub::store::MAX_REFERENCE_LEN;

    if let Ok(s) = std::str::from_utf8(data)
        && let Some(id) = communication_of_message_id(s)
    {
        // What it reads is what the hub writes, up to case and brackets.
        assert_eq!(
            communication_of_message_id(&message_id(id, "x.example")),
            Some(id)
        );
    }
    if data.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let de = &mut serde_json::Deserializer::from_slice(data);
    let Ok(hook) = serde_path_to_error::deserialize::<_, Webhook>(de) else {
        return;
    };
    if hook.event_id.trim().is_empty() {
        return;
    }
    let diagnostic = hook.bounce.as_ref().and_then(|b| b.diagnostic.as_deref());
    let checks = [
        storable("event_id", &hook.event_id, MAX_REFERENCE_LEN),
        storable("message_id", &hook.message_id, MAX_REFERENCE_LEN),
        storable("url", hook.url.as_deref().unwrap_or(""), usize::MAX),
        storable("bounce.diagnostic", diagnostic.unwrap_or(""), usize::MAX),
    ];
    if checks.iter().any(Result::is_err) {
        return;
    }
    let _ = hook.response_kind();
    let _ = hook.suppresses();
    if let Some(d) = diagnostic {
        let masked = mask_addresses(d);
        assert!(!masked.contains('\0'));
    }
    let _ = communication_of_message_id(&hook.message_id);
}

/// A report as the hub stores it (`IncomingResponse::check`): keys storable, the detail cut.
fn stored(channel: ChannelId, report: Report) {
    let mut incoming = IncomingResponse::from_report(channel, report);
    if incoming.check().is_ok() {
        assert!(!incoming.dedupe_key.contains('\0'));
        if let Some(d) = &incoming.detail {
            assert!(d.len() <= MAX_DETAIL_LEN && !d.contains('\0'));
        }
    }
}

// --- communications -------------------------------------------------------------------------------

/// `POST /v1/communications` as `hub::api::submit` and `hub::intake` read it. A communication
/// that validates must survive the JSON round trip the store puts it through, and still validate.
pub fn communication_json(data: &[u8]) {
    use clm_contracts::Communication;

    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let items = match value {
        serde_json::Value::Object(mut map) if map.contains_key("communications") => {
            match map.remove("communications") {
                Some(serde_json::Value::Array(items)) => items,
                _ => return,
            }
        }
        v @ serde_json::Value::Object(_) => vec![v],
        _ => return,
    };
    for item in items {
        let Ok(comm) = serde_path_to_error::deserialize::<_, Communication>(&item) else {
            continue;
        };
        if comm.validate().is_err() {
            continue;
        }
        let _ = clm_contracts::sms::segment(comm.content.text.as_deref().unwrap_or_default());
        let json = serde_json::to_vec(&comm).expect("a communication serializes");
        let back: Communication = match serde_json::from_slice(&json) {
            Ok(c) => c,
            Err(e) => panic!("a valid communication does not read back: {e}"),
        };
        assert_eq!(back, comm);
        assert!(back.validate().is_ok());
    }
}

// --- configuration --------------------------------------------------------------------------------

/// `Config::from_toml_str` (what `Config::load` does with a file), with `CLM_HUB__…` variables
/// after a `#--env--` line.
pub fn hub_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env) = match text.split_once("\n#--env--\n") {
        Some((toml, env)) => (toml, env),
        None => (text, ""),
    };
    let vars: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Ok(config) = clm_hub::Config::from_toml_str(toml, vars) {
        assert!(config.validate().is_ok());
    }
}
