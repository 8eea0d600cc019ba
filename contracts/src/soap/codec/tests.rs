use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::soap::*;
use chrono::{TimeZone, Utc};

use super::*;

// --- fixtures -------------------------------------------------------------------------------------

const ID1: &str = "6f1c2a8e-3b4d-4c5e-9f60-7a8b9c0d1e2f";
const ID2: &str = "0b7d9e21-5c3a-4f8b-8e1d-2a3b4c5d6e7f";
const ID3: &str = "c4e5f6a7-b8c9-4d0e-a1f2-3b4c5d6e7f80";

/// Text that needs escaping, keeps its whitespace and is not ASCII.
const NASTY: &str = "  <b>Tom & Jerry</b> \"q\" 'a' ]]> -- \r\n\ttab Безлимит+ «ДА» 😀  ";

fn full_item() -> CommunicationItem {
    CommunicationItem {
        message_id: ID1.into(),
        campaign_id: "CMP-2026-01-UNLIM".into(),
        customer_id: "7701234567".into(),
        recipient: Some("+79161234567".into()),
        subject: Some(NASTY.into()),
        text: Some("Line 1\nLine 2 & <more>".into()),
        offer_code: Some("TARIFF_UNLIM_PLUS_30".into()),
        valid_from: Some(Utc.with_ymd_and_hms(2026, 1, 15, 7, 0, 0).unwrap()),
        valid_until: Some(
            Utc.with_ymd_and_hms(2026, 1, 31, 20, 59, 59).unwrap()
                + chrono::Duration::milliseconds(250),
        ),
        attributes: vec![
            Attribute {
                name: "region".into(),
                value: "Москва".into(),
            },
            Attribute {
                name: "empty".into(),
                value: String::new(),
            },
        ],
    }
}

fn minimal_item(id: &str) -> CommunicationItem {
    CommunicationItem {
        message_id: id.into(),
        campaign_id: "CMP-2".into(),
        customer_id: "C-2".into(),
        recipient: None,
        subject: None,
        text: None,
        offer_code: None,
        valid_from: None,
        valid_until: None,
        attributes: vec![],
    }
}

fn send(target: Option<TargetSystem>) -> SendCommunications {
    SendCommunications {
        target_system: target,
        bundle_id: "b-20260115-0930-0001".into(),
        items: vec![full_item(), minimal_item(ID2)],
    }
}

fn send_response() -> SendCommunicationsResponse {
    SendCommunicationsResponse {
        bundle_id: "b-20260115-0930-0001".into(),
        results: vec![
            ItemResult {
                message_id: ID1.into(),
                status: ItemStatusCode::Accepted,
                crm_id: Some("0050569A1B2C".into()),
                error_code: None,
                error_text: None,
            },
            ItemResult {
                message_id: ID2.into(),
                status: ItemStatusCode::Duplicate,
                crm_id: None,
                error_code: None,
                error_text: None,
            },
            ItemResult {
                message_id: ID3.into(),
                status: ItemStatusCode::Rejected,
                crm_id: None,
                error_code: Some("CRM_MKT_042".into()),
                error_text: Some("Партнёр <7705550101> & co не найден".into()),
            },
        ],
    }
}

fn status(target: Option<TargetSystem>) -> GetCommunicationStatus {
    GetCommunicationStatus {
        target_system: target,
        message_ids: vec![ID1.into(), ID2.into(), ID3.into()],
    }
}

fn status_response() -> GetCommunicationStatusResponse {
    GetCommunicationStatusResponse {
        statuses: vec![
            ItemStatus {
                message_id: ID1.into(),
                state: ItemState::Accepted,
                crm_id: Some("1-8F3K2LQ".into()),
                error_text: None,
            },
            ItemStatus {
                message_id: ID2.into(),
                state: ItemState::Rejected,
                crm_id: None,
                error_text: Some("no such customer".into()),
            },
            ItemStatus {
                message_id: ID3.into(),
                state: ItemState::Unknown,
                crm_id: None,
                error_text: None,
            },
        ],
    }
}

fn submit() -> SubmitResponses {
    SubmitResponses {
        source_system: SourceSystem::CrmB2c,
        responses: vec![
            CrmResponse {
                response_id: "r-1".into(),
                message_id: Some(ID1.into()),
                crm_id: Some("B2C-1".into()),
                kind: CrmResponseKind::OfferAccepted,
                occurred_at: Utc.with_ymd_and_hms(2026, 1, 15, 9, 41, 27).unwrap(),
                detail: Some(NASTY.into()),
            },
            CrmResponse {
                response_id: "r-2".into(),
                message_id: None,
                crm_id: Some("B2C-2".into()),
                kind: CrmResponseKind::OptedOut,
                occurred_at: Utc.with_ymd_and_hms(2026, 1, 15, 9, 45, 0).unwrap(),
                detail: None,
            },
        ],
    }
}

fn submit_response() -> SubmitResponsesResponse {
    SubmitResponsesResponse {
        results: vec![
            ResponseResult {
                response_id: "r-1".into(),
                outcome: ResponseOutcome::Recorded,
                error_text: None,
            },
            ResponseResult {
                response_id: "r-2".into(),
                outcome: ResponseOutcome::Invalid,
                error_text: Some("neither MessageId nor CrmId given".into()),
            },
        ],
    }
}

fn clm_fault(retryable: bool) -> ClmFault {
    ClmFault {
        code: "STORE_UNAVAILABLE".into(),
        text: "store <unavailable> & retry".into(),
        retryable,
    }
}

/// Every message of the three services, each CRM message for every service.
fn all_bodies() -> Vec<Body> {
    let mut bodies = Vec::new();
    for target in [None, Some(TargetSystem::Amdocs), Some(TargetSystem::CrmB2c)] {
        bodies.push(Body::SendCommunications(send(target)));
        bodies.push(Body::GetCommunicationStatus(status(target)));
    }
    for service in [CrmService::SapCrm, CrmService::Esb] {
        bodies.push(Body::SendCommunicationsResponse(service, send_response()));
        bodies.push(Body::GetCommunicationStatusResponse(
            service,
            status_response(),
        ));
    }
    bodies.push(Body::SubmitResponses(submit()));
    bodies.push(Body::SubmitResponsesResponse(submit_response()));
    bodies
}

fn creds() -> WsSecurity {
    WsSecurity {
        username: "CLM_HUB".into(),
        password: "p&ss<w>rd \"x\"".into(),
    }
}

fn parse(xml: &str) -> Result<Parsed, SoapError> {
    parse_envelope(xml.as_bytes(), Limits::default())
}

fn body_of(xml: &str) -> Body {
    match parse(xml) {
        Ok(p) => p.body,
        Err(e) => panic!("{e}: {xml}"),
    }
}

fn err_of(xml: &str) -> SoapError {
    match parse(xml) {
        Ok(p) => panic!("parsed: {p:?}"),
        Err(e) => e,
    }
}

