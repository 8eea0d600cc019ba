//! Bundles answered per item (`Accepted`, `Duplicate`, `Rejected`) and status queries, in both
//! SOAP versions; requests for the wrong service or operation; every answer checked against the
//! XSD.

use clm_contracts::soap::codec::{Body, FaultCode, SoapVersion};
use clm_contracts::soap::{
    CrmService, ItemState, ItemStatusCode, SAP_NS, SOAP11_NS, SubmitResponses, TargetSystem,
};
use clm_mocks::{CrmFaults, CrmKind, CrmMockConfig};

use crate::harness::{
    BOTH, bundle, call, client, id, item, post_xml, query, send, start, start_with, status_query,
    xmllint,
};

#[tokio::test]
async fn sap_answers_every_item_in_order_in_both_versions() {
    let mock = start_with(
        CrmKind::SapCrm,
        CrmMockConfig {
            faults: CrmFaults {
                reject_customers: vec!["7705550101".into()],
                ..CrmFaults::default()
            },
            ..CrmMockConfig::default()
        },
    )
    .await;
    for version in BOTH {
        let (a, b, c) = (id(), id(), id());
        let first = bundle(
            None,
            vec![
                item(&a, "7701234567"),
                item(&b, "7705550101"),
                item(&c, "7709876543"),
                // The same id twice in one bundle: the CRM has it after the first.
                item(&a, "7701234567"),
            ],
        );
        let reply = send(&mock.url(), version, &first).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.assert_version(version);
        assert_eq!(
            reply.content_length,
            Some(reply.text.len() as u64),
            "a Content-Length, not chunked"
        );
        xmllint(&reply.text, version);
        let answer = reply.send_response(CrmService::SapCrm);
        assert_eq!(answer.bundle_id, first.bundle_id);
        let ids: Vec<_> = answer
            .results
            .iter()
            .map(|r| r.message_id.as_str())
            .collect();
        assert_eq!(ids, [&a, &b, &c, &a], "one result per item, same order");
        let statuses: Vec<_> = answer.results.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [
                ItemStatusCode::Accepted,
                ItemStatusCode::Rejected,
                ItemStatusCode::Accepted,
                ItemStatusCode::Duplicate
            ]
        );
        let crm_a = answer.results[0].crm_id.clone().unwrap();
        assert!(crm_a.starts_with("SAP-"), "{crm_a}");
        assert_eq!(answer.results[3].crm_id.as_deref(), Some(crm_a.as_str()));
        assert_ne!(answer.results[2].crm_id.as_deref(), Some(crm_a.as_str()));
        let rejected = &answer.results[1];
        assert_eq!(rejected.crm_id, None);
        assert_eq!(rejected.error_code.as_deref(), Some("CRM_MKT_042"));
        let text = rejected.error_text.as_deref().unwrap();
        assert!(
            !text.contains("7705550101"),
            "no customer id echoed: {text}"
        );

        // A resend after a lost answer: Duplicate with the same CRM id, counted again.
        let resend = bundle(None, vec![item(&a, "7701234567"), item(&c, "7709876543")]);
        let again = send(&mock.url(), version, &resend)
            .await
            .send_response(CrmService::SapCrm);
        assert!(
            again
                .results
                .iter()
                .all(|r| r.status == ItemStatusCode::Duplicate)
        );
        assert_eq!(again.results[0].crm_id.as_deref(), Some(crm_a.as_str()));
        assert_eq!(mock.accepted_count(&a), 3);
        assert_eq!(mock.accepted_count(a.to_uppercase()), 3, "either case");
        assert_eq!(mock.accepted_count(&c), 2);
        assert_eq!(mock.accepted_count(&b), 0);
        assert_eq!(mock.accepted_count(id()), 0);
    }

    let bundles = mock.received_bundles();
    assert_eq!(bundles.len(), 4);
    assert_eq!(
        bundles
            .iter()
            .map(|b| b.version.as_str())
            .collect::<Vec<_>>(),
        ["1.1", "1.1", "1.2", "1.2"]
    );
    let recorded = &bundles[0];
    assert_eq!(recorded.target_system, None);
    assert!(!recorded.held);
    assert_eq!(recorded.items.len(), 4);
    let first = &recorded.items[0];
    assert_eq!(first.status, "Accepted");
    assert_eq!(first.customer_id, "7701234567");
    assert_eq!(
        first.text.as_deref(),
        Some("Подключите тариф «Безлимит+» & <скидка> до 31 января")
    );
    assert_eq!(
        first.attributes,
        [("region".to_owned(), "Москва".to_owned())]
    );
    assert_eq!(
        first.valid_until,
        Some("2026-01-31T20:59:59Z".parse().unwrap())
    );
    assert_eq!(recorded.items[1].error_code.as_deref(), Some("CRM_MKT_042"));

    let stats = mock.stats();
    assert_eq!(
        (
            stats.requests,
            stats.bundles,
            stats.items_received,
            stats.items_accepted,
            stats.items_duplicate,
            stats.items_rejected
        ),
        (4, 4, 12, 4, 6, 2)
    );
    assert_eq!(mock.items_accepted(), 4);
}

