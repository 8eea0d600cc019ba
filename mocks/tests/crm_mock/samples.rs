//! The request samples of `wsdl/samples/`, sent as they are, get the answers their response
//! samples describe.

use clm_contracts::soap::codec::SoapVersion;
use clm_contracts::soap::{
    CrmService, ESB_SEND_ACTION, ESB_STATUS_ACTION, ItemState, ItemStatusCode, SAP_SEND_ACTION,
    SAP_STATUS_ACTION, TargetSystem,
};
use clm_mocks::{CrmFaults, CrmKind, CrmMockConfig};

use crate::harness::{bundle, client, item, post_xml, send, start_with, wsdl_file, xmllint};

fn sample(name: &str) -> String {
    std::fs::read_to_string(wsdl_file(&format!("samples/{name}"))).unwrap()
}

#[tokio::test]
async fn sap_samples_get_correct_answers() {
    // The sample carries a UsernameToken CLM_HUB / s3cr3t-Pa55; the third item's business
    // partner is unknown to SAP (the response sample rejects it).
    let mock = start_with(
        CrmKind::SapCrm,
        CrmMockConfig {
            auth: Some(("CLM_HUB".into(), "s3cr3t-Pa55".into())),
            faults: CrmFaults {
                reject_customers: vec!["7705550101".into()],
                ..CrmFaults::default()
            },
            ..CrmMockConfig::default()
        },
    )
    .await;
    let reply = post_xml(
        client(),
        &mock.url(),
        SoapVersion::V11,
        Some(SAP_SEND_ACTION),
        sample("sap-crm-campaign-SendCommunications-request.xml"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.assert_version(SoapVersion::V11);
    xmllint(&reply.text, SoapVersion::V11);
    let answer = reply.send_response(CrmService::SapCrm);
    assert_eq!(answer.bundle_id, "b-20260115-0930-0001");
    let results: Vec<_> = answer
        .results
        .iter()
        .map(|r| (r.message_id.as_str(), r.status))
        .collect();
    assert_eq!(
        results,
        [
            (
                "6f1c2a8e-3b4d-4c5e-9f60-7a8b9c0d1e2f",
                ItemStatusCode::Accepted
            ),
            (
                "0b7d9e21-5c3a-4f8b-8e1d-2a3b4c5d6e7f",
                ItemStatusCode::Accepted
            ),
            (
                "c4e5f6a7-b8c9-4d0e-a1f2-3b4c5d6e7f80",
                ItemStatusCode::Rejected
            ),
        ]
    );
    let recorded = &mock.received_bundles()[0];
    assert_eq!(
        recorded.items[0].subject.as_deref(),
        Some("Безлимит+ со скидкой 30%")
    );
    assert_eq!(recorded.items[0].attributes.len(), 2);
    assert_eq!(recorded.items[2].recipient, None);

    // The status sample (.NET WCF style) asks for the accepted, the rejected and one never sent
    // — but carries no credentials, which this mock requires.
    let status_request = sample("sap-crm-campaign-GetCommunicationStatus-request.xml");
    let refused = post_xml(
        client(),
        &mock.url(),
        SoapVersion::V11,
        Some(SAP_STATUS_ACTION),
        status_request.clone(),
    )
    .await;
    assert_eq!(refused.status, 500);
    assert_eq!(refused.fault().detail.unwrap().code, "NOT_AUTHORIZED");
    let reply = client()
        .post(mock.url())
        .basic_auth("CLM_HUB", Some("s3cr3t-Pa55"))
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", format!("\"{SAP_STATUS_ACTION}\""))
        .body(status_request)
        .send()
        .await
        .unwrap();
    let reply = crate::harness::reply(reply).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    xmllint(&reply.text, SoapVersion::V11);
    let statuses = reply.statuses(CrmService::SapCrm);
    let states: Vec<_> = statuses.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [ItemState::Accepted, ItemState::Rejected, ItemState::Unknown],
        "as in sap-crm-campaign-GetCommunicationStatus-response.xml"
    );
    assert_eq!(statuses[0].crm_id, answer.results[0].crm_id);
}

#[tokio::test]
async fn esb_samples_get_correct_answers() {
    // The Amdocs sample: the second subscriber already has the pack (the response sample
    // rejects it).
    let mock = start_with(
        CrmKind::Esb,
        CrmMockConfig {
            faults: CrmFaults {
                reject_customers: vec!["AMD-100200417".into()],
                ..CrmFaults::default()
            },
            ..CrmMockConfig::default()
        },
    )
    .await;
    let reply = post_xml(
        client(),
        &mock.url(),
        SoapVersion::V11,
        Some(ESB_SEND_ACTION),
        sample("crm-esb-SendCommunications-request.xml"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    xmllint(&reply.text, SoapVersion::V11);
    let answer = reply.send_response(CrmService::Esb);
    assert_eq!(answer.bundle_id, "7c1e0a52-1f3b-4d8e-9a6c-5b4d3c2e1f00");
    assert_eq!(answer.results[0].status, ItemStatusCode::Accepted);
    assert!(
        answer.results[0]
            .crm_id
            .as_deref()
            .unwrap()
            .starts_with("AMD-")
    );
    assert_eq!(answer.results[1].status, ItemStatusCode::Rejected);
    assert_eq!(
        answer.results[1].error_code.as_deref(),
        Some("AMD-OFR-0117")
    );
    let recorded = &mock.received_bundles()[0];
    assert_eq!(recorded.target_system.as_deref(), Some("AMDOCS"));
    assert_eq!(recorded.items[0].subject, None, "xsi:nil is absent");

    // The CRM B2C status sample asks for one item CRM B2C has and one it never got.
    let b2c = bundle(
        Some(TargetSystem::CrmB2c),
        vec![item("a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", "B2C-1")],
    );
    let sent = send(&mock.url(), SoapVersion::V11, &b2c)
        .await
        .send_response(CrmService::Esb);
    let reply = post_xml(
        client(),
        &mock.url(),
        SoapVersion::V11,
        Some(ESB_STATUS_ACTION),
        sample("crm-esb-GetCommunicationStatus-request.xml"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    xmllint(&reply.text, SoapVersion::V11);
    let statuses = reply.statuses(CrmService::Esb);
    assert_eq!(
        statuses
            .iter()
            .map(|s| (s.message_id.as_str(), s.state))
            .collect::<Vec<_>>(),
        [
            ("a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", ItemState::Accepted),
            ("b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e", ItemState::Unknown),
        ],
        "as in crm-esb-GetCommunicationStatus-response.xml"
    );
    assert_eq!(statuses[0].crm_id, sent.results[0].crm_id);
    assert!(statuses[0].crm_id.as_deref().unwrap().starts_with("B2C-"));
}
