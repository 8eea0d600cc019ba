//! The SOAP endpoint of a CRM mock.
//!
//! `POST`: faults (they stand for the CRM's infrastructure, so they come first) → the envelope
//! (the contract's codec: any prefixes, `xsi:nil`, DTDs and entities refused) → credentials →
//! `mustUnderstand` headers → service, operation and `SOAPAction` → the answer, in the request's
//! SOAP version; faults with the HTTP status SOAP says (1.1: 500; 1.2: `Sender` 400, others 500).
//! `GET ?wsdl`: the service's WSDL, its address rewritten; the schemas it imports are served
//! beside it.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use clm_contracts::soap::codec::{
    Body, FaultCode, Limits, Parsed, SoapError, SoapVersion, envelope, fault_envelope,
    must_understand_envelope, parse_envelope, version_mismatch_envelope,
};
use clm_contracts::soap::{
    ClmFault, GetCommunicationStatus, GetCommunicationStatusResponse, ItemStatusCode,
    SendCommunications, SendCommunicationsResponse,
};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::oneshot;
use tokio_util::io::ReaderStream;

use super::CrmKind;
use super::callbacks::Plan;
use super::faults::{CrmFault, Op};
use super::memory::{Counters, ReceivedBundle};
use super::state::Shared;

const SAP_WSDL: &str = include_str!("../../../wsdl/sap-crm-campaign-v1.wsdl");
const ESB_WSDL: &str = include_str!("../../../wsdl/crm-esb-v1.wsdl");
const COMMON_XSD: &str = include_str!("../../../wsdl/clm-common-v1.xsd");
const SAP_XSD: &str = include_str!("../../../wsdl/sap-crm-campaign-v1.xsd");
const ESB_XSD: &str = include_str!("../../../wsdl/crm-esb-v1.xsd");
/// The `soap:address` placeholders of the committed WSDLs.
const SAP_ADDRESS: &str = "http://sap-crm.example/clm/campaign";
const ESB_ADDRESS: &str = "http://crm-esb.example/clm/communications";

/// The schemas the kind's WSDL imports, by the file name it imports them under.
pub(crate) fn schemas(kind: CrmKind) -> [(&'static str, &'static str); 2] {
    match kind {
        CrmKind::SapCrm => [
            ("clm-common-v1.xsd", COMMON_XSD),
            ("sap-crm-campaign-v1.xsd", SAP_XSD),
        ],
        CrmKind::Esb => [
            ("clm-common-v1.xsd", COMMON_XSD),
            ("crm-esb-v1.xsd", ESB_XSD),
        ],
    }
}

pub(crate) fn xml_document(text: &'static str) -> Response {
    ([(CONTENT_TYPE, "text/xml; charset=utf-8")], text).into_response()
}