#[tokio::test]
async fn status_is_truthful_in_both_versions() {
    let mock = start_with(
        CrmKind::SapCrm,
        CrmMockConfig {
            faults: CrmFaults {
                reject_customers: vec!["REJECT".into()],
                ..CrmFaults::default()
            },
            ..CrmMockConfig::default()
        },
    )
    .await;
    let (accepted, rejected, never) = (id(), id(), id());
    let answer = send(
        &mock.url(),
        SoapVersion::V11,
        &bundle(None, vec![item(&accepted, "ok"), item(&rejected, "REJECT")]),
    )
    .await
    .send_response(CrmService::SapCrm);
    let crm_id = answer.results[0].crm_id.clone();
    for version in BOTH {
        let reply = query(
            &mock.url(),
            version,
            &status_query(None, &[&never, &rejected, &accepted.to_uppercase()]),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.assert_version(version);
        xmllint(&reply.text, version);
        let statuses = reply.statuses(CrmService::SapCrm);
        let states: Vec<_> = statuses.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [ItemState::Unknown, ItemState::Rejected, ItemState::Accepted]
        );
        assert_eq!(statuses[0].crm_id, None);
        assert!(statuses[1].error_text.is_some());
        assert_eq!(statuses[2].crm_id, crm_id);
        assert_eq!(
            statuses[2].message_id,
            accepted.to_uppercase(),
            "answered as asked"
        );
    }
    assert_eq!(mock.stats().status_queries, 2);
    assert_eq!(mock.stats().bundles, 1, "queries record no bundle");
}

#[tokio::test]
async fn the_esb_keeps_one_crm_per_target_system() {
    let mock = start(CrmKind::Esb).await;
    let shared = id();
    for version in BOTH {
        for (target, prefix) in [
            (TargetSystem::Amdocs, "AMD-"),
            (TargetSystem::CrmB2c, "B2C-"),
        ] {
            let mine = id();
            let message = bundle(Some(target), vec![item(&shared, "c1"), item(&mine, "c2")]);
            let reply = send(&mock.url(), version, &message).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            reply.assert_version(version);
            xmllint(&reply.text, version);
            let answer = reply.send_response(CrmService::Esb);
            let expected_first = if version == SoapVersion::V11 {
                ItemStatusCode::Accepted
            } else {
                ItemStatusCode::Duplicate
            };
            assert_eq!(answer.results[0].status, expected_first, "{target}");
            assert_eq!(answer.results[1].status, ItemStatusCode::Accepted);
            for r in &answer.results {
                assert!(r.crm_id.as_deref().unwrap().starts_with(prefix), "{r:?}");
            }
            // The other target system never got `mine`.
            let other = match target {
                TargetSystem::Amdocs => TargetSystem::CrmB2c,
                TargetSystem::CrmB2c => TargetSystem::Amdocs,
            };
            if version == SoapVersion::V11 {
                let statuses = query(&mock.url(), version, &status_query(Some(other), &[&mine]))
                    .await
                    .statuses(CrmService::Esb);
                assert_eq!(statuses[0].state, ItemState::Unknown);
            }
            let statuses = query(&mock.url(), version, &status_query(Some(target), &[&mine]))
                .await
                .statuses(CrmService::Esb);
            assert_eq!(statuses[0].state, ItemState::Accepted);
        }
    }
    // Accepted by each target once, then a duplicate at each.
    assert_eq!(mock.accepted_count(&shared), 4);
    let targets: Vec<_> = mock
        .received_bundles()
        .iter()
        .map(|b| b.target_system.clone().unwrap())
        .collect();
    assert_eq!(targets, ["AMDOCS", "CRM_B2C", "AMDOCS", "CRM_B2C"]);
}

