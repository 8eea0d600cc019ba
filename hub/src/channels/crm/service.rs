//! The hub as a SOAP server: the response service SAP CRM and the CRM ESB (Amdocs, CRM B2C) call
//! back with responses to communications (`wsdl/hub-responses-v1.wsdl`).
//!
//! - `POST /soap/responses`: SOAP 1.1 or 1.2 (both bindings share the address), answered in the
//!   version of the request. The operation is the first Body element's QName; the codec
//!   ([`clm_connectors::soap`]) accepts any prefixes, default namespaces, `xsi:nil`, unknown
//!   optional elements, and refuses DTDs and entities (XXE, entity expansion) and oversized or
//!   too deeply nested envelopes with a `Client` fault before anything is expanded.
//! - Faults carry the HTTP status SOAP says (1.1: 500; 1.2: `Sender` 400, others 500), never 200.
//!   An envelope in an unknown namespace gets a SOAP 1.1 `VersionMismatch` fault with an
//!   `Upgrade` header; an unknown `mustUnderstand` header a `MustUnderstand` fault.
//! - `GET /soap/responses?wsdl` (or `?WSDL`) serves the WSDL with its addresses rewritten to
//!   `server.public_url`; the schemas it imports are served beside it (`/soap/<name>.xsd`).
//! - Callers (`soap.callers`) authenticate with a WS-Security UsernameToken or HTTP Basic, and
//!   may report only for the source systems configured for them. Both are checked before the
//!   body is parsed: HTTP Basic from the headers (wrong credentials are refused whatever the body
//!   holds), the token from the envelope's header alone ([`parse_prelude`] stops at the Body), so
//!   an unknown caller's body costs its bytes, not a parse.
//! - A bundle is answered per response: `Recorded`, `Duplicate` (the same `ResponseId` again),
//!   `UnknownMessage` (no communication of that channel matches), `Invalid` (no usable id). The
//!   store unavailable is a `Server` fault marked retryable: the caller resends the bundle and
//!   deduplication keeps each response once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clm_connectors::soap::{
    Body, FaultCode, Limits, SoapError, SoapVersion, envelope, fault_envelope,
    must_understand_envelope, parse_envelope, parse_prelude, version_mismatch_envelope,
};
use clm_contracts::soap::{
    ClmFault, ResponseOutcome as SoapOutcome, ResponseResult, SubmitResponses,
    SubmitResponsesResponse,
};
use tracing::{info, warn};

use crate::state::Shared;
use crate::store::{Correlation, IncomingResponse, ResponseOutcome};

/// The service name in `/soap/{service}`.
pub const RESPONSES: &str = "responses";

const WSDL: &str = include_str!("../../../../wsdl/hub-responses-v1.wsdl");
/// The schemas the WSDL imports, by the file name it imports them under.
const SCHEMAS: [(&str, &str); 2] = [
    (
        "hub-responses-v1.xsd",
        include_str!("../../../../wsdl/hub-responses-v1.xsd"),
    ),
    (
        "clm-common-v1.xsd",
        include_str!("../../../../wsdl/clm-common-v1.xsd"),
    ),
];
/// The address the committed WSDL carries, replaced by the hub's own.
const PLACEHOLDER_ADDRESS: &str = "http://localhost:8080/soap/responses";

fn xml(status: StatusCode, version: SoapVersion, body: String) -> Response {
    let mut r = (status, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&version.content_type(None)) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// A SOAP fault (counted by [`post`], which counts every answer that is not a 200).
fn fault(version: SoapVersion, code: FaultCode, detail: ClmFault) -> Response {
    let status = StatusCode::from_u16(version.fault_http_status(&code))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = fault_envelope(version, code, &detail.text.clone(), Some(&detail));
    xml(status, version, body)
}

fn client_fault(version: SoapVersion, code: &str, text: String) -> Response {
    fault(
        version,
        FaultCode::Client,
        ClmFault {
            code: code.to_owned(),
            text,
            retryable: false,
        },
    )
}

/// `GET /soap/{service}?wsdl` and `GET /soap/{schema}.xsd`.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if name == RESPONSES {
        if query
            .as_deref()
            .is_some_and(|q| q.eq_ignore_ascii_case("wsdl"))
        {
            let address = format!(
                "{}/soap/{RESPONSES}",
                shared.public_url.trim_end_matches('/')
            );
            let body = WSDL.replace(PLACEHOLDER_ADDRESS, &xml_attr(&address));
            return ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response();
        }
        return (
            StatusCode::BAD_REQUEST,
            "POST SOAP envelopes here; GET ?wsdl for the service description\n",
        )
            .into_response();
    }
    match SCHEMAS.iter().find(|(file, _)| *file == name) {
        Some((_, text)) => {
            ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], *text).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such SOAP service or schema\n").into_response(),
    }
}