/// `GET <path>?wsdl` (any case): the WSDL with its `soap:address` set to this endpoint, under the
/// `Host` the client used (so a client behind a port mapping or a container name gets an address
/// it can reach); anything else gets a hint.
pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let kind = shared.kind;
    let asks_wsdl = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p.eq_ignore_ascii_case("wsdl")));
    if !asks_wsdl {
        return (
            StatusCode::OK,
            format!(
                "{kind} mock: POST SOAP 1.1 or 1.2 envelopes here; GET ?wsdl for the service description\n"
            ),
        )
            .into_response();
    }
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| valid_host(h))
        .map_or_else(|| shared.addr.to_string(), str::to_owned);
    let address = format!("http://{host}{}", kind.path());
    let (wsdl, placeholder) = match kind {
        CrmKind::SapCrm => (SAP_WSDL, SAP_ADDRESS),
        CrmKind::Esb => (ESB_WSDL, ESB_ADDRESS),
    };
    let body = wsdl.replace(placeholder, &address);
    ([(CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

/// A `Host` header that is a host name or address with an optional port, nothing to escape.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

/// An answer the handler built, before it goes out.
struct Answer {
    status: StatusCode,
    version: SoapVersion,
    xml: String,
    /// Callbacks to schedule once this answer went out.
    plan: Option<Plan>,
}

impl Answer {
    fn new(status: StatusCode, version: SoapVersion, xml: String) -> Answer {
        Answer {
            status,
            version,
            xml,
            plan: None,
        }
    }

    fn ok(version: SoapVersion, xml: String) -> Answer {
        Answer::new(StatusCode::OK, version, xml)
    }
}

/// A fault answer with a `ClmFault` detail.
fn fault(version: SoapVersion, code: FaultCode, clm_code: &str, text: &str) -> Answer {
    let retryable = code == FaultCode::Server;
    let status = StatusCode::from_u16(version.fault_http_status(&code))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let detail = ClmFault {
        code: clm_code.to_owned(),
        text: text.to_owned(),
        retryable,
    };
    Answer::new(
        status,
        version,
        fault_envelope(version, code, text, Some(&detail)),
    )
}

/// `POST <path>`.
pub(crate) async fn post(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = shared.kind;
    let counters = &shared.memory.counters;
    Counters::bump(&counters.requests);
    let parsed = parse_envelope(&body, Limits::DEFAULT);
    // The version to answer a request that cannot be read in: what its Content-Type announces.
    let version = match &parsed {
        Ok(p) => p.version,
        Err(_) => headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(SoapVersion::from_content_type)
            .unwrap_or(SoapVersion::V11),
    };
    let (op, target) = match parsed.as_ref().map(|p| &p.body) {
        Ok(Body::GetCommunicationStatus(q)) => (Op::Status, q.target_system),
        Ok(Body::SendCommunications(s)) => (Op::Send, s.target_system),
        _ => (Op::Send, None),
    };
    let decision = shared.decide(op, target);
    let mut latency = decision.latency;
    let mut hold_after = false;
    match decision.fault {
        CrmFault::Hang => {
            Counters::bump(&counters.held);
            tracing::debug!(%kind, ?op, "request held without an answer (hang)");
            shared.hold().await;
            return unavailable();
        }
        CrmFault::Http500 => {
            shared.pause(latency).await;
            Counters::bump(&counters.http_500);
            tracing::debug!(%kind, ?op, "injected HTTP 500");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                "500 Internal Server Error\n",
            )
                .into_response();
        }
        CrmFault::ClientFault => {
            shared.pause(latency).await;
            Counters::bump(&counters.client_faults);
            tracing::debug!(%kind, ?op, "injected Client fault");
            let answer = fault(
                version,
                FaultCode::Client,
                "MOCK_CLIENT_FAULT",
                "The request is refused (injected Client fault); do not resend it",
            );
            return respond(answer, None);
        }
        CrmFault::ServerFault => {
            shared.pause(latency).await;
            Counters::bump(&counters.server_faults);
            tracing::debug!(%kind, ?op, ?target, "injected Server fault");
            let answer = match target {
                Some(t) => fault(
                    version,
                    FaultCode::Server,
                    "TARGET_UNAVAILABLE",
                    &format!("{t} did not answer (injected Server fault); try again later"),
                ),
                None => fault(
                    version,
                    FaultCode::Server,
                    "MOCK_SERVER_FAULT",
                    "The CRM is temporarily unavailable (injected Server fault); try again later",
                ),
            };
            return respond(answer, None);
        }
        CrmFault::Slow { ms } => {
            Counters::bump(&counters.slow);
            latency += std::time::Duration::from_millis(ms);
        }
        CrmFault::AcceptThenHang => hold_after = true,
        CrmFault::Ok => {}
    }
    shared.pause(latency).await;
    if shared.shutdown.is_cancelled() {
        return unavailable();
    }

    let mut answer = handle(&shared, &headers, parsed, version, hold_after);
    let plan = answer.plan.take();
    let (answered, on_answered) = oneshot::channel::<()>();
    if let Some(plan) = plan {
        shared.callbacks.schedule(plan, on_answered);
    }
    if hold_after {
        Counters::bump(&counters.held);
        tracing::debug!(%kind, ?op, "request handled, answer held (accept_then_hang)");
        // Callbacks wait for `answered`: it goes when the hold ends (the client gave up and the
        // server dropped this future, or shutdown).
        let _answered = answered;
        shared.hold().await;
        return unavailable();
    }
    respond(answer, Some(answered))
}

/// 503, for the rare client still waiting when a held request is released by shutdown.
fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        "shutting down\n",
    )
        .into_response()
}

/// The HTTP response; `answered` is dropped once the whole body was handed to the connection (or
/// the connection went away), which releases the callbacks waiting for it.
fn respond(answer: Answer, answered: Option<oneshot::Sender<()>>) -> Response {
    let length = answer.xml.len();
    let body = match answered {
        Some(answered) => {
            let reader = Signalling {
                data: std::io::Cursor::new(Bytes::from(answer.xml)),
                _answered: answered,
            };
            HttpBody::from_stream(ReaderStream::with_capacity(reader, length.max(1)))
        }
        None => HttpBody::from(answer.xml),
    };
    let mut response = (answer.status, body).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&answer.version.content_type(None)) {
        headers.insert(CONTENT_TYPE, v);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// The answer's bytes, holding the sender that tells the callbacks the answer went out: it is
/// dropped with the body, after the last byte was read from it.
struct Signalling {
    data: std::io::Cursor<Bytes>,
    _answered: oneshot::Sender<()>,
}

impl AsyncRead for Signalling {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().data).poll_read(cx, buf)
    }
}