#[tokio::test]
async fn rejection_rules_change_mid_run_and_a_share_is_stable_per_id() {
    let mock = start(CrmKind::Esb).await;
    mock.set_faults(CrmFaults {
        reject_share: 1.0,
        ..CrmFaults::default()
    });
    let ids: Vec<String> = (0..5).map(|_| id()).collect();
    let items = ids.iter().map(|i| item(i, "c")).collect();
    let answer = send(
        &mock.url(),
        SoapVersion::V11,
        &bundle(Some(TargetSystem::CrmB2c), items),
    )
    .await
    .send_response(CrmService::Esb);
    for r in &answer.results {
        assert_eq!(r.status, ItemStatusCode::Rejected);
        assert_eq!(r.error_code.as_deref(), Some("B2C-CUST-404"));
    }
    // Half the ids: the same verdict each time an id comes.
    mock.set_faults(CrmFaults {
        reject_share: 0.5,
        ..CrmFaults::default()
    });
    let many: Vec<String> = (0..40).map(|_| id()).collect();
    let verdicts = |answer: clm_contracts::soap::SendCommunicationsResponse| {
        answer
            .results
            .iter()
            .map(|r| r.status == ItemStatusCode::Rejected)
            .collect::<Vec<_>>()
    };
    let first = verdicts(
        send(
            &mock.url(),
            SoapVersion::V11,
            &bundle(
                Some(TargetSystem::Amdocs),
                many.iter().map(|i| item(i, "c")).collect(),
            ),
        )
        .await
        .send_response(CrmService::Esb),
    );
    assert!(first.iter().any(|r| *r) && first.iter().any(|r| !*r));
    let rejected_again: Vec<String> = many
        .iter()
        .zip(&first)
        .filter(|(_, rejected)| **rejected)
        .map(|(i, _)| i.clone())
        .collect();
    let second = verdicts(
        send(
            &mock.url(),
            SoapVersion::V11,
            &bundle(
                Some(TargetSystem::Amdocs),
                rejected_again.iter().map(|i| item(i, "c")).collect(),
            ),
        )
        .await
        .send_response(CrmService::Esb),
    );
    assert!(second.iter().all(|r| *r), "rejected ids stay rejected");
    // Rules off: the rejected are accepted now.
    mock.set_faults(CrmFaults::default());
    let answer = send(
        &mock.url(),
        SoapVersion::V11,
        &bundle(Some(TargetSystem::CrmB2c), vec![item(&ids[0], "c")]),
    )
    .await
    .send_response(CrmService::Esb);
    assert_eq!(answer.results[0].status, ItemStatusCode::Accepted);
}

#[tokio::test]
async fn messages_for_the_other_service_are_client_faults() {
    let sap = start(CrmKind::SapCrm).await;
    let esb = start(CrmKind::Esb).await;
    for version in BOTH {
        // An ESB message (TargetSystem) at the SAP endpoint.
        let esb_message = bundle(Some(TargetSystem::Amdocs), vec![item(&id(), "c")]);
        let reply = send(&sap.url(), version, &esb_message).await;
        let fault = reply.assert_fault(version, FaultCode::Client);
        assert_eq!(fault.detail.unwrap().code, "WRONG_SERVICE");
        // A SAP message (no TargetSystem) at the ESB endpoint.
        let sap_message = bundle(None, vec![item(&id(), "c")]);
        let reply = send(&esb.url(), version, &sap_message).await;
        let fault = reply.assert_fault(version, FaultCode::Client);
        assert!(!fault.retryable());
        assert_eq!(fault.detail.unwrap().code, "WRONG_SERVICE");
        let reply = query(&esb.url(), version, &status_query(None, &[&id()])).await;
        reply.assert_fault(version, FaultCode::Client);
        // An operation of another service.
        let submit = Body::SubmitResponses(SubmitResponses {
            source_system: clm_contracts::soap::SourceSystem::SapCrm,
            responses: vec![clm_contracts::soap::CrmResponse {
                response_id: "r1".into(),
                message_id: Some(id()),
                crm_id: None,
                kind: clm_contracts::soap::CrmResponseKind::Delivered,
                occurred_at: "2026-01-01T10:00:00Z".parse().unwrap(),
                detail: None,
            }],
        });
        let reply = call(&sap.url(), version, &submit, None).await;
        let fault = reply.assert_fault(version, FaultCode::Client);
        assert_eq!(fault.detail.unwrap().code, "UNKNOWN_OPERATION");
    }
    assert!(sap.received_bundles().is_empty());
    assert!(esb.received_bundles().is_empty());
    assert_eq!(sap.stats().invalid, 4);
    assert_eq!(esb.stats().client_faults, 4);
}