fn xml_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

/// Why a caller is turned away: sent as the `UNAUTHENTICATED` fault's text.
const NO_CALLERS: &str = "no SOAP callers are configured on this hub";
const NO_CREDENTIALS: &str = "authentication required (WS-Security UsernameToken or HTTP Basic)";
const WRONG_CREDENTIALS: &str = "unknown user or wrong password";

/// Whether the hub is open (no callers configured, on a loopback listener only): `Ok(true)`;
/// `Err` when it has no callers but listens beyond loopback.
fn open(shared: &Shared) -> Result<bool, &'static str> {
    if !shared.config.soap.callers.is_empty() {
        return Ok(false);
    }
    // Open: start-up allows that on a loopback listener only; anywhere else, refuse.
    if shared.config.server.listen.ip().is_loopback() {
        Ok(true)
    } else {
        Err(NO_CALLERS)
    }
}

/// The configured caller with these credentials.
fn known<'a>(
    shared: &'a Shared,
    user: &str,
    password: &str,
) -> Result<&'a crate::config::SoapCaller, &'static str> {
    shared
        .config
        .soap
        .callers
        .iter()
        .find(|c| {
            crate::ingest::same(c.username.as_bytes(), user.as_bytes())
                & crate::ingest::same(c.password.as_bytes(), password.as_bytes())
        })
        .ok_or(WRONG_CREDENTIALS)
}

/// Who is calling, from the WS-Security UsernameToken or else HTTP Basic.
fn caller<'a>(
    shared: &'a Shared,
    headers: &HeaderMap,
    token: Option<&clm_connectors::soap::WsSecurity>,
) -> Result<Option<&'a crate::config::SoapCaller>, &'static str> {
    if open(shared)? {
        return Ok(None);
    }
    match (token, crate::ingest::basic_credentials(headers)) {
        (Some(t), _) => known(shared, &t.username, &t.password).map(Some),
        (None, Some((user, password))) => known(shared, &user, &password).map(Some),
        (None, None) => Err(NO_CREDENTIALS),
    }
}

/// Checks the caller before the body is parsed: HTTP Basic from the headers alone (wrong
/// credentials are refused whatever the body carries), and otherwise the WS-Security token of
/// the envelope's header ([`parse_prelude`], which stops at the Body). `Err` with the version to
/// answer in and the reason; `Ok` when the full parse may go on (it checks the caller again,
/// as [`caller`]).
fn check_early(
    shared: &Shared,
    headers: &HeaderMap,
    basic_refused: Option<&'static str>,
    body: &[u8],
    limits: Limits,
    announced: SoapVersion,
) -> Result<(), (SoapVersion, &'static str)> {
    let refused = |why| {
        let version = parse_prelude(body, limits).map_or(announced, |p| p.version);
        Err((version, why))
    };
    if let Some(why) = basic_refused {
        return refused(why);
    }
    match open(shared) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(why) => return refused(why),
    }
    // What the start cannot tell (not well-formed, no Body, …) the full parse answers.
    let Some(prelude) = parse_prelude(body, limits) else {
        return Ok(());
    };
    match (&prelude.security, crate::ingest::basic_credentials(headers)) {
        (Some(t), _) => known(shared, &t.username, &t.password)
            .map(|_| ())
            .map_err(|why| (prelude.version, why)),
        (None, Some(_)) => Ok(()),
        (None, None) => Err((prelude.version, NO_CREDENTIALS)),
    }
}

/// `POST /soap/{service}`. Every answer that is not a 200 is a SOAP fault, and is counted
/// (`clm_soap_faults_total`).
pub async fn post(
    State(shared): State<Arc<Shared>>,
    Extension(plugin): Extension<Arc<super::CrmPlugin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let answer = respond(&shared, &name, &headers, body).await;
    if answer.status() != StatusCode::OK {
        plugin.soap_faults.fetch_add(1, Ordering::Relaxed);
    }
    answer
}