/// Everything after the faults: the envelope, credentials, headers, service and operation.
fn handle(
    shared: &Shared,
    headers: &HeaderMap,
    parsed: Result<Parsed, SoapError>,
    version: SoapVersion,
    held: bool,
) -> Answer {
    let kind = shared.kind;
    let counters = &shared.memory.counters;
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(SoapError::VersionMismatch) => {
            Counters::bump(&counters.invalid);
            let xml =
                version_mismatch_envelope(SoapVersion::V11, &[SoapVersion::V11, SoapVersion::V12]);
            return Answer::new(StatusCode::INTERNAL_SERVER_ERROR, SoapVersion::V11, xml);
        }
        Err(error) => {
            Counters::bump(&counters.invalid);
            Counters::bump(&counters.client_faults);
            tracing::debug!(%kind, code = error.clm_code(), "request refused: unreadable");
            return fault(
                version,
                FaultCode::Client,
                error.clm_code(),
                &error.to_string(),
            );
        }
    };
    if !shared.authorized(headers, parsed.security.as_ref()) {
        Counters::bump(&counters.unauthorized);
        Counters::bump(&counters.client_faults);
        tracing::debug!(%kind, "request refused: missing or wrong credentials");
        return fault(
            version,
            FaultCode::Client,
            "NOT_AUTHORIZED",
            "Missing or wrong credentials (HTTP Basic or a WS-Security UsernameToken)",
        );
    }
    if !parsed.must_understand.is_empty() {
        Counters::bump(&counters.invalid);
        let xml = must_understand_envelope(version, &parsed.must_understand);
        return Answer::new(StatusCode::INTERNAL_SERVER_ERROR, version, xml);
    }
    let refuse = |code: &str, text: &str| {
        Counters::bump(&counters.invalid);
        Counters::bump(&counters.client_faults);
        tracing::debug!(%kind, code, "request refused");
        fault(version, FaultCode::Client, code, text)
    };
    let target = match &parsed.body {
        Body::SendCommunications(m) => m.target_system,
        Body::GetCommunicationStatus(m) => m.target_system,
        other => {
            return refuse(
                "UNKNOWN_OPERATION",
                &format!(
                    "{} is no operation of the {} service",
                    other.element_name(),
                    service_name(kind)
                ),
            );
        }
    };
    match (kind, target) {
        (CrmKind::SapCrm, Some(_)) => {
            return refuse(
                "WRONG_SERVICE",
                "A CRM ESB message (urn:clm:crm-esb:v1, with a TargetSystem) was sent to the SAP CRM campaign service",
            );
        }
        (CrmKind::Esb, None) => {
            return refuse(
                "WRONG_SERVICE",
                "A SAP CRM campaign message was sent to the CRM ESB: the ESB needs the urn:clm:crm-esb:v1 messages with a TargetSystem",
            );
        }
        _ => {}
    }
    if let (Some(expected), Some(given)) = (parsed.body.soap_action(), action(headers, version))
        && given != expected
    {
        return refuse(
            "ACTION_MISMATCH",
            &format!("The SOAPAction does not match the operation; expected {expected}"),
        );
    }
    match parsed.body {
        Body::SendCommunications(message) => send(shared, version, message, held),
        Body::GetCommunicationStatus(query) => status(shared, version, query),
        // Answered above.
        _ => refuse("UNKNOWN_OPERATION", "no operation of this service"),
    }
}

const fn service_name(kind: CrmKind) -> &'static str {
    match kind {
        CrmKind::SapCrm => "SAP CRM campaign",
        CrmKind::Esb => "CRM ESB",
    }
}

/// The request's action, when it names one: 1.1 the `SOAPAction` header (quotes removed; empty
/// means none), 1.2 the `action` parameter of the `Content-Type`.
fn action(headers: &HeaderMap, version: SoapVersion) -> Option<String> {
    let raw = match version {
        SoapVersion::V11 => headers.get("soapaction")?.to_str().ok()?.to_owned(),
        SoapVersion::V12 => {
            let content_type = headers.get(CONTENT_TYPE)?.to_str().ok()?;
            content_type.split(';').skip(1).find_map(|param| {
                let (name, value) = param.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("action")
                    .then(|| value.trim().to_owned())
            })?
        }
    };
    let action = raw.trim().trim_matches('"').trim();
    (!action.is_empty()).then(|| action.to_owned())
}

