//! Every fault kind: SOAP Client and Server faults, plain HTTP 500, slow answers, `hang`,
//! `accept_then_hang` (the status operation then tells the truth), status scripts, target system
//! faults, error rate and latency.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clm_contracts::soap::codec::{Body, FaultCode, SoapVersion, envelope};
use clm_contracts::soap::{CrmService, ItemState, ItemStatusCode, TargetSystem};
use clm_mocks::{CrmFault, CrmFaults, CrmKind};

use crate::harness::{BOTH, bundle, id, item, post_xml, query, send, start, status_query, xmllint};

#[tokio::test]
async fn soap_faults_and_http_500_answer_in_the_request_version_and_record_nothing() {
    let mock = start(CrmKind::SapCrm).await;
    for version in BOTH {
        mock.set_faults(CrmFaults {
            script: vec![
                CrmFault::ClientFault,
                CrmFault::ServerFault,
                CrmFault::Http500,
                CrmFault::Ok,
            ],
            ..CrmFaults::default()
        });
        let message = bundle(None, vec![item(&id(), "c")]);

        let reply = send(&mock.url(), version, &message).await;
        let fault = reply.assert_fault(version, FaultCode::Client);
        assert!(!fault.retryable());
        assert_eq!(fault.detail.unwrap().code, "MOCK_CLIENT_FAULT");

        let reply = send(&mock.url(), version, &message).await;
        assert_eq!(reply.status, 500);
        let fault = reply.assert_fault(version, FaultCode::Server);
        assert!(fault.retryable(), "a Server fault is retryable");

        let reply = send(&mock.url(), version, &message).await;
        assert_eq!(reply.status, 500);
        assert!(reply.content_type.starts_with("text/plain"), "{reply:?}");
        assert!(!reply.text.contains("Envelope"));

        assert!(mock.received_bundles().is_empty(), "faults record nothing");
        let reply = send(&mock.url(), version, &message).await;
        assert_eq!(reply.status, 200, "ok, then the script is used up");
        let reply = send(&mock.url(), version, &message).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.send_response(CrmService::SapCrm).results[0].status,
            ItemStatusCode::Duplicate
        );
        mock.reset();
    }
}

#[tokio::test]
async fn slow_answers_come_late_but_normal() {
    let mock = start(CrmKind::SapCrm).await;
    mock.set_faults(CrmFaults {
        script: vec![CrmFault::Slow { ms: 300 }],
        latency_ms: 100,
        ..CrmFaults::default()
    });
    let started = Instant::now();
    let reply = send(
        &mock.url(),
        SoapVersion::V11,
        &bundle(None, vec![item(&id(), "c")]),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "latency + slow"
    );
    assert_eq!(reply.status, 200);
    xmllint(&reply.text, SoapVersion::V11);
    let stats = mock.stats();
    assert_eq!((stats.slow, stats.items_accepted), (1, 1));
    assert_eq!(mock.faults().script, [], "consumed");
    assert_eq!(mock.faults().latency_ms, 100, "latency stays");
}

/// A client that gives up after `timeout`.
fn impatient(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

async fn send_impatiently(url: &str, message: &clm_contracts::soap::SendCommunications) -> bool {
    let xml = envelope(
        SoapVersion::V11,
        &Body::SendCommunications(message.clone()),
        None,
    );
    let result = impatient(Duration::from_millis(500))
        .post(url)
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", format!("\"{}\"", message.soap_action()))
        .body(xml)
        .send()
        .await;
    match result {
        Ok(response) => panic!("expected no answer, got {}", response.status()),
        Err(error) => error.is_timeout(),
    }
}

#[tokio::test]
async fn hang_never_answers_and_records_nothing() {
    let mock = start(CrmKind::Esb).await;
    mock.set_faults(CrmFaults {
        script: vec![CrmFault::Hang],
        ..CrmFaults::default()
    });
    let (a, b) = (id(), id());
    let message = bundle(
        Some(TargetSystem::Amdocs),
        vec![item(&a, "c"), item(&b, "c")],
    );
    assert!(send_impatiently(&mock.url(), &message).await, "timed out");
    assert!(mock.received_bundles().is_empty());
    assert_eq!(mock.stats().held, 1);
    let statuses = query(
        &mock.url(),
        SoapVersion::V11,
        &status_query(Some(TargetSystem::Amdocs), &[&a, &b]),
    )
    .await
    .statuses(CrmService::Esb);
    assert!(statuses.iter().all(|s| s.state == ItemState::Unknown));
    // The resend is a first send.
    let answer = send(&mock.url(), SoapVersion::V11, &message)
        .await
        .send_response(CrmService::Esb);
    assert!(
        answer
            .results
            .iter()
            .all(|r| r.status == ItemStatusCode::Accepted)
    );
}