/// A SOAP 1.1 envelope around `body`.
fn env11(body: &str) -> String {
    format!(
        r#"<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../wsdl/samples")
}

fn sample(name: &str) -> Vec<u8> {
    let path = samples_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Validates every document against the envelope schema of its version (the fixtures of
/// `wsdl/samples/`, which import the service schemas), in one `xmllint` run. Fails, never skips,
/// without `xmllint`.
fn xmllint(version: SoapVersion, docs: &[(String, String)]) -> Result<(), String> {
    let schema = samples_dir().join(match version {
        SoapVersion::V11 => "envelope-soap11.xsd",
        SoapVersion::V12 => "envelope-soap12.xsd",
    });
    assert!(schema.exists(), "{} missing", schema.display());
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, (name, xml)) in docs.iter().enumerate() {
        let path = dir.path().join(format!("{i:03}-{name}.xml"));
        std::fs::write(&path, xml).unwrap();
        files.push(path);
    }
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .args(&files)
        .output()
        .expect("xmllint must be installed (apt-get install -y libxml2-utils)");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn versions() -> [SoapVersion; 2] {
    [SoapVersion::V11, SoapVersion::V12]
}

// --- round trips and schema validity ----------------------------------------------------------------

#[test]
fn every_message_round_trips_in_both_versions_with_and_without_ws_security() {
    for version in versions() {
        for body in all_bodies() {
            for security in [None, Some(creds())] {
                let xml = envelope(version, &body, security.as_ref());
                let parsed = parse(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
                assert_eq!(
                    parsed,
                    Parsed {
                        version,
                        security: security.clone(),
                        must_understand: vec![],
                        body: body.clone(),
                    },
                    "{xml}"
                );
            }
        }
    }
}

#[test]
fn faults_round_trip_in_both_versions() {
    for version in versions() {
        for (code, detail) in [
            (FaultCode::Client, Some(clm_fault(false))),
            (FaultCode::Server, Some(clm_fault(true))),
            (FaultCode::Server, None),
            (FaultCode::VersionMismatch, None),
            (FaultCode::MustUnderstand, None),
        ] {
            let xml = fault_envelope(version, code.clone(), "bad <input> & more", detail.as_ref());
            let expected = Fault {
                code: code.clone(),
                subcode: None,
                reason: "bad <input> & more".into(),
                detail,
            };
            assert_eq!(body_of(&xml), Body::Fault(expected.clone()), "{xml}");
            // The same through the Body path.
            let again = envelope(version, &Body::Fault(expected.clone()), None);
            assert_eq!(again, xml);
        }
        // Other codes are written as Server / Receiver.
        let xml = fault_envelope(version, FaultCode::Other("{urn:x}Odd".into()), "r", None);
        let Body::Fault(f) = body_of(&xml) else {
            panic!("{xml}")
        };
        assert_eq!(f.code, FaultCode::Server);
    }
    let v11 = fault_envelope(SoapVersion::V11, FaultCode::Client, "r", None);
    assert!(v11.contains("<faultcode>soap:Client</faultcode>"), "{v11}");
    let v12 = fault_envelope(SoapVersion::V12, FaultCode::Client, "r", None);
    assert!(
        v12.contains("<soap:Value>soap:Sender</soap:Value>"),
        "{v12}"
    );
    let v12 = fault_envelope(SoapVersion::V12, FaultCode::Server, "r", None);
    assert!(
        v12.contains("<soap:Value>soap:Receiver</soap:Value>"),
        "{v12}"
    );
}

#[test]
fn everything_written_validates_against_the_xsd() {
    for version in versions() {
        let mut docs = Vec::new();
        for body in all_bodies() {
            let name = body.element_name();
            docs.push((name.to_owned(), envelope(version, &body, None)));
            docs.push((
                format!("{name}-wsse"),
                envelope(version, &body, Some(&creds())),
            ));
        }
        // Minimal messages: every optional element left out.
        let minimal = SendCommunications {
            target_system: None,
            bundle_id: "b".into(),
            items: vec![minimal_item(ID3)],
        };
        docs.push(("minimal".into(), envelope(version, &minimal, None)));
        for code in [
            FaultCode::Client,
            FaultCode::Server,
            FaultCode::VersionMismatch,
            FaultCode::MustUnderstand,
        ] {
            let detail = clm_fault(code == FaultCode::Server);
            docs.push((
                format!("fault-{code:?}"),
                fault_envelope(version, code.clone(), "reason", Some(&detail)),
            ));
            docs.push((
                format!("fault-{code:?}-bare"),
                fault_envelope(version, code, "reason", None),
            ));
        }
        docs.push((
            "version-mismatch".into(),
            version_mismatch_envelope(version, &[]),
        ));
        docs.push((
            "must-understand".into(),
            must_understand_envelope(version, &[]),
        ));
        if version == SoapVersion::V11 {
            // Upgrade / NotUnderstood are SOAP 1.2 header blocks; the 1.2 fixture schema takes
            // no header blocks in its own namespace, the 1.1 one checks them laxly.
            docs.push((
                "version-mismatch-upgrade".into(),
                version_mismatch_envelope(version, &[SoapVersion::V11, SoapVersion::V12]),
            ));
        }
        if let Err(e) = xmllint(version, &docs) {
            panic!("{version:?}: {e}");
        }
    }
}

#[test]
fn the_xsd_check_catches_a_wrong_element_order() {
    // Proves the validation above can fail: BundleId after the items breaks the sequence.
    let good = envelope(SoapVersion::V11, &send(None), None);
    let bundle = "<sap:BundleId>b-20260115-0930-0001</sap:BundleId>";
    let bad = good.replace(bundle, "").replace(
        "</sap:SendCommunications>",
        &format!("{bundle}</sap:SendCommunications>"),
    );
    assert_ne!(good, bad);
    assert!(xmllint(SoapVersion::V11, &[("good".into(), good)]).is_ok());
    assert!(xmllint(SoapVersion::V11, &[("bad".into(), bad)]).is_err());
}

#[test]
fn written_envelopes_omit_absent_elements_and_escape_text() {
    let minimal = SendCommunications {
        target_system: Some(TargetSystem::CrmB2c),
        bundle_id: "b&1".into(),
        items: vec![minimal_item(ID1)],
    };
    let xml = envelope(SoapVersion::V11, &minimal, None);
    for absent in [
        "Recipient",
        "Subject",
        "Text",
        "OfferCode",
        "Valid",
        "Attribute",
        "Header",
    ] {
        assert!(!xml.contains(absent), "{absent}: {xml}");
    }
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope"));
    assert!(xml.contains("<esb:TargetSystem>CRM_B2C</esb:TargetSystem><esb:BundleId>b&amp;1"));

    let xml = envelope(SoapVersion::V11, &send(None), Some(&creds()));
    assert!(xml.contains("Tom &amp; Jerry"), "{xml}");
    assert!(xml.contains("&lt;b&gt;"), "{xml}");
    assert!(xml.contains("]]&gt;"), "{xml}");
    assert!(
        xml.contains("&#13;"),
        "a raw CR would be read back as LF: {xml}"
    );
    assert!(xml.contains("<cmn:ValidFrom>2026-01-15T07:00:00Z</cmn:ValidFrom>"));
    assert!(xml.contains("<cmn:ValidUntil>2026-01-31T20:59:59.250Z</cmn:ValidUntil>"));
    assert!(xml.contains(&format!(
        "<wsse:Security xmlns:wsse=\"{WSSE_NS}\" soap:mustUnderstand=\"1\"><wsse:UsernameToken>\
         <wsse:Username>CLM_HUB</wsse:Username><wsse:Password Type=\"{WSSE_PASSWORD_TEXT}\">\
         p&amp;ss&lt;w&gt;rd \"x\"</wsse:Password></wsse:UsernameToken></wsse:Security>"
    )));
    let xml12 = envelope(SoapVersion::V12, &send(None), Some(&creds()));
    assert!(xml12.contains("soap:mustUnderstand=\"true\""));

    // Characters XML 1.0 cannot carry are replaced, so the document stays well-formed.
    let mut item = minimal_item(ID1);
    item.text = Some("bell\u{7}null\u{0}end".into());
    let msg = SendCommunications {
        target_system: None,
        bundle_id: "b".into(),
        items: vec![item],
    };
    let Body::SendCommunications(back) = body_of(&envelope(SoapVersion::V11, &msg, None)) else {
        panic!()
    };
    assert_eq!(
        back.items[0].text.as_deref(),
        Some("bell\u{FFFD}null\u{FFFD}end")
    );
}

#[test]
fn a_full_bundle_of_1000_round_trips_and_1001_is_invalid() {
    let mut msg = SendCommunications {
        target_system: Some(TargetSystem::Amdocs),
        bundle_id: "big".into(),
        items: (0..MAX_BUNDLE)
            .map(|i| minimal_item(&format!("00000000-0000-4000-8000-{i:012}")))
            .collect(),
    };
    let xml = envelope(SoapVersion::V11, &msg, None);
    assert_eq!(body_of(&xml), Body::SendCommunications(msg.clone()));

    msg.items.push(minimal_item(ID1));
    let xml = envelope(SoapVersion::V11, &msg, None);
    let err = err_of(&xml);
    assert!(
        matches!(&err, SoapError::Invalid(m) if m.contains("more than 1000 Item")),
        "{err}"
    );

    let ids = GetCommunicationStatus {
        target_system: None,
        message_ids: vec![ID1.to_owned(); MAX_BUNDLE + 1],
    };
    let err = err_of(&envelope(SoapVersion::V12, &ids, None));
    assert!(
        matches!(&err, SoapError::Invalid(m) if m.contains("MessageId")),
        "{err}"
    );
    let results = SubmitResponsesResponse {
        results: vec![submit_response().results[0].clone(); MAX_BUNDLE + 1],
    };
    assert!(matches!(
        err_of(&envelope(SoapVersion::V11, &results, None)),
        SoapError::Invalid(_)
    ));
}

// --- the samples of wsdl/samples --------------------------------------------------------------------

fn parse_sample(name: &str) -> Parsed {
    parse_envelope(&sample(name), Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn utc(s: &str) -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn sap_samples_parse_to_the_expected_messages() {
    let p = parse_sample("sap-crm-campaign-SendCommunications-request.xml");
    assert_eq!(p.version, SoapVersion::V11);
    assert_eq!(
        p.security,
        Some(WsSecurity {
            username: "CLM_HUB".into(),
            password: "s3cr3t-Pa55".into()
        })
    );
    assert!(p.must_understand.is_empty());
    let Body::SendCommunications(m) = p.body else {
        panic!("{:?}", p.body)
    };
    assert_eq!(m.target_system, None);
    assert_eq!(m.bundle_id, "b-20260115-0930-0001");
    assert_eq!(m.items.len(), 3);
    let first = &m.items[0];
    assert_eq!(first.message_id, ID1);
    assert_eq!(first.campaign_id, "CMP-2026-01-UNLIM");
    assert_eq!(first.customer_id, "7701234567");
    assert_eq!(first.recipient.as_deref(), Some("+79161234567"));
    assert_eq!(first.subject.as_deref(), Some("Безлимит+ со скидкой 30%"));
    assert_eq!(first.offer_code.as_deref(), Some("TARIFF_UNLIM_PLUS_30"));
    assert_eq!(first.valid_from, Some(utc("2026-01-15T07:00:00Z")));
    assert_eq!(first.valid_until, Some(utc("2026-01-31T20:59:59Z")));
    assert_eq!(
        first.attributes,
        vec![
            Attribute {
                name: "region".into(),
                value: "Москва".into()
            },
            Attribute {
                name: "segment".into(),
                value: "B2C_MASS".into()
            }
        ]
    );
    assert_eq!(m.items[2], {
        let mut i = minimal_item(ID3);
        i.campaign_id = "CMP-2026-01-ROAMING".into();
        i.customer_id = "7705550101".into();
        i
    });

    let p = parse_sample("sap-crm-campaign-SendCommunications-response.xml");
    let Body::SendCommunicationsResponse(CrmService::SapCrm, r) = p.body else {
        panic!("{:?}", p.body)
    };
    let statuses: Vec<_> = r.results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            ItemStatusCode::Accepted,
            ItemStatusCode::Duplicate,
            ItemStatusCode::Rejected
        ]
    );
    assert_eq!(r.results[2].error_code.as_deref(), Some("CRM_MKT_042"));
    assert_eq!(r.results[2].crm_id, None);

    let p = parse_sample("sap-crm-campaign-GetCommunicationStatus-request.xml");
    assert_eq!(
        p.body,
        Body::GetCommunicationStatus(GetCommunicationStatus {
            target_system: None,
            message_ids: vec![
                ID1.into(),
                ID3.into(),
                "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d".into()
            ],
        })
    );

    let p = parse_sample("sap-crm-campaign-GetCommunicationStatus-response.xml");
    let Body::GetCommunicationStatusResponse(CrmService::SapCrm, r) = p.body else {
        panic!("{:?}", p.body)
    };
    assert_eq!(r.statuses.len(), 3);
    assert_eq!(r.statuses[2].state, ItemState::Unknown);
    assert_eq!(r.statuses[2].crm_id, None, "xsi:nil is absent");
    assert_eq!(
        r.statuses[1].error_text.as_deref(),
        Some("Деловой партнёр 7705550101 не найден")
    );

    for (name, code, retryable, detail_code) in [
        (
            "sap-crm-campaign-SendCommunications-fault.xml",
            FaultCode::Server,
            true,
            "CRM_LOCKED",
        ),
        (
            "sap-crm-campaign-GetCommunicationStatus-fault.xml",
            FaultCode::Client,
            false,
            "NOT_AUTHORIZED",
        ),
    ] {
        let Body::Fault(f) = parse_sample(name).body else {
            panic!("{name}")
        };
        assert_eq!(f.code, code, "{name}");
        assert_eq!(f.retryable(), retryable, "{name}");
        assert_eq!(
            f.detail.as_ref().map(|d| d.code.as_str()),
            Some(detail_code)
        );
        assert!(!f.reason.is_empty());
    }
}

#[test]
fn esb_samples_parse_to_the_expected_messages() {
    let p = parse_sample("crm-esb-SendCommunications-request.xml");
    assert_eq!(p.security, None);
    let Body::SendCommunications(m) = p.body else {
        panic!("{:?}", p.body)
    };
    assert_eq!(m.target_system, Some(TargetSystem::Amdocs));
    assert_eq!(m.service(), CrmService::Esb);
    assert_eq!(m.items.len(), 2);
    assert_eq!(m.items[0].subject, None, "xsi:nil is absent");
    assert_eq!(m.items[0].recipient.as_deref(), Some("ЛС 770012345678"));
    assert_eq!(m.items[0].attributes[0].value, "Северо-Западный филиал");
    assert_eq!(m.items[1].valid_from, None);

    let p = parse_sample("crm-esb-SendCommunications-response.xml");
    let Body::SendCommunicationsResponse(CrmService::Esb, r) = p.body else {
        panic!("{:?}", p.body)
    };
    assert_eq!(r.bundle_id, "7c1e0a52-1f3b-4d8e-9a6c-5b4d3c2e1f00");
    assert_eq!(r.results[0].crm_id.as_deref(), Some("1-8F3K2LQ"));
    assert_eq!(r.results[1].status, ItemStatusCode::Rejected);
    assert_eq!(r.results[1].error_code.as_deref(), Some("AMD-OFR-0117"));

    let p = parse_sample("crm-esb-GetCommunicationStatus-request.xml");
    assert_eq!(
        p.body,
        Body::GetCommunicationStatus(GetCommunicationStatus {
            target_system: Some(TargetSystem::CrmB2c),
            message_ids: vec![
                "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d".into(),
                "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e".into()
            ],
        })
    );

    let p = parse_sample("crm-esb-GetCommunicationStatus-response.xml");
    let Body::GetCommunicationStatusResponse(CrmService::Esb, r) = p.body else {
        panic!("{:?}", p.body)
    };
    assert_eq!(r.statuses[0].crm_id.as_deref(), Some("B2C-2026-0000418812"));
    assert_eq!(r.statuses[1].state, ItemState::Unknown);

    for (name, code, retryable) in [
        (
            "crm-esb-SendCommunications-fault.xml",
            FaultCode::Client,
            false,
        ),
        (
            "crm-esb-GetCommunicationStatus-fault.xml",
            FaultCode::Server,
            true,
        ),
    ] {
        let Body::Fault(f) = parse_sample(name).body else {
            panic!("{name}")
        };
        assert_eq!((f.code.clone(), f.retryable()), (code, retryable), "{name}");
        assert!(f.detail.is_some(), "{name}");
    }
}

#[test]
fn hub_response_samples_parse_to_the_expected_messages() {
    let p = parse_sample("hub-responses-SubmitResponses-request.xml");
    assert_eq!(
        p.security.as_ref().map(|s| s.username.as_str()),
        Some("SAP_CRM_PRD")
    );
    assert_eq!(
        p.security.as_ref().map(|s| s.password.as_str()),
        Some("Kampagne-2026!")
    );
    let Body::SubmitResponses(m) = p.body else {
        panic!("{:?}", p.body)
    };
    assert_eq!(m.source_system, SourceSystem::SapCrm);
    assert_eq!(m.responses.len(), 4);
    assert_eq!(
        m.responses[0],
        CrmResponse {
            response_id: "0050569A1B2C1EDF8FA0B1C2D3E4F501".into(),
            message_id: Some(ID1.into()),
            crm_id: Some("0050569A1B2C1EDF8E9A4C6D8F0A1B2C".into()),
            kind: CrmResponseKind::OfferAccepted,
            occurred_at: utc("2026-01-15T09:41:27Z"),
            detail: Some("Абонент ответил «ДА» на SMS, тариф «Безлимит+» подключён".into()),
        }
    );
    // Neither MessageId nor CrmId: read as it is, answered Invalid per item by the hub.
    assert_eq!(
        (&m.responses[3].message_id, &m.responses[3].crm_id),
        (&None, &None)
    );
    assert_eq!(m.responses[3].kind, CrmResponseKind::OfferDeclined);

    let p = parse_sample("hub-responses-SubmitResponses-request-zeep.xml");
    let Body::SubmitResponses(m) = p.body else {
        panic!("{:?}", p.body)
    };
    assert_eq!(m.source_system, SourceSystem::CrmB2c);
    assert_eq!(
        m.responses[0].crm_id.as_deref(),
        Some("B2C-2026-0000418812")
    );
    assert_eq!(
        m.responses[0].kind.response_kind(),
        crate::ResponseKind::Clicked
    );

    let p = parse_sample("hub-responses-SubmitResponses-soap12-request.xml");
    assert_eq!(p.version, SoapVersion::V12);
    assert_eq!(
        p.security,
        Some(WsSecurity {
            username: "crm-esb".into(),
            password: "esb-callback-2026".into()
        })
    );
    let Body::SubmitResponses(m) = p.body else {
        panic!("{:?}", p.body)
    };
    assert_eq!(m.source_system, SourceSystem::Amdocs);
    assert_eq!(m.responses[0].message_id, None, "xsi:nil is absent");
    assert_eq!(m.responses[0].crm_id.as_deref(), Some("1-8F3K2LQ"));
    assert_eq!(
        m.responses[0].occurred_at,
        utc("2026-02-02T09:15:00Z"),
        "+03:00 to UTC"
    );
    assert_eq!(m.responses[1].detail, None);

    let p = parse_sample("hub-responses-SubmitResponses-response.xml");
    let Body::SubmitResponsesResponse(r) = p.body else {
        panic!("{:?}", p.body)
    };
    let outcomes: Vec<_> = r.results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            ResponseOutcome::Recorded,
            ResponseOutcome::Duplicate,
            ResponseOutcome::UnknownMessage,
            ResponseOutcome::Invalid
        ]
    );
    let p = parse_sample("hub-responses-SubmitResponses-soap12-response.xml");
    assert_eq!(p.version, SoapVersion::V12);
    assert!(matches!(p.body, Body::SubmitResponsesResponse(r) if r.results.len() == 2));

    for (name, version, code, retryable) in [
        (
            "hub-responses-SubmitResponses-fault.xml",
            SoapVersion::V11,
            FaultCode::Client,
            false,
        ),
        (
            "hub-responses-SubmitResponses-fault-server.xml",
            SoapVersion::V11,
            FaultCode::Server,
            true,
        ),
        (
            "hub-responses-SubmitResponses-soap12-fault.xml",
            SoapVersion::V12,
            FaultCode::Client,
            false,
        ),
        (
            "hub-responses-SubmitResponses-soap12-fault-receiver.xml",
            SoapVersion::V12,
            FaultCode::Server,
            true,
        ),
    ] {
        let p = parse_sample(name);
        assert_eq!(p.version, version, "{name}");
        let Body::Fault(f) = p.body else {
            panic!("{name}")
        };
        assert_eq!((f.code.clone(), f.retryable()), (code, retryable), "{name}");
    }
    let Body::Fault(f) = parse_sample("hub-responses-SubmitResponses-soap12-fault.xml").body else {
        panic!()
    };
    assert_eq!(
        f.reason, "DTDs and entity declarations are not accepted",
        "first Text"
    );
}

#[test]
fn every_sample_parses_and_the_invalid_ones_are_refused_for_the_right_reason() {
    let mut names: Vec<String> = std::fs::read_dir(samples_dir())
        .expect("wsdl/samples")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    names.sort();
    assert!(names.len() >= 20, "{names:?}");
    let mut rewritten: Vec<(SoapVersion, (String, String))> = Vec::new();
    for name in &names {
        let result = parse_envelope(&sample(name), Limits::default());
        match name.as_str() {
            "invalid-local-datetime.xml" => assert!(
                matches!(&result, Err(SoapError::Invalid(m)) if m.contains("OccurredAt")),
                "{name}: {result:?}"
            ),
            "invalid-missing-message-id.xml" => assert!(
                matches!(&result, Err(SoapError::Invalid(m)) if m.contains("Item 1: MessageId missing")),
                "{name}: {result:?}"
            ),
            "invalid-unknown-enum-value.xml" => assert!(
                matches!(&result, Err(SoapError::Invalid(m)) if m.contains("Kind")),
                "{name}: {result:?}"
            ),
            "invalid-unqualified-children.xml" => assert!(
                matches!(&result, Err(SoapError::Invalid(m)) if m.contains("MessageId")),
                "{name}: {result:?}"
            ),
            // Unknown elements are skipped: what a lenient reader accepts although the schema
            // does not.
            "invalid-unknown-element-in-item.xml" => {
                let Ok(Parsed {
                    body: Body::SendCommunications(m),
                    ..
                }) = &result
                else {
                    panic!("{name}: {result:?}")
                };
                assert_eq!(
                    m.items[0].text.as_deref(),
                    Some("Подключите тариф «Безлимит+» со скидкой 30%")
                );
            }
            // A client reads whatever fault it gets.
            "invalid-soap12-fault-without-reason.xml" => assert!(
                matches!(&result, Ok(Parsed { body: Body::Fault(f), .. }) if f.reason.is_empty() && f.code == FaultCode::Client),
                "{name}: {result:?}"
            ),
            n if n.starts_with("invalid-") => panic!("no expectation for {name}: {result:?}"),
            _ => {
                let p = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                // What we read, written again, is valid and reads back the same.
                let xml = envelope(p.version, &p.body, p.security.as_ref());
                assert_eq!(parse(&xml).as_ref(), Ok(&p), "{name}");
                rewritten.push((p.version, (name.clone(), xml)));
            }
        }
    }
    for version in versions() {
        let docs: Vec<_> = rewritten
            .iter()
            .filter(|(v, _)| *v == version)
            .map(|(_, d)| d.clone())
            .collect();
        assert!(!docs.is_empty());
        if let Err(e) = xmllint(version, &docs) {
            panic!("{version:?}: {e}");
        }
    }
}

// --- what real clients send ------------------------------------------------------------------------

#[test]
fn any_prefixes_and_default_namespaces_are_read_alike() {
    let canonical = Body::GetCommunicationStatus(GetCommunicationStatus {
        target_system: Some(TargetSystem::Amdocs),
        message_ids: vec![ID1.into()],
    });
    let variants = [
        // Prefixes everywhere.
        format!(
            r#"<S:Envelope xmlns:S="{SOAP11_NS}"><S:Body><e:GetCommunicationStatus xmlns:e="{ESB_NS}"><e:TargetSystem>AMDOCS</e:TargetSystem><e:MessageId>{ID1}</e:MessageId></e:GetCommunicationStatus></S:Body></S:Envelope>"#
        ),
        // Default namespace for the envelope, a prefix for the body.
        format!(
            r#"<Envelope xmlns="{SOAP11_NS}"><Header/><Body><x:GetCommunicationStatus xmlns:x="{ESB_NS}"><x:TargetSystem>AMDOCS</x:TargetSystem><x:MessageId>{ID1}</x:MessageId></x:GetCommunicationStatus></Body></Envelope>"#
        ),
        // Default namespace declared on the wrapper, re-declared on a child.
        format!(
            r#"<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body><GetCommunicationStatus xmlns="{ESB_NS}"><TargetSystem>AMDOCS</TargetSystem><MessageId xmlns="{ESB_NS}">{ID1}</MessageId></GetCommunicationStatus></soap:Body></soap:Envelope>"#
        ),
        // Namespace declared on Body; the same prefix re-bound inside.
        format!(
            r#"<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body xmlns:a="{SAP_NS}"><a:GetCommunicationStatus xmlns:a="{ESB_NS}"><a:TargetSystem>AMDOCS</a:TargetSystem><a:MessageId>{ID1}</a:MessageId></a:GetCommunicationStatus></soap:Body></soap:Envelope>"#
        ),
        // Single quotes, a BOM-less declaration, CRLF line ends.
        format!(
            "<?xml version='1.0' encoding='UTF-8'?>\r\n<soap:Envelope xmlns:soap='{SOAP11_NS}'>\r\n<soap:Body>\r\n<esb:GetCommunicationStatus xmlns:esb='{ESB_NS}'>\r\n<esb:TargetSystem>AMDOCS</esb:TargetSystem>\r\n<esb:MessageId>{ID1}</esb:MessageId>\r\n</esb:GetCommunicationStatus>\r\n</soap:Body>\r\n</soap:Envelope>\r\n"
        ),
    ];
    for xml in &variants {
        assert_eq!(body_of(xml), canonical, "{xml}");
    }
    // The right local name in the wrong namespace is someone else's element.
    let xml = env11(&format!(
        r#"<e:GetCommunicationStatus xmlns:e="{ESB_NS}"><e:TargetSystem>AMDOCS</e:TargetSystem><MessageId>{ID1}</MessageId><o:MessageId xmlns:o="urn:other">{ID1}</o:MessageId></e:GetCommunicationStatus>"#
    ));
    assert!(
        matches!(err_of(&xml), SoapError::Invalid(m) if m == "GetCommunicationStatus: no MessageId")
    );
}

#[test]
fn xsi_nil_means_absent_on_optional_elements_and_is_refused_on_required_ones() {
    let item = |inner: &str| {
        env11(&format!(
            r#"<s:SendCommunications xmlns:s="{SAP_NS}" xmlns:c="{COMMON_NS}" xmlns:i="{XSI_NS}"><s:BundleId>b</s:BundleId><s:Item><c:MessageId>{ID1}</c:MessageId><c:CampaignId>C</c:CampaignId>{inner}</s:Item></s:SendCommunications>"#
        ))
    };
    let xml = item(
        r#"<c:CustomerId>K</c:CustomerId><c:Recipient i:nil="true"/><c:Subject i:nil="1"></c:Subject><c:Text i:nil="true">ignored</c:Text><c:ValidFrom i:nil="true"/><c:OfferCode i:nil="false">O</c:OfferCode>"#,
    );
    let Body::SendCommunications(m) = body_of(&xml) else {
        panic!()
    };
    let mut expected = minimal_item(ID1);
    expected.campaign_id = "C".into();
    expected.customer_id = "K".into();
    expected.offer_code = Some("O".into());
    assert_eq!(m.items, vec![expected]);

    let xml = item(r#"<c:CustomerId i:nil="true"/>"#);
    assert_eq!(
        err_of(&xml),
        SoapError::Invalid("Item 1: CustomerId is nil".into())
    );
    // Empty optional elements are absent too; an empty required one is not a value.
    let xml = item(r#"<c:CustomerId>K</c:CustomerId><c:Subject/><c:ValidUntil></c:ValidUntil>"#);
    let Body::SendCommunications(m) = body_of(&xml) else {
        panic!()
    };
    assert_eq!(
        (m.items[0].subject.as_ref(), m.items[0].valid_until),
        (None, None)
    );
    assert_eq!(
        err_of(&item("<c:CustomerId>  </c:CustomerId>")),
        SoapError::Invalid("Item 1: CustomerId is empty".into())
    );
}

#[test]
fn whitespace_comments_and_cdata_inside_values() {
    let xml = env11(&format!(
        r#"
        <!-- a comment before the wrapper -->
        <h:SubmitResponses xmlns:h="{RESPONSES_NS}">
          <h:SourceSystem>
             SAP_CRM <!-- trailing comment -->
          </h:SourceSystem>
          <h:Response>
            <h:ResponseId> r<!-- split -->-1 </h:ResponseId>
            <h:MessageId><![CDATA[{ID1}]]></h:MessageId>
            <h:Kind>
              Delivered
            </h:Kind>
            <h:OccurredAt> 2026-01-15T09:41:27.5+01:00 </h:OccurredAt>
            <h:Detail><![CDATA[<b>bold</b> & raw]]> &amp; &lt;esc&gt; &#x41;&#66;&#x1F600;</h:Detail>
          </h:Response>
        </h:SubmitResponses>
        "#
    ));
    let Body::SubmitResponses(m) = body_of(&xml) else {
        panic!()
    };
    assert_eq!(m.source_system, SourceSystem::SapCrm);
    let r = &m.responses[0];
    assert_eq!(r.response_id, "r-1");
    assert_eq!(r.message_id.as_deref(), Some(ID1));
    assert_eq!(r.kind, CrmResponseKind::Delivered);
    assert_eq!(
        r.occurred_at,
        utc("2026-01-15T08:41:27.5Z"),
        "offset converted to UTC"
    );
    assert_eq!(
        r.detail.as_deref(),
        Some("<b>bold</b> & raw & <esc> AB😀"),
        "free text kept as sent"
    );
}

#[test]
fn unknown_optional_elements_are_skipped_with_their_subtree() {
    let xml = env11(&format!(
        r#"<s:SendCommunications xmlns:s="{SAP_NS}" xmlns:c="{COMMON_NS}" xmlns:x="urn:vendor:ext">
             <x:TraceId>t-1</x:TraceId>
             <s:Priority>high</s:Priority>
             <s:BundleId>b</s:BundleId>
             <s:Item>
               <c:MessageId>{ID1}</c:MessageId>
               <x:Extra><c:MessageId>not-this-one</c:MessageId><x:Deeper><x:Deepest a="1">v</x:Deepest></x:Deeper></x:Extra>
               <c:CampaignId>C</c:CampaignId>
               <c:Channel>sms</c:Channel>
               <c:CustomerId>K</c:CustomerId>
               <c:Attribute><c:Name>n</c:Name><x:Note>ignored</x:Note><c:Value>v</c:Value></c:Attribute>
             </s:Item>
             <x:Trailer/>
           </s:SendCommunications>"#
    ));
    let Body::SendCommunications(m) = body_of(&xml) else {
        panic!()
    };
    let mut expected = minimal_item(ID1);
    expected.campaign_id = "C".into();
    expected.customer_id = "K".into();
    expected.attributes = vec![Attribute {
        name: "n".into(),
        value: "v".into(),
    }];
    assert_eq!(m.items, vec![expected]);
    assert_eq!(m.bundle_id, "b");
}

#[test]
fn required_elements_enums_and_datetimes_are_checked_with_safe_messages() {
    let submit = |response: &str| {
        env11(&format!(
            r#"<SubmitResponses xmlns="{RESPONSES_NS}"><SourceSystem>AMDOCS</SourceSystem><Response>{response}</Response></SubmitResponses>"#
        ))
    };
    let cases = [
        (
            "<MessageId>m</MessageId><Kind>Read</Kind><OccurredAt>2026-01-01T10:00:00Z</OccurredAt>",
            "Response 1: ResponseId missing",
        ),
        (
            "<ResponseId>r</ResponseId><Kind>SECRET-VALUE</Kind><OccurredAt>2026-01-01T10:00:00Z</OccurredAt>",
            "Response 1: Kind has no valid value",
        ),
        (
            "<ResponseId>r</ResponseId><Kind>read</Kind><OccurredAt>2026-01-01T10:00:00Z</OccurredAt>",
            "Response 1: Kind has no valid value",
        ),
        (
            "<ResponseId>r</ResponseId><Kind>Read</Kind><OccurredAt>2026-01-01T10:00:00</OccurredAt>",
            "Response 1: OccurredAt is no dateTime with a zone",
        ),
        (
            "<ResponseId>r</ResponseId><Kind>Read</Kind><OccurredAt>2026-01-01 10:00:00Z</OccurredAt>",
            "Response 1: OccurredAt is no dateTime with a zone",
        ),
        (
            "<ResponseId>r</ResponseId><Kind>Read</Kind><OccurredAt>SECRET-VALUE</OccurredAt>",
            "Response 1: OccurredAt is no dateTime with a zone",
        ),
        (
            "<ResponseId>r</ResponseId><Kind>Read</Kind>",
            "Response 1: OccurredAt missing",
        ),
        (
            "<ResponseId>r</ResponseId><ResponseId>r2</ResponseId><Kind>Read</Kind><OccurredAt>2026-01-01T10:00:00Z</OccurredAt>",
            "Response 1: ResponseId repeated",
        ),
    ];
    for (response, message) in cases {
        let err = err_of(&submit(response));
        assert_eq!(err, SoapError::Invalid(message.into()), "{response}");
        assert!(!err.to_string().contains("SECRET"));
        assert_eq!(err.fault_code(), FaultCode::Client);
        assert_eq!(err.clm_fault().code, "INVALID");
        assert!(!err.clm_fault().retryable);
    }
    let xml = env11(&format!(
        r#"<SubmitResponses xmlns="{RESPONSES_NS}"><SourceSystem>SAP</SourceSystem></SubmitResponses>"#
    ));
    assert_eq!(
        err_of(&xml),
        SoapError::Invalid("SubmitResponses: SourceSystem has no valid value".into())
    );
    let xml = env11(&format!(
        r#"<SubmitResponses xmlns="{RESPONSES_NS}"><SourceSystem>SAP_CRM</SourceSystem></SubmitResponses>"#
    ));
    assert_eq!(
        err_of(&xml),
        SoapError::Invalid("SubmitResponses: no Response".into())
    );
    // The ESB's messages need their TargetSystem; SAP's have none.
    let xml = env11(&format!(
        r#"<e:GetCommunicationStatus xmlns:e="{ESB_NS}"><e:MessageId>{ID1}</e:MessageId></e:GetCommunicationStatus>"#
    ));
    assert_eq!(
        err_of(&xml),
        SoapError::Invalid("GetCommunicationStatus: TargetSystem missing".into())
    );
    // A response with neither id is read (the hub answers it Invalid per item).
    let Body::SubmitResponses(m) = body_of(&submit(
        "<ResponseId>r</ResponseId><Kind>Read</Kind><OccurredAt>2026-01-01T10:00:00Z</OccurredAt>",
    )) else {
        panic!()
    };
    assert_eq!(
        (&m.responses[0].message_id, &m.responses[0].crm_id),
        (&None, &None)
    );
}

// --- envelope level ----------------------------------------------------------------------------------

#[test]
fn versions_and_envelope_structure() {
    let body = format!(
        r#"<h:SubmitResponsesResponse xmlns:h="{RESPONSES_NS}"><h:Result><h:ResponseId>r</h:ResponseId><h:Outcome>Recorded</h:Outcome></h:Result></h:SubmitResponsesResponse>"#
    );
    let v12 = format!(
        r#"<env:Envelope xmlns:env="{SOAP12_NS}"><env:Body>{body}</env:Body></env:Envelope>"#
    );
    assert_eq!(parse(&v12).unwrap().version, SoapVersion::V12);
    assert_eq!(parse(&env11(&body)).unwrap().version, SoapVersion::V11);

    let unknown_ns =
        r#"<e:Envelope xmlns:e="http://example.com/soap/envelope/"><e:Body/></e:Envelope>"#;
    assert_eq!(err_of(unknown_ns), SoapError::VersionMismatch);
    assert_eq!(err_of(unknown_ns).fault_code(), FaultCode::VersionMismatch);
    assert_eq!(
        err_of("<Envelope><Body/></Envelope>"),
        SoapError::VersionMismatch
    );
    assert!(matches!(
        err_of(&format!(r#"<soap:Body xmlns:soap="{SOAP11_NS}"/>"#)),
        SoapError::NotAnEnvelope(_)
    ));
    assert!(matches!(
        err_of("<html><body/></html>"),
        SoapError::NotAnEnvelope(_)
    ));
    assert!(matches!(
        err_of(&format!(
            r#"<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Header/></soap:Envelope>"#
        )),
        SoapError::NotAnEnvelope("no Body")
    ));
    // A Body of the other version's namespace is no Body.
    assert!(matches!(
        err_of(&format!(
            r#"<soap:Envelope xmlns:soap="{SOAP11_NS}" xmlns:e="{SOAP12_NS}"><e:Body>{body}</e:Body></soap:Envelope>"#
        )),
        SoapError::NotAnEnvelope("no Body")
    ));
    assert_eq!(
        err_of(&env11("  <!-- nothing -->  ")),
        SoapError::Invalid("empty Body".into())
    );
    assert_eq!(
        err_of(&env11(&format!("{body}{body}"))),
        SoapError::Invalid("more than one element in Body".into())
    );
}

#[test]
fn unknown_operations_are_named_briefly() {
    let err = err_of(&env11(
        r#"<x:SendCommunications xmlns:x="urn:clm:sap-crm:campaign:v2"/>"#,
    ));
    assert_eq!(
        err,
        SoapError::UnknownOperation("{urn:clm:sap-crm:campaign:v2}SendCommunications".into())
    );
    assert_eq!(
        err_of(&env11("<SendCommunications/>")),
        SoapError::UnknownOperation("SendCommunications".into())
    );
    assert_eq!(
        err_of(&env11(&format!(
            r#"<h:SubmitResponses xmlns:h="{SAP_NS}"/>"#
        ))),
        SoapError::UnknownOperation(format!("{{{SAP_NS}}}SubmitResponses"))
    );
    // A SOAP 1.2 Fault inside a SOAP 1.1 envelope is nothing this codec knows.
    assert!(matches!(
        err_of(&env11(&format!(r#"<f:Fault xmlns:f="{SOAP12_NS}"/>"#))),
        SoapError::UnknownOperation(_)
    ));
    let long_ns = format!("urn:{}", "n".repeat(5000));
    let long_name = "L".repeat(5000);
    let err = err_of(&env11(&format!(r#"<{long_name} xmlns="{long_ns}"/>"#)));
    let text = err.to_string();
    assert!(text.len() < 300, "{} bytes", text.len());
}

#[test]
fn ws_security_and_must_understand_headers() {
    let env = |header: &str| {
        format!(
            r#"<soap:Envelope xmlns:soap="{SOAP11_NS}" xmlns:wsse="{WSSE_NS}"><soap:Header>{header}</soap:Header><soap:Body><h:SubmitResponsesResponse xmlns:h="{RESPONSES_NS}"><h:Result><h:ResponseId>r</h:ResponseId><h:Outcome>Recorded</h:Outcome></h:Result></h:SubmitResponsesResponse></soap:Body></soap:Envelope>"#
        )
    };
    // No Type: PasswordText by default; the Security block itself is understood.
    let p = parse(&env(
        r#"<wsse:Security soap:mustUnderstand="1"><wsse:UsernameToken><wsse:Username> u </wsse:Username><wsse:Password> p w </wsse:Password></wsse:UsernameToken></wsse:Security>
           <t:Trace xmlns:t="urn:trace" soap:mustUnderstand="1">x</t:Trace>
           <t:Info xmlns:t="urn:trace" soap:mustUnderstand="0"/>
           <t:Other xmlns:t="urn:trace" soap:mustUnderstand="1" soap:actor="urn:someone-else"/>
           <t:Next xmlns:t="urn:trace" soap:mustUnderstand="true" soap:actor="http://schemas.xmlsoap.org/soap/actor/next"/>
           <t:Plain xmlns:t="urn:trace" mustUnderstand="1"/>"#,
    ))
    .unwrap();
    assert_eq!(
        p.security,
        Some(WsSecurity {
            username: "u".into(),
            password: " p w ".into()
        })
    );
    assert_eq!(
        p.must_understand,
        vec![
            HeaderName {
                ns: Some("urn:trace".into()),
                local: "Trace".into()
            },
            HeaderName {
                ns: Some("urn:trace".into()),
                local: "Next".into()
            },
        ]
    );
    assert_eq!(p.must_understand[0].to_string(), "{urn:trace}Trace");
    assert!(
        !format!("{p:?}").contains(" p w "),
        "Debug redacts the password"
    );

    let err = err_of(&env(
        r#"<wsse:Security><wsse:UsernameToken><wsse:Username>u</wsse:Username><wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">x</wsse:Password></wsse:UsernameToken></wsse:Security>"#,
    ));
    assert!(matches!(err, SoapError::Invalid(m) if m.contains("PasswordText")));
    let err = err_of(&env(
        r#"<wsse:Security><wsse:UsernameToken><wsse:Username>u</wsse:Username></wsse:UsernameToken></wsse:Security>"#,
    ));
    assert!(matches!(err, SoapError::Invalid(m) if m.contains("Password missing")));
    // A Security block without a UsernameToken (e.g. only a Timestamp) carries no credentials.
    let p = parse(&env(
        "<wsse:Security><wsu:Timestamp xmlns:wsu=\"urn:x\"/></wsse:Security>",
    ))
    .unwrap();
    assert_eq!(p.security, None);

    // SOAP 1.2: role instead of actor.
    let xml = format!(
        r#"<env:Envelope xmlns:env="{SOAP12_NS}"><env:Header><a:A xmlns:a="urn:a" env:mustUnderstand="true"/><a:B xmlns:a="urn:a" env:mustUnderstand="true" env:role="http://www.w3.org/2003/05/soap-envelope/role/none"/><a:C xmlns:a="urn:a" env:mustUnderstand="1" env:role="http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver"/></env:Header><env:Body><h:SubmitResponsesResponse xmlns:h="{RESPONSES_NS}"><h:Result><h:ResponseId>r</h:ResponseId><h:Outcome>Recorded</h:Outcome></h:Result></h:SubmitResponsesResponse></env:Body></env:Envelope>"#
    );
    let locals: Vec<_> = parse(&xml)
        .unwrap()
        .must_understand
        .into_iter()
        .map(|h| h.local)
        .collect();
    assert_eq!(locals, ["A", "C"]);
}

// --- what attackers send -----------------------------------------------------------------------------

/// Makes a named pipe: opening it for reading blocks until someone writes, so a parser that
/// tried to fetch it would hang instead of returning.
fn fifo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    let status = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
    assert!(status.success());
    (dir, path)
}

/// Runs the parser on another thread and fails the test if it does not return in time.
fn parse_within(xml: String, limits: Limits, max: Duration) -> Result<Parsed, SoapError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(parse_envelope(xml.as_bytes(), limits));
    });
    rx.recv_timeout(max)
        .unwrap_or_else(|_| panic!("the parser did not return within {max:?}"))
}

#[test]
fn xxe_is_refused_and_the_file_never_read() {
    let (_dir, secret) = fifo();
    let uri = format!("file://{}", secret.display());
    let internal_subset = format!(
        r#"<?xml version="1.0"?>
<!DOCTYPE soap:Envelope [ <!ENTITY xxe SYSTEM "{uri}"> ]>
<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body><h:SubmitResponses xmlns:h="{RESPONSES_NS}"><h:SourceSystem>&xxe;</h:SourceSystem></h:SubmitResponses></soap:Body></soap:Envelope>"#
    );
    let external_dtd = format!(
        r#"<?xml version="1.0"?><!DOCTYPE soap:Envelope SYSTEM "{uri}"><soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body/></soap:Envelope>"#
    );
    let passwd = format!(
        r#"<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body><x>&xxe;</x></soap:Body></soap:Envelope>"#
    );
    let parameter_entity = format!(
        r#"<!DOCTYPE foo [<!ENTITY % p SYSTEM "{uri}"> %p;]><soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body/></soap:Envelope>"#
    );
    for xml in [internal_subset, external_dtd, passwd, parameter_entity] {
        let result = parse_within(xml.clone(), Limits::default(), Duration::from_secs(5));
        let err = result.expect_err(&xml);
        assert_eq!(err, SoapError::Forbidden("DTD (DOCTYPE)"), "{xml}");
        assert!(!err.to_string().contains("root:"));
        assert_eq!(err.fault_code(), FaultCode::Client);
    }
}

#[test]
fn billion_laughs_is_refused_fast() {
    let mut dtd = String::from(r#"<!ENTITY lol0 "lol">"#);
    for i in 1..=9 {
        let refs = format!("&lol{};", i - 1).repeat(10);
        dtd.push_str(&format!(r#"<!ENTITY lol{i} "{refs}">"#));
    }
    let xml = format!(
        r#"<?xml version="1.0"?><!DOCTYPE lolz [{dtd}]><soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body><lolz>&lol9;</lolz></soap:Body></soap:Envelope>"#
    );
    let started = Instant::now();
    let err = parse_within(xml, Limits::default(), Duration::from_secs(5)).unwrap_err();
    assert_eq!(err, SoapError::Forbidden("DTD (DOCTYPE)"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Without a DTD the references are just undeclared entities: refused, not looked up.
    for xml in [
        env11("<lolz>&lol9;</lolz>"),
        env11("<x>&nbsp;</x>"),
        env11(r#"<x a="&lol9;"/>"#),
        format!(
            r#"<soap:Envelope xmlns:soap="{SOAP11_NS}" a="x&amp;&ext;"><soap:Body/></soap:Envelope>"#
        ),
    ] {
        assert_eq!(
            err_of(&xml),
            SoapError::Forbidden("entity reference"),
            "{xml}"
        );
    }
    // The five predefined entities and character references are fine, also in attributes.
    let xml = format!(
        r#"<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Header><t:T xmlns:t="urn:t" soap:mustUnderstand="&#49;" soap:actor="&quot;&amp;&lt;&gt;&apos;"/></soap:Header><soap:Body><h:SubmitResponsesResponse xmlns:h="{RESPONSES_NS}"><h:Result><h:ResponseId>&#x72;&amp;&lt;&gt;&apos;&quot;</h:ResponseId><h:Outcome>Recorded</h:Outcome></h:Result></h:SubmitResponsesResponse></soap:Body></soap:Envelope>"#
    );
    let p = parse(&xml).unwrap();
    assert!(p.must_understand.is_empty(), "actor is someone else");
    let Body::SubmitResponsesResponse(r) = p.body else {
        panic!()
    };
    assert_eq!(r.results[0].response_id, "r&<>'\"");
}

#[test]
fn processing_instructions_are_refused() {
    let xml = format!(
        r#"<?xml version="1.0"?><?xml-stylesheet href="x.xsl"?><soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body/></soap:Envelope>"#
    );
    assert_eq!(err_of(&xml), SoapError::Forbidden("processing instruction"));
    assert_eq!(
        err_of(&env11("<?php system('id'); ?>")),
        SoapError::Forbidden("processing instruction")
    );
}

#[test]
fn oversized_envelopes_are_refused_before_parsing() {
    let big = envelope(SoapVersion::V11, &send(None), None);
    let limits = Limits {
        max_bytes: big.len() - 1,
        ..Limits::default()
    };
    assert_eq!(
        parse_envelope(big.as_bytes(), limits),
        Err(SoapError::TooLarge {
            max: big.len() - 1,
            unit: "bytes"
        })
    );
    let limits = Limits {
        max_bytes: big.len(),
        ..Limits::default()
    };
    assert!(parse_envelope(big.as_bytes(), limits).is_ok());

    // Over the default 8 MiB, even if it is not XML at all.
    let huge = vec![b'<'; Limits::DEFAULT.max_bytes + 1];
    assert_eq!(
        parse_envelope(&huge, Limits::default()),
        Err(SoapError::TooLarge {
            max: Limits::DEFAULT.max_bytes,
            unit: "bytes"
        })
    );
}

#[test]
fn dense_documents_are_refused_before_they_fill_the_memory() {
    // 8 MiB of `<a/>` would be two million elements.
    let filler = "<a/>".repeat((Limits::DEFAULT.max_bytes - 200) / 4);
    let xml = env11(&format!("<w>{filler}</w>"));
    assert!(xml.len() <= Limits::DEFAULT.max_bytes);
    let started = Instant::now();
    assert_eq!(
        parse_within(xml, Limits::default(), Duration::from_secs(10)),
        Err(SoapError::TooLarge {
            max: Limits::DEFAULT.max_nodes,
            unit: "elements and attributes"
        })
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Attributes count too.
    let attrs: String = (0..200).map(|i| format!(" a{i}=\"\"")).collect();
    let xml = env11(&format!("<w{attrs}/>"));
    let limits = Limits {
        max_nodes: 100,
        ..Limits::default()
    };
    assert!(matches!(
        parse_envelope(xml.as_bytes(), limits),
        Err(SoapError::TooLarge { max: 100, .. })
    ));
    // A full bundle with every field stays well within the default.
    let msg = SendCommunications {
        target_system: None,
        bundle_id: "b".into(),
        items: vec![full_item(); MAX_BUNDLE],
    };
    let xml = envelope(SoapVersion::V11, &msg, Some(&creds()));
    assert!(parse(&xml).is_ok());
}

#[test]
fn deep_nesting_is_refused() {
    let depth = 10_000;
    let xml = env11(&format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth)));
    let limits = Limits {
        max_bytes: 1 << 20,
        max_depth: 32,
        ..Limits::default()
    };
    let started = Instant::now();
    assert_eq!(
        parse_within(xml, limits, Duration::from_secs(5)),
        Err(SoapError::TooDeep { max: 32 })
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // Empty elements count too.
    let xml = env11(&format!("{}<a/>{}", "<a>".repeat(30), "</a>".repeat(30)));
    assert_eq!(err_of(&xml), SoapError::TooDeep { max: 32 });
    // A real message stays far below the default.
    let xml = envelope(
        SoapVersion::V12,
        &send(Some(TargetSystem::Amdocs)),
        Some(&creds()),
    );
    let tight = Limits {
        max_depth: 7,
        ..Limits::default()
    };
    assert!(parse_envelope(xml.as_bytes(), tight).is_ok());
}

#[test]
fn not_xml_is_refused() {
    let cases: [&[u8]; 14] = [
        b"",
        b"   ",
        b"hello",
        b"{\"json\": true}",
        b"<a><b></a>",
        b"<a>",
        b"<a></a><b></b>",
        b"<a></a>trailing",
        b"\xff\xfe\xfa",
        b"<a>\xc3\x28</a>",
        b"<a>&#0;</a>",
        b"<a>&#1;</a>",
        b"<a>&amp</a>",
        b"<p:a></p:a>",
    ];
    for bytes in cases {
        let result = parse_envelope(bytes, Limits::default());
        assert!(
            matches!(result, Err(SoapError::NotXml(_))),
            "{:?}: {result:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let err = parse_envelope(b"<a><b></a>", Limits::default()).unwrap_err();
    assert_eq!(err.clm_code(), "NOT_XML");
    let xml = r#"<?xml version="1.0" encoding="ISO-8859-1"?><a/>"#;
    assert_eq!(
        err_of(xml),
        SoapError::NotXml("unsupported encoding".into())
    );
}

#[test]
fn utf8_bom_and_utf16_are_read() {
    let xml = envelope(SoapVersion::V11, &send(None), None);
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend_from_slice(xml.as_bytes());
    assert!(parse_envelope(&bom, Limits::default()).is_ok());
    for be in [false, true] {
        let mut bytes = if be {
            vec![0xFE, 0xFF]
        } else {
            vec![0xFF, 0xFE]
        };
        for unit in xml.encode_utf16() {
            bytes.extend_from_slice(&if be {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            });
        }
        assert_eq!(
            parse_envelope(&bytes, Limits::default()).map(|p| p.body),
            Ok(Body::SendCommunications(send(None)))
        );
    }
}

// --- faults as a client reads them ---------------------------------------------------------------------

#[test]
fn faults_from_other_servers_are_classified() {
    let fault11 = |code: &str, extra: &str| {
        env11(&format!(
            r#"<soap:Fault {extra}><faultcode>{code}</faultcode><faultstring> why </faultstring></soap:Fault>"#
        ))
    };
    let code_of = |xml: &str| match body_of(xml) {
        Body::Fault(f) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(code_of(&fault11("soap:Client", "")).code, FaultCode::Client);
    assert_eq!(code_of(&fault11("soap:Client", "")).reason, "why");
    assert_eq!(code_of(&fault11("soap:Server", "")).code, FaultCode::Server);
    assert_eq!(
        code_of(&fault11("Client", "")).code,
        FaultCode::Client,
        "unprefixed"
    );
    assert_eq!(
        code_of(&fault11("soap:Client.Authentication", "")).code,
        FaultCode::Client
    );
    assert_eq!(
        code_of(&fault11("soap:VersionMismatch", "")).code,
        FaultCode::VersionMismatch
    );
    assert_eq!(
        code_of(&fault11("soap:MustUnderstand", "")).code,
        FaultCode::MustUnderstand
    );
    let other = code_of(&fault11("x:Busy", r#"xmlns:x="urn:vendor""#));
    assert_eq!(other.code, FaultCode::Other("{urn:vendor}Busy".into()));
    assert!(!other.retryable());
    // A vendor code whose local name looks like a SOAP one is still the vendor's.
    let other = code_of(&fault11("x:Server", r#"xmlns:x="urn:vendor""#));
    assert_eq!(other.code, FaultCode::Other("{urn:vendor}Server".into()));
    // Retryable: the ClmFault detail decides; without one a Server fault is retryable.
    assert!(code_of(&fault11("soap:Server", "")).retryable());
    assert!(!code_of(&fault11("soap:Client", "")).retryable());
    let detail = |retryable: &str| {
        env11(&format!(
            r#"<soap:Fault><faultcode>soap:Server</faultcode><faultstring>x</faultstring><detail><c:ClmFault xmlns:c="{COMMON_NS}"><c:Code>X</c:Code><c:Text>t</c:Text><c:Retryable>{retryable}</c:Retryable></c:ClmFault></detail></soap:Fault>"#
        ))
    };
    assert!(!code_of(&detail("false")).retryable());
    assert!(code_of(&detail("1")).retryable());
    // An unreadable detail is no detail.
    assert_eq!(code_of(&detail("maybe")).detail, None);

    let fault12 = format!(
        r#"<e:Envelope xmlns:e="{SOAP12_NS}"><e:Body><e:Fault><e:Code><e:Value>e:Sender</e:Value><e:Subcode><e:Value xmlns:v="urn:vendor">v:Quota</e:Value></e:Subcode></e:Code><e:Reason><e:Text xml:lang="de">Kontingent</e:Text><e:Text xml:lang="en">quota</e:Text></e:Reason><e:Node>urn:n</e:Node><e:Detail><c:ClmFault xmlns:c="{COMMON_NS}"><c:Code>QUOTA</c:Code><c:Text>t</c:Text><c:Retryable>true</c:Retryable></c:ClmFault></e:Detail></e:Fault></e:Body></e:Envelope>"#
    );
    let p = parse(&fault12).unwrap();
    assert_eq!(p.version, SoapVersion::V12);
    assert_eq!(
        p.body,
        Body::Fault(Fault {
            code: FaultCode::Client,
            subcode: Some("{urn:vendor}Quota".into()),
            reason: "Kontingent".into(),
            detail: Some(ClmFault {
                code: "QUOTA".into(),
                text: "t".into(),
                retryable: true
            }),
        })
    );
}

#[test]
fn version_mismatch_and_must_understand_faults() {
    let xml = version_mismatch_envelope(SoapVersion::V11, &[SoapVersion::V11, SoapVersion::V12]);
    let p = parse(&xml).unwrap();
    assert_eq!(p.version, SoapVersion::V11);
    assert!(matches!(p.body, Body::Fault(f) if f.code == FaultCode::VersionMismatch));
    assert!(xml.contains(&format!(
        r#"<up:SupportedEnvelope qname="e:Envelope" xmlns:e="{SOAP12_NS}"/>"#
    )));
    let xml = version_mismatch_envelope(SoapVersion::V12, &[SoapVersion::V12]);
    assert!(
        matches!(parse(&xml).unwrap().body, Body::Fault(f) if f.code == FaultCode::VersionMismatch)
    );
    assert!(xml.contains("<soap:Value>soap:VersionMismatch</soap:Value>"));

    let names = [HeaderName {
        ns: Some("urn:t\"x".into()),
        local: "Trace".into(),
    }];
    let xml = must_understand_envelope(SoapVersion::V12, &names);
    assert!(
        xml.contains(r#"<soap:NotUnderstood qname="h:Trace" xmlns:h="urn:t&quot;x"/>"#),
        "{xml}"
    );
    assert!(
        matches!(parse(&xml).unwrap().body, Body::Fault(f) if f.code == FaultCode::MustUnderstand)
    );
    let xml = must_understand_envelope(SoapVersion::V11, &names);
    assert!(!xml.contains("NotUnderstood"));
    assert!(xml.contains("<faultcode>soap:MustUnderstand</faultcode>"));
}

#[test]
fn soap_version_http_details() {
    assert_eq!(
        SoapVersion::V11.content_type(Some(SAP_SEND_ACTION)),
        "text/xml; charset=utf-8"
    );
    assert_eq!(
        SoapVersion::V11
            .soap_action_header(SAP_SEND_ACTION)
            .as_deref(),
        Some("\"urn:clm:sap-crm:campaign:v1#SendCommunications\"")
    );
    assert_eq!(
        SoapVersion::V12.content_type(Some(SUBMIT_RESPONSES_ACTION)),
        "application/soap+xml; charset=utf-8; action=\"urn:clm:hub:responses:v1#SubmitResponses\""
    );
    assert_eq!(SoapVersion::V12.soap_action_header(ESB_SEND_ACTION), None);
    assert_eq!(
        SoapVersion::from_content_type("Text/XML;charset=UTF-8"),
        Some(SoapVersion::V11)
    );
    assert_eq!(
        SoapVersion::from_content_type("application/soap+xml; action=\"x\""),
        Some(SoapVersion::V12)
    );
    assert_eq!(SoapVersion::from_content_type("application/json"), None);
    assert_eq!(SoapVersion::V11.fault_http_status(&FaultCode::Client), 500);
    assert_eq!(SoapVersion::V12.fault_http_status(&FaultCode::Client), 400);
    assert_eq!(SoapVersion::V12.fault_http_status(&FaultCode::Server), 500);
    assert_eq!(
        SoapVersion::V12.fault_http_status(&FaultCode::VersionMismatch),
        500
    );
    assert_eq!(SoapVersion::from_ns(SOAP12_NS), Some(SoapVersion::V12));

    // soapActions of the bodies.
    assert_eq!(
        Body::SendCommunications(send(None)).soap_action(),
        Some(SAP_SEND_ACTION)
    );
    assert_eq!(
        Body::GetCommunicationStatus(status(Some(TargetSystem::CrmB2c))).soap_action(),
        Some(ESB_STATUS_ACTION)
    );
    assert_eq!(
        Body::SubmitResponses(submit()).soap_action(),
        Some(SUBMIT_RESPONSES_ACTION)
    );
    assert_eq!(
        Body::SubmitResponsesResponse(submit_response()).soap_action(),
        None
    );
}

// --- memory bounded by the input, callers before the body ---------------------------------------------

#[test]
fn namespace_uris_are_shared_not_copied_per_name() {
    use std::rc::Rc;
    let long = format!("urn:x:{}", "a".repeat(64 * 1024));
    let children = "<a p:b=\"\">p:q</a>".repeat(100);
    let xml = format!(r#"<x xmlns="{long}" xmlns:p="{long}"><y>{children}</y></x>"#);
    let root = super::xml::parse(xml.as_bytes(), Limits::default()).unwrap();
    let default = root.ns.clone().unwrap();
    assert_eq!(&*default, long);
    let kids = &root.children[0].children;
    assert_eq!(kids.len(), 100);
    let prefixed = kids[0].attrs[0].ns.clone().unwrap();
    assert_eq!(&*prefixed, long);
    for a in kids {
        assert!(Rc::ptr_eq(a.ns.as_ref().unwrap(), &default), "element");
        assert!(
            Rc::ptr_eq(a.attrs[0].ns.as_ref().unwrap(), &prefixed),
            "attribute"
        );
        assert!(
            Rc::ptr_eq(a.text_ns.as_ref().unwrap(), &prefixed),
            "QName text"
        );
    }
}

#[test]
fn namespace_scopes_resolve_as_declared() {
    let root = super::xml::parse(
        br#"<r xmlns="urn:d" xmlns:p="urn:p"><a xml:lang="de" p:x="1" y="2"><b xmlns="" xmlns:p="urn:q"><p:c/>p:v</b><c/></a><p:d/></r>"#,
        Limits::default(),
    )
    .unwrap();
    let a = &root.children[0];
    assert_eq!(a.ns.as_deref(), Some("urn:d"));
    assert_eq!(
        a.attr(Some("http://www.w3.org/XML/1998/namespace"), "lang"),
        Some("de")
    );
    assert_eq!(a.attr(Some("urn:p"), "x"), Some("1"));
    assert_eq!(a.attr(None, "y"), Some("2"));
    let b = &a.children[0];
    assert_eq!(b.ns, None, "xmlns=\"\" undeclares the default namespace");
    assert_eq!(
        b.children[0].ns.as_deref(),
        Some("urn:q"),
        "redeclared prefix"
    );
    assert_eq!(
        b.text_ns.as_deref(),
        None,
        "a QName text only without children"
    );
    assert_eq!(
        a.children[1].ns.as_deref(),
        Some("urn:d"),
        "scope ends with b"
    );
    assert_eq!(
        root.children[1].ns.as_deref(),
        Some("urn:p"),
        "scope ends with b"
    );
    // An undeclared prefix, a prefix undeclared again, a prefix out of scope.
    for xml in [
        "<p:a/>",
        r#"<a xmlns:p="urn:p"><b xmlns:p=""><p:c/></b></a>"#,
        r#"<a><b xmlns:p="urn:p"/><p:c/></a>"#,
        r#"<a xmlns:p="urn:p"><b xmlns:p=""/><c x:y="" /></a>"#,
    ] {
        assert_eq!(
            super::xml::parse(xml.as_bytes(), Limits::default()),
            Err(SoapError::NotXml("undeclared namespace prefix".into())),
            "{xml}"
        );
    }
}

#[test]
fn the_prelude_reads_the_callers_token_as_the_envelope_does_without_the_body() {
    let token = |user: &str| {
        format!(
            r#"<wsse:Security xmlns:wsse="{WSSE_NS}"><wsse:UsernameToken><wsse:Username> {user} </wsse:Username><wsse:Password>p w</wsse:Password></wsse:UsernameToken></wsse:Security>"#
        )
    };
    let env = |header: &str, body: &str| {
        format!(
            r#"<s:Envelope xmlns:s="{SOAP12_NS}"><s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#
        )
    };
    let bundle = envelope(SoapVersion::V12, &submit(), Some(&creds()));
    let p = parse_prelude(bundle.as_bytes(), Limits::default()).unwrap();
    assert_eq!(p.version, SoapVersion::V12);
    assert_eq!(p.security, Some(creds()));
    assert_eq!(p.security, parse(&bundle).unwrap().security);
    // The first Security block with a token; nothing after the Body's start tag is read.
    let xml = env(
        &format!(
            r#"<wsse:Security xmlns:wsse="{WSSE_NS}"/>{}{}"#,
            token("u"),
            token("v")
        ),
        "<broken>&undefined;<<<",
    );
    let p = parse_prelude(xml.as_bytes(), Limits::default()).unwrap();
    assert_eq!(
        p.security,
        Some(WsSecurity {
            username: "u".into(),
            password: "p w".into()
        })
    );
    let no_header = format!(r#"<Envelope xmlns="{SOAP11_NS}"><Body><x:y xmlns:x="urn:"/></Body>"#);
    let p = parse_prelude(no_header.as_bytes(), Limits::default()).unwrap();
    assert_eq!((p.version, p.security), (SoapVersion::V11, None));
    // The attack of issue 10 in the Body costs nothing.
    let attack = env(
        "",
        &format!(
            r#"<x xmlns="urn:{}">{}</x>"#,
            "a".repeat(256 * 1024),
            "<a/>".repeat(4000)
        ),
    );
    let started = Instant::now();
    assert_eq!(
        parse_prelude(attack.as_bytes(), Limits::default()).map(|p| p.security),
        Some(None)
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // Whatever the prelude cannot tell, the whole envelope answers.
    for xml in [
        "not xml".to_owned(),
        env("<broken", ""),
        env(&format!("<x:a xmlns:x='urn:'>{}", token("u")), ""),
        format!(r#"<s:Envelope xmlns:s="{SOAP11_NS}"><s:Header/></s:Envelope>"#),
        r#"<s:Envelope xmlns:s="urn:other"><s:Body/></s:Envelope>"#.to_owned(),
        format!(r#"<s:Nope xmlns:s="{SOAP11_NS}"><s:Body/></s:Nope>"#),
        env(
            &format!(
                r#"<wsse:Security xmlns:wsse="{WSSE_NS}"><wsse:UsernameToken><wsse:Username>u</wsse:Username></wsse:UsernameToken></wsse:Security>"#
            ),
            "",
        ),
        format!("<!DOCTYPE x []>{}", env(&token("u"), "")),
    ] {
        assert_eq!(
            parse_prelude(xml.as_bytes(), Limits::default()),
            None,
            "{xml}"
        );
    }
    // A Body in another namespace is no Body: the header goes on.
    let xml = format!(
        r#"<s:Envelope xmlns:s="{SOAP11_NS}"><o:Body xmlns:o="{SOAP12_NS}"/><s:Header>{}</s:Header><s:Body/></s:Envelope>"#,
        token("u")
    );
    assert_eq!(
        parse_prelude(xml.as_bytes(), Limits::default())
            .and_then(|p| p.security)
            .map(|s| s.username),
        Some("u".into())
    );
}