fn send(shared: &Shared, version: SoapVersion, message: SendCommunications, held: bool) -> Answer {
    let kind = shared.kind;
    let target = message.target_system;
    let rules = shared.rules();
    let callbacks = shared.callbacks();
    let bundle_id = message.bundle_id.clone();
    let (results, fresh) = shared.memory.accept_bundle(
        target,
        &message.items,
        || shared.new_crm_id(target),
        |item| shared.rejection(&rules, item, target),
        |items| ReceivedBundle {
            at: Utc::now(),
            bundle_id: bundle_id.clone(),
            target_system: target.map(|t| t.as_str().to_owned()),
            version: version_name(version).to_owned(),
            held,
            items,
        },
    );
    let count = |status: ItemStatusCode| results.iter().filter(|r| r.status == status).count();
    tracing::debug!(
        %kind,
        bundle_id = %message.bundle_id,
        target = ?target.map(|t| t.as_str()),
        items = results.len(),
        accepted = count(ItemStatusCode::Accepted),
        duplicate = count(ItemStatusCode::Duplicate),
        rejected = count(ItemStatusCode::Rejected),
        held,
        "bundle handled"
    );
    for result in &results {
        tracing::trace!(
            %kind,
            bundle_id = %message.bundle_id,
            message_id = %result.message_id,
            status = %result.status,
            crm_id = ?result.crm_id,
            "item"
        );
    }
    let plan = (!fresh.is_empty()).then(|| Plan {
        config: callbacks,
        source: kind.source_system(target),
        bundle_id: message.bundle_id.clone(),
        items: fresh,
    });
    let response = SendCommunicationsResponse {
        bundle_id: message.bundle_id,
        results,
    };
    let mut answer = Answer::ok(
        version,
        envelope(version, &(kind.service(), &response), None),
    );
    answer.plan = plan;
    answer
}

fn status(shared: &Shared, version: SoapVersion, query: GetCommunicationStatus) -> Answer {
    let kind = shared.kind;
    Counters::bump(&shared.memory.counters.status_queries);
    let statuses = shared
        .memory
        .status(query.target_system, &query.message_ids);
    tracing::debug!(
        %kind,
        target = ?query.target_system.map(|t| t.as_str()),
        ids = statuses.len(),
        "status query answered"
    );
    for s in &statuses {
        tracing::trace!(%kind, message_id = %s.message_id, state = %s.state, "status");
    }
    let response = GetCommunicationStatusResponse { statuses };
    Answer::ok(
        version,
        envelope(version, &(kind.service(), &response), None),
    )
}

pub(crate) const fn version_name(version: SoapVersion) -> &'static str {
    match version {
        SoapVersion::V11 => "1.1",
        SoapVersion::V12 => "1.2",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_read_from_either_place() {
        let mut headers = HeaderMap::new();
        assert_eq!(action(&headers, SoapVersion::V11), None);
        headers.insert("SOAPAction", HeaderValue::from_static("\"urn:x#Op\""));
        assert_eq!(
            action(&headers, SoapVersion::V11).as_deref(),
            Some("urn:x#Op")
        );
        headers.insert("SOAPAction", HeaderValue::from_static("\"\""));
        assert_eq!(action(&headers, SoapVersion::V11), None);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/soap+xml; charset=utf-8; action=\"urn:y#Op\""),
        );
        assert_eq!(
            action(&headers, SoapVersion::V12).as_deref(),
            Some("urn:y#Op")
        );
    }

    #[test]
    fn hosts_are_checked_before_going_into_the_wsdl() {
        assert!(valid_host("127.0.0.1:9100"));
        assert!(valid_host("[::1]:80"));
        assert!(valid_host("mocks"));
        assert!(!valid_host("a\"b"));
        assert!(!valid_host("a/b"));
        assert!(!valid_host(""));
    }

    #[test]
    fn the_placeholders_are_in_the_wsdls() {
        assert!(SAP_WSDL.contains(SAP_ADDRESS));
        assert!(ESB_WSDL.contains(ESB_ADDRESS));
        for kind in [CrmKind::SapCrm, CrmKind::Esb] {
            let wsdl = match kind {
                CrmKind::SapCrm => SAP_WSDL,
                CrmKind::Esb => ESB_WSDL,
            };
            for (file, _) in schemas(kind) {
                assert!(
                    wsdl.contains(&format!("schemaLocation=\"{file}\"")),
                    "{file}"
                );
            }
        }
    }
}