async fn respond(
    shared: &Shared,
    name: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Response {
    // Until the envelope says otherwise, answer in the version the Content-Type announces.
    let announced = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(SoapVersion::from_content_type)
        .unwrap_or(SoapVersion::V11);
    if name != RESPONSES {
        return client_fault(
            announced,
            "UNKNOWN_SERVICE",
            format!(
                "no SOAP service `{}` here; the hub serves /soap/{RESPONSES}",
                short(name)
            ),
        );
    }
    let limits = Limits {
        max_bytes: shared.config.soap.max_bytes,
        ..Limits::DEFAULT
    };
    // HTTP Basic is checked before the body: wrong credentials are refused whatever it holds.
    let basic_refused = match (open(shared), crate::ingest::basic_credentials(headers)) {
        (Ok(false), Some((user, password))) => known(shared, &user, &password).err(),
        _ => None,
    };
    // Read no more than the limit allows: an oversized request costs a fault, not memory. (A
    // refused caller's body is read too, never parsed, so the answer reaches the client.)
    let body: Bytes = match axum::body::to_bytes(body, limits.max_bytes + 1).await {
        Ok(b) => b,
        Err(_) => {
            if let Some(why) = basic_refused {
                return unauthenticated(shared, announced, why);
            }
            let e = SoapError::TooLarge {
                max: limits.max_bytes,
                unit: "bytes",
            };
            return fault(announced, e.fault_code(), e.clm_fault());
        }
    };
    // The caller's token is checked from the header before the envelope is parsed in full.
    if let Err((version, why)) =
        check_early(shared, headers, basic_refused, &body, limits, announced)
    {
        return unauthenticated(shared, version, why);
    }
    let parsed = match parse_envelope(&body, limits) {
        Ok(p) => p,
        Err(SoapError::VersionMismatch) => {
            let body =
                version_mismatch_envelope(SoapVersion::V11, &[SoapVersion::V11, SoapVersion::V12]);
            return xml(StatusCode::INTERNAL_SERVER_ERROR, SoapVersion::V11, body);
        }
        Err(e) => {
            return fault(announced, e.fault_code(), e.clm_fault());
        }
    };
    let version = parsed.version;
    let who = match caller(shared, headers, parsed.security.as_ref()) {
        Ok(c) => c,
        Err(why) => return unauthenticated(shared, version, why),
    };
    if !parsed.must_understand.is_empty() {
        let body = must_understand_envelope(version, &parsed.must_understand);
        return xml(StatusCode::INTERNAL_SERVER_ERROR, version, body);
    }
    let request = match parsed.body {
        Body::SubmitResponses(r) => r,
        other => {
            return client_fault(
                version,
                "UNKNOWN_OPERATION",
                format!(
                    "{} is not an operation of the response service (SubmitResponses is)",
                    other.element_name()
                ),
            );
        }
    };
    if let Some(c) = who
        && !c
            .systems
            .iter()
            .any(|s| *s == request.source_system.to_string())
    {
        return client_fault(
            version,
            "NOT_ALLOWED",
            format!(
                "caller `{}` may not report for {}",
                short(&c.username),
                request.source_system
            ),
        );
    }
    match record(shared, &request).await {
        Ok(answer) => {
            let body = envelope(version, &answer, None);
            xml(StatusCode::OK, version, body)
        }
        Err(e) => {
            warn!(error = %e, "SOAP responses not recorded: store unavailable");
            fault(
                version,
                FaultCode::Server,
                ClmFault {
                    code: "STORE_UNAVAILABLE".into(),
                    text: "the hub cannot record responses right now; send the bundle again later"
                        .into(),
                    retryable: true,
                },
            )
        }
    }
}

/// The `UNAUTHENTICATED` Client fault.
fn unauthenticated(shared: &Shared, version: SoapVersion, why: &str) -> Response {
    shared
        .metrics
        .ingest_unauthorized
        .fetch_add(1, Ordering::Relaxed);
    client_fault(version, "UNAUTHENTICATED", why.to_owned())
}

/// At most 64 characters of a caller-supplied name, for fault texts.
fn short(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Correlates and records a bundle; the answer has one result per response, in order.
async fn record(
    shared: &Shared,
    request: &SubmitResponses,
) -> Result<SubmitResponsesResponse, String> {
    let channel = request.source_system.channel();
    let mut results: Vec<Option<ResponseResult>> = vec![None; request.responses.len()];
    let mut items = Vec::new();
    let mut positions = Vec::new();
    // Responses correlated by MessageId that also carry a CrmId: tried again by CrmId when our
    // id matches nothing (a CRM may echo a MessageId of its own making).
    let mut fallbacks: Vec<Option<String>> = Vec::new();
    for (i, r) in request.responses.iter().enumerate() {
        let ours = r
            .message_id
            .as_deref()
            .and_then(|m| uuid::Uuid::parse_str(m.trim()).ok());
        let (correlation, fallback) = match (ours, &r.crm_id) {
            (Some(id), crm) => (Correlation::Id(id), crm.clone()),
            (None, Some(crm)) => (Correlation::External(crm.clone()), None),
            (None, None) => {
                let why = if r.message_id.is_some() {
                    "MessageId is not a UUID and there is no CrmId"
                } else {
                    "neither MessageId nor CrmId"
                };
                results[i] = Some(ResponseResult {
                    response_id: r.response_id.clone(),
                    outcome: SoapOutcome::Invalid,
                    error_text: Some(why.into()),
                });
                continue;
            }
        };
        let mut item = IncomingResponse {
            channel,
            correlation,
            kind: r.kind.response_kind(),
            occurred_at: Some(r.occurred_at),
            detail: r.detail.clone(),
            dedupe_key: format!("soap:{}", r.response_id),
            whole_message: true,
        };
        // What the store cannot hold (U+0000 from `&#0;`, an overlong id) is this response's
        // fault alone: answered Invalid, the others of the bundle are recorded.
        let fallback_ok = fallback.as_deref().is_none_or(|f| {
            clm_contracts::communication::storable("CrmId", f, crate::store::MAX_REFERENCE_LEN)
                .is_ok()
        });
        if let Err(e) = item.check().and_then(|()| {
            fallback_ok
                .then_some(())
                .ok_or_else(|| clm_contracts::ValidationError {
                    field: "CrmId",
                    message: "cannot be stored".into(),
                })
        }) {
            let field = match e.field {
                "message id" => "CrmId",
                "report id" => "ResponseId",
                "detail" => "Detail",
                other => other,
            };
            results[i] = Some(ResponseResult {
                response_id: r
                    .response_id
                    .chars()
                    .take(64)
                    .filter(|c| *c != '\0')
                    .collect(),
                outcome: SoapOutcome::Invalid,
                error_text: Some(format!("{field}: {}", e.message)),
            });
            continue;
        }
        items.push(item);
        positions.push(i);
        fallbacks.push(fallback);
    }
    let mut outcomes = if items.is_empty() {
        Vec::new()
    } else {
        shared.ingest.call(items.clone()).await?
    };
    let retry: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(k, o)| **o == ResponseOutcome::NotFound && fallbacks[*k].is_some())
        .map(|(k, _)| k)
        .collect();
    if !retry.is_empty() {
        let again: Vec<IncomingResponse> = retry
            .iter()
            .map(|&k| IncomingResponse {
                correlation: Correlation::External(fallbacks[k].clone().expect("filtered")),
                ..items[k].clone()
            })
            .collect();
        let second = shared.ingest.call(again).await?;
        for (&k, o) in retry.iter().zip(second) {
            outcomes[k] = o;
        }
    }
    let m = &shared.metrics;
    let mut recorded = 0;
    for (pos, outcome) in positions.into_iter().zip(outcomes) {
        let r = &request.responses[pos];
        let (soap, text) = match outcome {
            ResponseOutcome::Recorded => {
                recorded += 1;
                m.ingest_recorded.fetch_add(1, Ordering::Relaxed);
                (SoapOutcome::Recorded, None)
            }
            ResponseOutcome::Duplicate => {
                m.ingest_duplicate.fetch_add(1, Ordering::Relaxed);
                (SoapOutcome::Duplicate, None)
            }
            ResponseOutcome::NotFound => {
                m.ingest_unknown.fetch_add(1, Ordering::Relaxed);
                (
                    SoapOutcome::UnknownMessage,
                    Some(format!("no {channel} communication matches")),
                )
            }
        };
        results[pos] = Some(ResponseResult {
            response_id: r.response_id.clone(),
            outcome: soap,
            error_text: text,
        });
    }
    if recorded > 0 {
        if let Some(ch) = shared.channels.get(&channel) {
            ch.counters.responses.fetch_add(recorded, Ordering::Relaxed);
        }
        shared.outbox_wake.notify_one();
    }
    info!(source = %request.source_system, responses = request.responses.len(), recorded, "SOAP responses received");
    Ok(SubmitResponsesResponse {
        results: results
            .into_iter()
            .map(|r| r.expect("every position answered"))
            .collect(),
    })
}
