//! The control API under `/control/sap_crm/` and `/control/crm_esb/`, secrets redacted.

use clm_contracts::soap::codec::SoapVersion;
use clm_contracts::soap::{CrmService, ItemState, ItemStatusCode, TargetSystem};
use clm_mocks::{
    CrmCallbacks, CrmFault, CrmFaults, CrmKind, CrmMockConfig, CrmStats, ReceivedBundle,
};
use serde_json::{Value, json};

use crate::harness::{bundle, client, id, item, query, send, start, start_with, status_query};

async fn get<T: serde::de::DeserializeOwned>(url: String) -> T {
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn put(url: String, body: &str) -> (u16, Value) {
    let response = client()
        .put(url)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn received_stats_faults_rules_and_reset() {
    let mock = start(CrmKind::Esb).await;
    let control = mock.control_url();
    assert!(control.ends_with("/control/crm_esb"), "{control}");
    let a = id();
    for n in 0..3 {
        let first = if n == 0 { a.clone() } else { id() };
        send(
            &mock.url(),
            SoapVersion::V11,
            &bundle(Some(TargetSystem::Amdocs), vec![item(&first, "c")]),
        )
        .await;
    }
    let last: Vec<ReceivedBundle> = get(format!("{control}/received?limit=2")).await;
    assert_eq!(last, mock.received_bundles()[1..]);
    let all: Vec<Value> = get(format!("{control}/received")).await;
    assert_eq!(all.len(), 3);
    assert_eq!(all[0]["items"][0]["message_id"], a.as_str());
    assert_eq!(all[0]["target_system"], "AMDOCS");
    assert_eq!(all[0]["version"], "1.1");
    let stats: CrmStats = get(format!("{control}/stats")).await;
    assert_eq!(
        (stats.requests, stats.bundles, stats.items_accepted),
        (3, 3, 3)
    );

    // Faults: set, read back (what is left of the scripts), refused when wrong.
    let (status, now) = put(
        format!("{control}/faults"),
        r#"{"script": ["server_fault", {"slow": {"ms": 10}}], "status_script": ["hang"],
            "target_faults": {"CRM_B2C": "http_500"}, "latency_ms": 1}"#,
    )
    .await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["script"][0], "server_fault");
    assert_eq!(
        mock.faults(),
        CrmFaults {
            script: vec![CrmFault::ServerFault, CrmFault::Slow { ms: 10 }],
            status_script: vec![CrmFault::Hang],
            target_faults: [("CRM_B2C".to_owned(), CrmFault::Http500)].into(),
            latency_ms: 1,
            ..CrmFaults::default()
        }
    );
    let reply = send(
        &mock.url(),
        SoapVersion::V11,
        &bundle(Some(TargetSystem::Amdocs), vec![item(&id(), "c")]),
    )
    .await;
    assert_eq!(reply.status, 500);
    let faults: CrmFaults = get(format!("{control}/faults")).await;
    assert_eq!(faults.script, [CrmFault::Slow { ms: 10 }]);
    for (bad, field) in [
        (r#"{"error_rate": 2}"#, "error_rate"),
        (r#"{"target_faults": {"SAP": "hang"}}"#, "target_faults"),
        (r#"{"script": ["explode"]}"#, "invalid JSON"),
    ] {
        let (status, error) = put(format!("{control}/faults"), bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{error}"
        );
    }
    let (status, _) = put(format!("{control}/faults"), "").await;
    assert_eq!(status, 200, "an empty body means all defaults");
    assert_eq!(mock.faults(), CrmFaults::default());

    // Rejection rules are faults too.
    let (status, rules) = put(
        format!("{control}/faults"),
        r#"{"reject_customers": ["BAD"]}"#,
    )
    .await;
    assert_eq!((status, &rules["reject_share"]), (200, &json!(0.0)));
    assert_eq!(rules["reject_customers"], json!(["BAD"]));
    assert_eq!(mock.faults().reject_customers, ["BAD"]);
    let answer = send(
        &mock.url(),
        SoapVersion::V11,
        &bundle(Some(TargetSystem::Amdocs), vec![item(&id(), "BAD")]),
    )
    .await
    .send_response(CrmService::Esb);
    assert_eq!(answer.results[0].status, ItemStatusCode::Rejected);
    let (status, error) = put(format!("{control}/faults"), r#"{"reject_share": -1}"#).await;
    assert_eq!(status, 400);
    assert!(error["message"].as_str().unwrap().contains("reject_share"));

    // Reset: bundles, what the CRM knows, counters, faults (the rules too).
    let reset = client()
        .post(format!("{control}/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert!(mock.received_bundles().is_empty());
    assert_eq!(mock.stats(), CrmStats::default());
    assert_eq!(mock.accepted_count(&a), 0);
    let statuses = query(
        &mock.url(),
        SoapVersion::V11,
        &status_query(Some(TargetSystem::Amdocs), &[&a]),
    )
    .await
    .statuses(CrmService::Esb);
    assert_eq!(statuses[0].state, ItemState::Unknown);
    assert_eq!(mock.faults(), CrmFaults::default());
}

#[tokio::test]
async fn callbacks_never_show_their_password() {
    let config = CrmMockConfig {
        auth: Some(("IN".into(), "inbound-secret".into())),
        callbacks: CrmCallbacks {
            url: Some("http://hub:8080/soap/responses".into()),
            auth: Some(("CB".into(), "callback-secret".into())),
            ..CrmCallbacks::typical()
        },
        ..CrmMockConfig::default()
    };
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("inbound-secret") && !debug.contains("callback-secret"),
        "{debug}"
    );
    let mock = start_with(CrmKind::SapCrm, config).await;
    let control = mock.control_url();
    assert!(control.ends_with("/control/sap_crm"), "{control}");

    let shown: Value = get(format!("{control}/callbacks")).await;
    assert_eq!(shown["auth"], json!(["CB", "***"]));
    assert_eq!(shown["kinds"], json!(["Delivered", "OfferAccepted"]));
    assert!(!shown.to_string().contains("callback-secret"));

    // What GET gave, edited and put back: the password stays.
    let mut edited = shown.clone();
    edited["kinds"] = json!(["Delivered"]);
    edited["version"] = json!("1.2");
    let (status, now) = put(format!("{control}/callbacks"), &edited.to_string()).await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["auth"], json!(["CB", "***"]));
    let in_force = mock.callbacks();
    assert_eq!(
        in_force.auth,
        Some(("CB".to_owned(), "callback-secret".to_owned()))
    );
    assert_eq!(
        (in_force.kinds.len(), in_force.version.as_str()),
        (1, "1.2")
    );

    // A new password replaces it; no auth removes it.
    let (_, now) = put(
        format!("{control}/callbacks"),
        r#"{"auth": ["CB2", "new-secret"], "kinds": ["Clicked"]}"#,
    )
    .await;
    assert_eq!(now["auth"], json!(["CB2", "***"]));
    assert_eq!(
        mock.callbacks().auth,
        Some(("CB2".to_owned(), "new-secret".to_owned()))
    );
    let (_, now) = put(format!("{control}/callbacks"), r#"{"kinds": []}"#).await;
    assert_eq!(now["auth"], Value::Null);
    assert_eq!(mock.callbacks(), CrmCallbacks::default());

    for (bad, field) in [
        (r#"{"kinds": ["delivered"]}"#, "kinds"),
        (r#"{"version": "1.3"}"#, "version"),
        (r#"{"correlate_by": "phone"}"#, "correlate_by"),
        (r#"{"bundle_size": 1001}"#, "bundle_size"),
        (r#"{"url": "not a url"}"#, "url"),
    ] {
        let (status, error) = put(format!("{control}/callbacks"), bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{error}"
        );
    }
    // target_faults are the ESB's.
    let (status, _) = put(
        format!("{control}/faults"),
        r#"{"target_faults": {"AMDOCS": "hang"}}"#,
    )
    .await;
    assert_eq!(status, 400);
}