#[tokio::test]
async fn unreadable_requests_get_the_right_fault() {
    let sap = start(CrmKind::SapCrm).await;
    let url = sap.url();
    let send_action = Some(clm_contracts::soap::SAP_SEND_ACTION);
    // Not XML.
    let reply = post_xml(
        client(),
        &url,
        SoapVersion::V11,
        send_action,
        "hello".into(),
    )
    .await;
    let fault = reply.assert_fault(SoapVersion::V11, FaultCode::Client);
    assert_eq!(fault.detail.unwrap().code, "NOT_XML");
    // An entity expansion attack is refused before anything is expanded, answered in 1.2 as
    // its Content-Type announced.
    let laughs = format!(
        r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><soap:Envelope xmlns:soap="{}"><soap:Body>&lol2;</soap:Body></soap:Envelope>"#,
        clm_contracts::soap::SOAP12_NS
    );
    let reply = post_xml(client(), &url, SoapVersion::V12, send_action, laughs).await;
    let fault = reply.assert_fault(SoapVersion::V12, FaultCode::Client);
    assert_eq!(fault.detail.unwrap().code, "FORBIDDEN");
    // An envelope in no SOAP namespace: VersionMismatch, in 1.1.
    let odd = r#"<e:Envelope xmlns:e="urn:not-soap"><e:Body/></e:Envelope>"#.to_owned();
    let reply = post_xml(client(), &url, SoapVersion::V11, send_action, odd).await;
    reply.assert_fault(SoapVersion::V11, FaultCode::VersionMismatch);
    // A schema violation: an Item without its required elements.
    let broken = format!(
        r#"<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body><s:SendCommunications xmlns:s="{SAP_NS}"><s:BundleId>b</s:BundleId><s:Item/></s:SendCommunications></soap:Body></soap:Envelope>"#
    );
    let reply = post_xml(client(), &url, SoapVersion::V11, send_action, broken).await;
    let fault = reply.assert_fault(SoapVersion::V11, FaultCode::Client);
    assert_eq!(fault.detail.unwrap().code, "INVALID");
    // A mandatory header nobody here understands.
    let must = format!(
        r#"<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Header><x:Tx xmlns:x="urn:tx" soap:mustUnderstand="1">1</x:Tx></soap:Header><soap:Body><s:GetCommunicationStatus xmlns:s="{SAP_NS}"><s:MessageId>{}</s:MessageId></s:GetCommunicationStatus></soap:Body></soap:Envelope>"#,
        id()
    );
    let status_action = Some(clm_contracts::soap::SAP_STATUS_ACTION);
    let reply = post_xml(client(), &url, SoapVersion::V11, status_action, must).await;
    reply.assert_fault(SoapVersion::V11, FaultCode::MustUnderstand);
    // A SOAPAction naming another operation.
    let message = bundle(None, vec![item(&id(), "c")]);
    let xml = clm_contracts::soap::codec::envelope(
        SoapVersion::V11,
        &Body::SendCommunications(message),
        None,
    );
    let reply = post_xml(client(), &url, SoapVersion::V11, status_action, xml).await;
    let fault = reply.assert_fault(SoapVersion::V11, FaultCode::Client);
    assert_eq!(fault.detail.unwrap().code, "ACTION_MISMATCH");
    // The ESB namespace's operation at the ESB with an action of SAP's: refused too.
    let esb = start(CrmKind::Esb).await;
    let message = bundle(Some(TargetSystem::Amdocs), vec![item(&id(), "c")]);
    let xml = clm_contracts::soap::codec::envelope(
        SoapVersion::V12,
        &Body::SendCommunications(message),
        None,
    );
    let reply = post_xml(client(), &esb.url(), SoapVersion::V12, send_action, xml).await;
    reply.assert_fault(SoapVersion::V12, FaultCode::Client);
    assert!(sap.received_bundles().is_empty() && esb.received_bundles().is_empty());
}