#[tokio::test]
async fn accept_then_hang_then_the_status_query_tells_the_truth() {
    let mock = start(CrmKind::SapCrm).await;
    mock.set_faults(CrmFaults {
        script: vec![CrmFault::AcceptThenHang],
        // The first status query fails, the second answers.
        status_script: vec![CrmFault::ServerFault],
        ..CrmFaults::default()
    });
    let (a, b) = (id(), id());
    let message = bundle(None, vec![item(&a, "c"), item(&b, "c")]);
    assert!(send_impatiently(&mock.url(), &message).await, "timed out");

    let bundles = mock.received_bundles();
    assert_eq!(bundles.len(), 1, "recorded although never answered");
    assert!(bundles[0].held);
    assert_eq!(mock.items_accepted(), 2);
    assert_eq!(mock.accepted_count(&a), 1);
    assert_eq!(mock.stats().held, 1);

    let never = id();
    let ask = status_query(None, &[&a, &b, &never]);
    let first = query(&mock.url(), SoapVersion::V11, &ask).await;
    first.assert_fault(SoapVersion::V11, FaultCode::Server);
    let reply = query(&mock.url(), SoapVersion::V11, &ask).await;
    assert_eq!(reply.status, 200);
    xmllint(&reply.text, SoapVersion::V11);
    let statuses = reply.statuses(CrmService::SapCrm);
    let states: Vec<_> = statuses.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [ItemState::Accepted, ItemState::Accepted, ItemState::Unknown]
    );
    assert!(statuses[0].crm_id.as_deref().unwrap().starts_with("SAP-"));

    // A blind resend would be a duplicate, and counts as one.
    let answer = send(&mock.url(), SoapVersion::V11, &message)
        .await
        .send_response(CrmService::SapCrm);
    assert!(
        answer
            .results
            .iter()
            .all(|r| r.status == ItemStatusCode::Duplicate)
    );
    assert_eq!(answer.results[0].crm_id, statuses[0].crm_id);
    assert_eq!(mock.accepted_count(&a), 2);
    assert_eq!(mock.items_accepted(), 2);
}

#[tokio::test]
async fn a_status_script_only_touches_status_queries() {
    let mock = start(CrmKind::SapCrm).await;
    mock.set_faults(CrmFaults {
        status_script: vec![CrmFault::Http500, CrmFault::Hang],
        ..CrmFaults::default()
    });
    let a = id();
    let reply = send(
        &mock.url(),
        SoapVersion::V12,
        &bundle(None, vec![item(&a, "c")]),
    )
    .await;
    assert_eq!(reply.status, 200, "sends are not scripted");
    let reply = query(&mock.url(), SoapVersion::V12, &status_query(None, &[&a])).await;
    assert_eq!(reply.status, 500);
    assert_eq!(mock.faults().status_script, [CrmFault::Hang]);
    assert_eq!(mock.stats().http_500, 1);
}

#[tokio::test]
async fn one_target_system_down_the_other_up() {
    let mock = start(CrmKind::Esb).await;
    mock.set_faults(CrmFaults {
        target_faults: BTreeMap::from([("AMDOCS".to_owned(), CrmFault::ServerFault)]),
        ..CrmFaults::default()
    });
    for version in BOTH {
        let amdocs = bundle(Some(TargetSystem::Amdocs), vec![item(&id(), "c")]);
        let reply = send(&mock.url(), version, &amdocs).await;
        let fault = reply.assert_fault(version, FaultCode::Server);
        assert!(fault.reason.contains("AMDOCS"), "{}", fault.reason);
        assert_eq!(fault.detail.unwrap().code, "TARGET_UNAVAILABLE");
        let reply = query(
            &mock.url(),
            version,
            &status_query(Some(TargetSystem::Amdocs), &[&id()]),
        )
        .await;
        reply.assert_fault(version, FaultCode::Server);

        let b2c = bundle(Some(TargetSystem::CrmB2c), vec![item(&id(), "c")]);
        let reply = send(&mock.url(), version, &b2c).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    assert_eq!(mock.stats().server_faults, 4);
    assert_eq!(mock.received_bundles().len(), 2);
}

#[tokio::test]
async fn error_rate_one_is_a_server_fault_every_time() {
    let mock = start(CrmKind::Esb).await;
    mock.set_faults(CrmFaults {
        error_rate: 1.0,
        ..CrmFaults::default()
    });
    for version in BOTH {
        let message = bundle(Some(TargetSystem::CrmB2c), vec![item(&id(), "c")]);
        send(&mock.url(), version, &message)
            .await
            .assert_fault(version, FaultCode::Server);
    }
    // Faults come before the request is looked at: even an unreadable one gets the fault.
    let reply = post_xml(
        crate::harness::client(),
        &mock.url(),
        SoapVersion::V11,
        None,
        "not xml".into(),
    )
    .await;
    reply.assert_fault(SoapVersion::V11, FaultCode::Server);
    assert_eq!(mock.stats().server_faults, 3);
    mock.set_faults(CrmFaults::default());
    let message = bundle(Some(TargetSystem::CrmB2c), vec![item(&id(), "c")]);
    assert_eq!(
        send(&mock.url(), SoapVersion::V11, &message).await.status,
        200
    );
}

#[tokio::test]
async fn shutdown_releases_held_requests() {
    let mock = start(CrmKind::SapCrm).await;
    mock.set_faults(CrmFaults {
        script: vec![CrmFault::Hang],
        ..CrmFaults::default()
    });
    let url = mock.url();
    let message = bundle(None, vec![item(&id(), "c")]);
    let held = tokio::spawn(async move { send(&url, SoapVersion::V11, &message).await });
    assert!(crate::harness::wait_until(|| mock.stats().held == 1).await);
    mock.shutdown().await;
    let reply = tokio::time::timeout(crate::harness::WAIT, held)
        .await
        .expect("released")
        .unwrap();
    assert_eq!(reply.status, 503);
}
