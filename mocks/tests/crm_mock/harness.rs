//! Shared helpers: started mocks, messages built and answers read with the contract's codec,
//! xmllint validation against the envelope schemas, and a small receiver standing in for the
//! hub's response service.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clm_contracts::soap::codec::{
    Body, Fault, FaultCode, Limits, Parsed, SoapVersion, WsSecurity, envelope, fault_envelope,
    parse_envelope,
};
use clm_contracts::soap::{
    Attribute, ClmFault, CommunicationItem, CrmService, GetCommunicationStatus,
    GetCommunicationStatusResponse, ItemStatus, ResponseOutcome, ResponseResult,
    SendCommunications, SendCommunicationsResponse, SubmitResponses, SubmitResponsesResponse,
    TargetSystem,
};
use clm_mocks::{CrmKind, CrmMock, CrmMockConfig};
use uuid::Uuid;

/// Generous: nothing here should take long, but a loaded CI machine may be slow.
pub const WAIT: Duration = Duration::from_secs(20);

pub const BOTH: [SoapVersion; 2] = [SoapVersion::V11, SoapVersion::V12];

pub async fn start(kind: CrmKind) -> CrmMock {
    start_with(kind, CrmMockConfig::default()).await
}

pub async fn start_with(kind: CrmKind, config: CrmMockConfig) -> CrmMock {
    CrmMock::start(kind, "127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub fn id() -> String {
    Uuid::new_v4().to_string()
}

/// An item with every optional field, Cyrillic text included.
pub fn item(message_id: &str, customer_id: &str) -> CommunicationItem {
    CommunicationItem {
        message_id: message_id.to_owned(),
        campaign_id: "CMP-2026-01-UNLIM".to_owned(),
        customer_id: customer_id.to_owned(),
        recipient: Some("+79161234567".to_owned()),
        subject: Some("Безлимит+ со скидкой 30%".to_owned()),
        text: Some("Подключите тариф «Безлимит+» & <скидка> до 31 января".to_owned()),
        offer_code: Some("TARIFF_UNLIM_PLUS_30".to_owned()),
        valid_from: Some("2026-01-15T07:00:00Z".parse().unwrap()),
        valid_until: Some("2026-01-31T20:59:59Z".parse().unwrap()),
        attributes: vec![Attribute {
            name: "region".to_owned(),
            value: "Москва".to_owned(),
        }],
    }
}

pub fn bundle(target: Option<TargetSystem>, items: Vec<CommunicationItem>) -> SendCommunications {
    SendCommunications {
        target_system: target,
        bundle_id: format!("b-{}", Uuid::new_v4().simple()),
        items,
    }
}

pub fn status_query(target: Option<TargetSystem>, ids: &[&str]) -> GetCommunicationStatus {
    GetCommunicationStatus {
        target_system: target,
        message_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// An answer of the mock, read back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub content_length: Option<u64>,
    pub text: String,
}

impl Reply {
    /// The answer parsed with the codec (it must be SOAP).
    pub fn parsed(&self) -> Parsed {
        parse_envelope(self.text.as_bytes(), Limits::DEFAULT)
            .unwrap_or_else(|e| panic!("not a SOAP answer ({e}): {}", self.text))
    }

    pub fn send_response(&self, service: CrmService) -> SendCommunicationsResponse {
        match self.parsed().body {
            Body::SendCommunicationsResponse(s, r) => {
                assert_eq!(s, service, "answered in the service's namespace");
                r
            }
            other => panic!("not a SendCommunicationsResponse: {other:?}"),
        }
    }

    pub fn statuses(&self, service: CrmService) -> Vec<ItemStatus> {
        match self.parsed().body {
            Body::GetCommunicationStatusResponse(
                s,
                GetCommunicationStatusResponse { statuses },
            ) => {
                assert_eq!(s, service);
                statuses
            }
            other => panic!("not a GetCommunicationStatusResponse: {other:?}"),
        }
    }

    pub fn fault(&self) -> Fault {
        match self.parsed().body {
            Body::Fault(f) => f,
            other => panic!("not a fault: {other:?}"),
        }
    }

    /// Checks the answer is in `version`: the envelope's namespace and the Content-Type.
    pub fn assert_version(&self, version: SoapVersion) {
        assert_eq!(self.parsed().version, version, "{}", self.text);
        let media = match version {
            SoapVersion::V11 => "text/xml",
            SoapVersion::V12 => "application/soap+xml",
        };
        assert!(
            self.content_type.starts_with(media),
            "Content-Type {} for {version:?}",
            self.content_type
        );
    }

    /// A fault of `code` with the HTTP status SOAP says, valid against the envelope schema.
    pub fn assert_fault(&self, version: SoapVersion, code: FaultCode) -> Fault {
        let expected = version.fault_http_status(&code);
        assert_eq!(self.status, expected, "{}", self.text);
        self.assert_version(version);
        let fault = self.fault();
        assert_eq!(fault.code, code, "{}", self.text);
        xmllint(&self.text, version);
        fault
    }
}

/// POSTs `message` in an envelope of `version` the way a client does (`SOAPAction` for 1.1, the
/// `action` parameter for 1.2).
pub async fn call(
    url: &str,
    version: SoapVersion,
    message: &Body,
    security: Option<&WsSecurity>,
) -> Reply {
    let xml = envelope(version, message, security);
    let action = message.soap_action().unwrap();
    post_xml(client(), url, version, Some(action), xml).await
}

pub async fn send(url: &str, version: SoapVersion, message: &SendCommunications) -> Reply {
    call(
        url,
        version,
        &Body::SendCommunications(message.clone()),
        None,
    )
    .await
}

pub async fn query(url: &str, version: SoapVersion, message: &GetCommunicationStatus) -> Reply {
    call(
        url,
        version,
        &Body::GetCommunicationStatus(message.clone()),
        None,
    )
    .await
}

pub async fn post_xml(
    client: reqwest::Client,
    url: &str,
    version: SoapVersion,
    action: Option<&str>,
    xml: String,
) -> Reply {
    let mut request = client
        .post(url)
        .header(header::CONTENT_TYPE, version.content_type(action))
        .body(xml);
    if let Some(sa) = action.and_then(|a| version.soap_action_header(a)) {
        request = request.header("SOAPAction", sa);
    }
    reply(request.send().await.unwrap()).await
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let content_length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let text = response.text().await.unwrap();
    Reply {
        status,
        content_type,
        content_length,
        text,
    }
}

/// Path of a file in `wsdl/`.
pub fn wsdl_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../wsdl")
        .join(name)
}

/// Validates a whole envelope with `xmllint --schema` against `wsdl/samples/envelope-soap1x.xsd`.
/// A missing xmllint fails the test (`apt-get install libxml2-utils`), it is never skipped.
pub fn xmllint(xml: &str, version: SoapVersion) {
    let schema = match version {
        SoapVersion::V11 => wsdl_file("samples/envelope-soap11.xsd"),
        SoapVersion::V12 => wsdl_file("samples/envelope-soap12.xsd"),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("envelope.xml");
    std::fs::write(&file, xml).unwrap();
    let output = Command::new("xmllint")
        .arg("--nonet")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("xmllint is needed (apt-get install libxml2-utils) and could not run: {e}")
        });
    assert!(
        output.status.success(),
        "xmllint refuses the envelope:\n{}\n{xml}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The check itself can fail: a sample that breaks the schema is refused.
#[test]
#[should_panic(expected = "xmllint refuses the envelope")]
fn xmllint_refuses_an_invalid_envelope() {
    let invalid =
        std::fs::read_to_string(wsdl_file("samples/invalid-unknown-element-in-item.xml")).unwrap();
    xmllint(&invalid, SoapVersion::V11);
}

/// Checks `xml` is well-formed XML (any document).
pub fn xmllint_well_formed(xml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("document.xml");
    std::fs::write(&file, xml).unwrap();
    let output = Command::new("xmllint")
        .arg("--nonet")
        .arg("--noout")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("xmllint could not run: {e}"));
    assert!(
        output.status.success(),
        "not well-formed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Polls `condition` for up to [`WAIT`].
pub async fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

// --- the receiver: the hub's response service, as far as the callbacks need it -------------------

/// What the receiver answers one callback envelope with, instead of a normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// HTTP 500 with a plain-text body.
    Http500,
    /// A SOAP `Server` fault (retryable).
    ServerFault,
    /// A SOAP `Client` fault (not retryable).
    ClientFault,
}

/// One callback envelope the receiver got.
#[derive(Debug, Clone)]
pub struct Callback {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// HTTP status answered.
    pub answered: u16,
}

impl Callback {
    pub fn parsed(&self) -> Parsed {
        parse_envelope(&self.body, Limits::DEFAULT).expect("the codec reads the callback")
    }

    pub fn submit(&self) -> SubmitResponses {
        match self.parsed().body {
            Body::SubmitResponses(s) => s,
            other => panic!("not a SubmitResponses: {other:?}"),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
}

#[derive(Default)]
struct Inner {
    got: Mutex<Vec<Callback>>,
    script: Mutex<VecDeque<Answer>>,
    /// Outcomes for the next responses, before `Recorded`.
    outcomes: Mutex<VecDeque<ResponseOutcome>>,
}

/// Takes `SubmitResponses` on `/soap/responses` and answers them like the hub: one `Result` per
/// response, in the request's SOAP version.
pub struct Receiver {
    addr: std::net::SocketAddr,
    inner: Arc<Inner>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/soap/responses", post(take))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}/soap/responses", self.addr)
    }

    /// The next envelopes get these answers, then normal ones.
    pub fn script(&self, answers: &[Answer]) {
        self.inner.script.lock().unwrap().extend(answers);
    }

    /// The next responses are answered with these outcomes, then `Recorded`.
    pub fn outcomes(&self, outcomes: &[ResponseOutcome]) {
        self.inner.outcomes.lock().unwrap().extend(outcomes);
    }

    /// Every envelope received, whatever it was answered.
    pub fn all(&self) -> Vec<Callback> {
        self.inner.got.lock().unwrap().clone()
    }

    /// Envelopes answered 200.
    pub fn taken(&self) -> Vec<Callback> {
        self.all()
            .into_iter()
            .filter(|c| c.answered == 200)
            .collect()
    }

    /// Waits for `n` envelopes answered 200.
    pub async fn wait_for(&self, n: usize) -> Vec<Callback> {
        assert!(
            wait_until(|| self.taken().len() >= n).await,
            "expected {n} callbacks, got {:?}",
            self.all()
        );
        self.taken()
    }
}

async fn take(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let scripted = inner.script.lock().unwrap().pop_front();
    let version = parse_envelope(&body, Limits::DEFAULT)
        .map(|p| p.version)
        .unwrap_or(SoapVersion::V11);
    let (status, content_type, text) = match scripted {
        Some(Answer::Http500) => (
            500,
            "text/plain".to_owned(),
            "Internal Server Error".to_owned(),
        ),
        Some(answer @ (Answer::ServerFault | Answer::ClientFault)) => {
            let code = if answer == Answer::ServerFault {
                FaultCode::Server
            } else {
                FaultCode::Client
            };
            let detail = ClmFault {
                code: "TEST".into(),
                text: "scripted".into(),
                retryable: code == FaultCode::Server,
            };
            let status = version.fault_http_status(&code);
            let xml = fault_envelope(version, code, "scripted", Some(&detail));
            (status, version.content_type(None), xml)
        }
        None => match parse_envelope(&body, Limits::DEFAULT).map(|p| p.body) {
            Ok(Body::SubmitResponses(submit)) => {
                let mut outcomes = inner.outcomes.lock().unwrap();
                let results = submit
                    .responses
                    .iter()
                    .map(|r| ResponseResult {
                        response_id: r.response_id.clone(),
                        outcome: outcomes.pop_front().unwrap_or(ResponseOutcome::Recorded),
                        error_text: None,
                    })
                    .collect();
                let answer = Body::SubmitResponsesResponse(SubmitResponsesResponse { results });
                (
                    200,
                    version.content_type(None),
                    envelope(version, &answer, None),
                )
            }
            other => (
                400,
                "text/plain".to_owned(),
                format!("not a SubmitResponses: {other:?}"),
            ),
        },
    };
    inner.got.lock().unwrap().push(Callback {
        at: Instant::now(),
        headers,
        body,
        answered: status,
    });
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, content_type)],
        text,
    )
        .into_response()
}
