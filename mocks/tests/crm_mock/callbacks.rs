//! Callbacks to the hub's response service: `SubmitResponses` read back with the codec, the
//! UsernameToken or HTTP Basic, bundles, retries, the hub's outcomes counted, never before the
//! answer went out.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clm_contracts::soap::codec::{Body, SoapVersion, envelope};
use clm_contracts::soap::{
    CrmResponseKind, CrmService, ResponseOutcome, SUBMIT_RESPONSES_ACTION, SourceSystem,
    TargetSystem,
};
use clm_mocks::{CrmCallbacks, CrmFault, CrmFaults, CrmKind, CrmMockConfig};

use crate::harness::{
    Answer, Receiver, WAIT, bundle, id, item, send, start_with, wait_until, xmllint,
};

const USER: &str = "SAP_CRM_CB";
const PASSWORD: &str = "cb-s3cret & <more>";

fn callbacks(receiver: &Receiver) -> CrmCallbacks {
    CrmCallbacks {
        url: Some(receiver.url()),
        auth: Some((USER.into(), PASSWORD.into())),
        delay_ms: 5,
        bundle_size: 2,
        ..CrmCallbacks::typical()
    }
}

#[tokio::test]
async fn accepted_items_are_reported_with_a_username_token_and_retried_after_a_500() {
    let receiver = Receiver::start().await;
    receiver.script(&[Answer::Http500]);
    let mock = start_with(
        CrmKind::SapCrm,
        CrmMockConfig {
            callbacks: callbacks(&receiver),
            faults: CrmFaults {
                reject_customers: vec!["REJECT".into()],
                ..CrmFaults::default()
            },
            ..CrmMockConfig::default()
        },
    )
    .await;
    let (a, b, rejected) = (id(), id(), id());
    let answer = send(
        &mock.url(),
        SoapVersion::V11,
        &bundle(
            None,
            vec![item(&a, "c"), item(&rejected, "REJECT"), item(&b, "c")],
        ),
    )
    .await
    .send_response(CrmService::SapCrm);
    // 2 accepted items × Delivered, OfferAccepted = 4 responses, 2 per envelope.
    assert!(mock.wait_for_responses(4, WAIT).await, "{:?}", mock.stats());
    let taken = receiver.wait_for(2).await;
    let all = receiver.all();
    assert_eq!(all.len(), 3, "one envelope retried after the 500");
    assert_eq!(all[0].answered, 500);
    assert_eq!(
        all[0].body, all[1].body,
        "the retry is the same envelope: same ResponseIds"
    );

    let mut response_ids = BTreeSet::new();
    let mut reported = Vec::new();
    for callback in &taken {
        xmllint(&callback.text(), SoapVersion::V11);
        assert!(
            callback.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/xml"),
        );
        assert_eq!(
            callback.headers["soapaction"],
            format!("\"{SUBMIT_RESPONSES_ACTION}\"")
        );
        assert!(callback.headers.get("authorization").is_none());
        let parsed = callback.parsed();
        assert_eq!(parsed.version, SoapVersion::V11);
        let security = parsed.security.expect("a UsernameToken");
        assert_eq!(
            (security.username.as_str(), security.password.as_str()),
            (USER, PASSWORD)
        );
        let submit = callback.submit();
        assert_eq!(submit.source_system, SourceSystem::SapCrm);
        assert_eq!(submit.responses.len(), 2);
        for r in submit.responses {
            assert!(
                response_ids.insert(r.response_id.clone()),
                "unique ResponseId"
            );
            assert_eq!(r.crm_id, None, "correlated by message_id");
            reported.push((r.message_id.unwrap(), r.kind));
        }
    }
    assert_eq!(
        reported,
        [
            (a.clone(), CrmResponseKind::Delivered),
            (b.clone(), CrmResponseKind::Delivered),
            (a.clone(), CrmResponseKind::OfferAccepted),
            (b.clone(), CrmResponseKind::OfferAccepted),
        ],
        "every kind for every accepted item, none for the rejected"
    );
    assert_eq!(answer.results.len(), 3);

    let stats = mock.stats();
    assert_eq!(
        (
            stats.callbacks_sent,
            stats.callbacks_failed,
            stats.callback_retries,
            stats.responses_sent,
            stats.responses_recorded
        ),
        (2, 0, 1, 4, 4)
    );

    // A resend (Duplicate) is no new item: no new callbacks.
    send(
        &mock.url(),
        SoapVersion::V11,
        &bundle(None, vec![item(&a, "c")]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.all().len(), 3);
}

#[tokio::test]
async fn soap_12_basic_auth_crm_ids_and_the_esb_source_systems() {
    let receiver = Receiver::start().await;
    let mock = start_with(
        CrmKind::Esb,
        CrmMockConfig {
            callbacks: CrmCallbacks {
                version: "1.2".into(),
                basic: true,
                correlate_by: "crm_id".into(),
                kinds: vec!["Interested".into()],
                bundle_size: 100,
                ..callbacks(&receiver)
            },
            ..CrmMockConfig::default()
        },
    )
    .await;
    let mut crm_ids = BTreeSet::new();
    for target in [TargetSystem::Amdocs, TargetSystem::CrmB2c] {
        let answer = send(
            &mock.url(),
            SoapVersion::V11,
            &bundle(Some(target), vec![item(&id(), "c"), item(&id(), "c")]),
        )
        .await
        .send_response(CrmService::Esb);
        crm_ids.extend(answer.results.into_iter().map(|r| r.crm_id.unwrap()));
    }
    let taken = receiver.wait_for(2).await;
    let mut sources = BTreeSet::new();
    let mut reported = BTreeSet::new();
    for callback in &taken {
        xmllint(&callback.text(), SoapVersion::V12);
        let content_type = callback.headers["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("application/soap+xml")
                && content_type.contains(SUBMIT_RESPONSES_ACTION),
            "{content_type}"
        );
        let authorization = callback.headers["authorization"].to_str().unwrap();
        assert!(authorization.starts_with("Basic "), "{authorization}");
        let parsed = callback.parsed();
        assert_eq!(parsed.version, SoapVersion::V12);
        assert!(parsed.security.is_none(), "Basic instead of a token");
        let submit = callback.submit();
        sources.insert(submit.source_system.as_str());
        for r in submit.responses {
            assert_eq!(r.message_id, None);
            assert_eq!(r.kind, CrmResponseKind::Interested);
            reported.insert(r.crm_id.unwrap());
        }
    }
    assert_eq!(sources, BTreeSet::from(["AMDOCS", "CRM_B2C"]));
    assert_eq!(reported, crm_ids);
}

#[tokio::test]
async fn the_hubs_outcomes_are_counted_and_client_faults_not_retried() {
    let receiver = Receiver::start().await;
    receiver.outcomes(&[
        ResponseOutcome::Recorded,
        ResponseOutcome::Duplicate,
        ResponseOutcome::UnknownMessage,
        ResponseOutcome::Invalid,
    ]);
    let mock = start_with(
        CrmKind::SapCrm,
        CrmMockConfig {
            callbacks: CrmCallbacks {
                correlate_by: "both".into(),
                bundle_size: 4,
                kinds: vec!["Delivered".into(), "Read".into()],
                ..callbacks(&receiver)
            },
            ..CrmMockConfig::default()
        },
    )
    .await;
    send(
        &mock.url(),
        SoapVersion::V11,
        &bundle(None, vec![item(&id(), "c"), item(&id(), "c")]),
    )
    .await;
    assert!(mock.wait_for_responses(4, WAIT).await);
    let stats = mock.stats();
    assert_eq!(
        (
            stats.responses_recorded,
            stats.responses_duplicate,
            stats.responses_unknown_message,
            stats.responses_invalid
        ),
        (1, 1, 1, 1)
    );
    let submit = receiver.taken()[0].submit();
    assert!(
        submit
            .responses
            .iter()
            .all(|r| r.message_id.is_some() && r.crm_id.is_some())
    );

    // A Client fault is final: given up at once. A Server fault is retried.
    receiver.script(&[Answer::ClientFault, Answer::ServerFault]);
    send(
        &mock.url(),
        SoapVersion::V11,
        &bundle(
            None,
            vec![item(&id(), "c"), item(&id(), "c"), item(&id(), "c")],
        ),
    )
    .await;
    // 6 responses in envelopes of 4 and 2: one refused for good, one retried once.
    assert!(
        wait_until(|| {
            let s = mock.stats();
            s.callbacks_failed == 1 && s.callbacks_sent == 2
        })
        .await,
        "{:?}",
        mock.stats()
    );
    let stats = mock.stats();
    assert_eq!(stats.callback_retries, 1);
    assert_eq!(receiver.all().len(), 4);
}

#[tokio::test]
async fn no_callback_before_the_answer_and_after_accept_then_hang_only_once_the_client_gave_up() {
    let receiver = Receiver::start().await;
    let mock = start_with(
        CrmKind::SapCrm,
        CrmMockConfig {
            callbacks: CrmCallbacks {
                delay_ms: 0,
                kinds: vec!["Delivered".into()],
                ..callbacks(&receiver)
            },
            faults: CrmFaults {
                script: vec![CrmFault::AcceptThenHang],
                ..CrmFaults::default()
            },
            ..CrmMockConfig::default()
        },
    )
    .await;
    let message = bundle(None, vec![item(&id(), "c")]);
    let timeout = Duration::from_millis(800);
    let impatient = reqwest::Client::builder().timeout(timeout).build().unwrap();
    let started = Instant::now();
    let result = impatient
        .post(mock.url())
        .header("Content-Type", "text/xml; charset=utf-8")
        .body(envelope(
            SoapVersion::V11,
            &Body::SendCommunications(message.clone()),
            None,
        ))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    // The item was accepted while the request was held; its callback goes once the client gave
    // up, never before.
    let taken = receiver.wait_for(1).await;
    assert!(
        taken[0].at >= started + timeout,
        "not before the client gave up"
    );
    assert_eq!(
        taken[0].submit().responses[0].message_id.as_deref(),
        Some(message.items[0].message_id.as_str())
    );
}

#[tokio::test]
async fn without_a_url_callbacks_count_as_failed() {
    let mock = start_with(
        CrmKind::SapCrm,
        CrmMockConfig {
            callbacks: CrmCallbacks {
                delay_ms: 0,
                ..CrmCallbacks::typical()
            },
            ..CrmMockConfig::default()
        },
    )
    .await;
    send(
        &mock.url(),
        SoapVersion::V11,
        &bundle(None, vec![item(&id(), "c")]),
    )
    .await;
    assert!(wait_until(|| mock.stats().callbacks_failed == 1).await);
    assert_eq!(mock.stats().callbacks_sent, 0);
}
