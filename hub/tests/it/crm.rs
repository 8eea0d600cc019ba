//! SAP CRM, Amdocs and CRM B2C end to end on the embedded default: bundles to the bundled CRM
//! mocks, per-item results, SOAP callbacks recorded, faults classified, and a lost answer
//! reconciled by the status operation instead of resent blindly.

use std::time::Duration;

use clm_contracts::ChannelId;
use clm_hub::config::{CrmChannelConfig, SoapChannelConfig};
use clm_mocks::{CrmFault, CrmFaults, CrmMock};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestHub, sandbox_config, start_hub};

const CRMS: [ChannelId; 3] = [ChannelId::SapCrm, ChannelId::Amdocs, ChannelId::CrmB2c];

/// The embedded default with quick bundles and short SOAP timeouts.
async fn crm_hub(tweak: impl FnOnce(&mut clm_hub::Config)) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(dir.path());
    for id in CRMS {
        let ch = config.channels.typed_mut::<CrmChannelConfig>(id).unwrap();
        assert!(
            ch.enabled == Some(true),
            "{id} is on in the embedded default"
        );
        let soap = SoapChannelConfig {
            bundle_size: 10,
            bundle_wait_ms: 50,
            request_timeout_ms: 1_000,
            reconcile_attempts: 3,
            ..SoapChannelConfig::default()
        };
        ch.policy.timeout_ms = soap.worst_case_ms() + 2_000;
        ch.policy.backoff_initial_ms = 50;
        ch.policy.backoff_max_ms = 200;
        ch.soap = soap;
    }
    tweak(&mut config);
    config.validate().unwrap();
    start_hub(config, dir).await
}

fn mock(hub: &TestHub, id: ChannelId) -> &CrmMock {
    hub.hub
        .sandbox
        .as_ref()
        .and_then(|s| s.crm_mock(id))
        .unwrap_or_else(|| panic!("the sandbox runs a mock for {id}"))
}

fn offer(channel: ChannelId, campaign: &str, customer: &str) -> Value {
    json!({
        "id": Uuid::new_v4().to_string(), "campaign_id": campaign, "customer_id": customer,
        "channel": channel.as_str(), "recipient": "+79001234567",
        "content": {"subject": "Семейный тариф", "text": "Скидка 30 % на три месяца", "offer_code": "FAM-30"},
        "attributes": {"segment": "B2C-premium"},
    })
}

async fn submit_all(hub: &TestHub, items: &[Value]) -> Vec<String> {
    let (code, body) = hub.submit(&json!({ "communications": items })).await;
    assert_eq!(code, 202, "{body}");
    for r in body["results"].as_array().unwrap() {
        assert_eq!(r["outcome"], "accepted", "{body}");
    }
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

fn answers(view: &Value) -> Vec<String> {
    view["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["answer"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn bundles_and_callbacks(channel: ChannelId) {
    let hub = crm_hub(|_| {}).await;
    let items: Vec<Value> = (0..12)
        .map(|i| offer(channel, "crm", &format!("c-{i}")))
        .collect();
    let ids = submit_all(&hub, &items).await;
    // The mock calls back Delivered and OfferAccepted for every accepted item.
    hub.wait_for(&ids, &["delivered"], Duration::from_secs(20))
        .await;
    let m = mock(&hub, channel);
    for id in &ids {
        assert_eq!(m.accepted_count(id), 1, "{id}");
        let v = hub.view(id).await;
        let a = &v["attempts"][0];
        assert_eq!(a["classification"], "sent", "{v:#}");
        assert!(
            a["external_id"].as_str().is_some_and(|x| !x.is_empty()),
            "{v:#}"
        );
        let mut kinds: Vec<&str> = v["responses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .collect();
        kinds.sort_unstable();
        assert_eq!(kinds, ["delivered", "offer_accepted"], "{v:#}");
    }
    // Twelve items, bundles of at most ten: more than one bundle, none larger than allowed.
    let bundles = m.received_bundles();
    let ours: Vec<_> = bundles
        .iter()
        .filter(|b| b.items.iter().any(|i| ids.contains(&i.message_id)))
        .collect();
    assert!(ours.len() >= 2, "{} bundles", ours.len());
    assert!(ours.iter().all(|b| b.items.len() <= 10));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_crm_takes_bundles_and_calls_back() {
    bundles_and_callbacks(ChannelId::SapCrm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amdocs_takes_bundles_through_the_esb_and_calls_back() {
    bundles_and_callbacks(ChannelId::Amdocs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_b2c_takes_bundles_through_the_esb_and_calls_back() {
    bundles_and_callbacks(ChannelId::CrmB2c).await;
}

/// A bundle whose answer is lost after the CRM accepted it: the status operation says Accepted
/// and every item ends `sent` once, never resent.
async fn lost_answer_reconciled(channel: ChannelId) {
    let hub = crm_hub(|_| {}).await;
    let m = mock(&hub, channel);
    m.set_faults(CrmFaults {
        script: vec![CrmFault::AcceptThenHang],
        ..CrmFaults::default()
    });
    let items: Vec<Value> = (0..5)
        .map(|i| offer(channel, "lost", &format!("l-{i}")))
        .collect();
    let ids = submit_all(&hub, &items).await;
    hub.wait_for(&ids, &["sent", "delivered"], Duration::from_secs(30))
        .await;
    for id in &ids {
        let v = hub.view(id).await;
        let a = v["attempts"].as_array().unwrap();
        assert_eq!(a.len(), 1, "one attempt, reconciled: {v:#}");
        assert_eq!(a[0]["classification"], "sent");
        assert!(answers(&v)[0].contains("reconcil"), "{v:#}");
        assert_eq!(m.accepted_count(id), 1, "sent once: {id}");
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_crm_reconciles_a_lost_answer_instead_of_resending() {
    lost_answer_reconciled(ChannelId::SapCrm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amdocs_reconciles_a_lost_answer_instead_of_resending() {
    lost_answer_reconciled(ChannelId::Amdocs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_b2c_reconciles_a_lost_answer_instead_of_resending() {
    lost_answer_reconciled(ChannelId::CrmB2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_is_retried_and_logged_and_unreceived_items_are_resent() {
    let hub = crm_hub(|_| {}).await;
    let m = mock(&hub, ChannelId::SapCrm);
    // The bundle hangs without being recorded; the first status query faults, the second says
    // Unknown (never received), so the items are resent, once.
    m.set_faults(CrmFaults {
        script: vec![CrmFault::Hang],
        status_script: vec![CrmFault::ServerFault],
        ..CrmFaults::default()
    });
    let items: Vec<Value> = (0..3)
        .map(|i| offer(ChannelId::SapCrm, "unreceived", &format!("u-{i}")))
        .collect();
    let ids = submit_all(&hub, &items).await;
    hub.wait_for(&ids, &["sent", "delivered"], Duration::from_secs(30))
        .await;
    for id in &ids {
        let v = hub.view(id).await;
        let a = v["attempts"].as_array().unwrap();
        assert_eq!(a.len(), 2, "{v:#}");
        assert_eq!(a[0]["classification"], "retry", "{v:#}");
        let first = a[0]["answer"].as_str().unwrap();
        assert!(
            first.contains("status query 1") && first.contains("status query 2"),
            "both status queries in the attempt log: {first}"
        );
        assert_eq!(a[1]["classification"], "sent");
        assert_eq!(m.accepted_count(id), 1);
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_rejections_are_classified_per_item() {
    let hub = crm_hub(|_| {}).await;
    let m = mock(&hub, ChannelId::Amdocs);
    // Server fault, then HTTP 500: retried; then accepted, except the customer the CRM rejects.
    m.set_faults(CrmFaults {
        script: vec![CrmFault::ServerFault, CrmFault::Http500],
        reject_customers: vec!["blocked-1".into()],
        ..CrmFaults::default()
    });
    let items = vec![
        offer(ChannelId::Amdocs, "classes", "ok-1"),
        offer(ChannelId::Amdocs, "classes", "blocked-1"),
    ];
    let ids = submit_all(&hub, &items).await;
    hub.wait_for(&ids[..1], &["sent", "delivered"], Duration::from_secs(20))
        .await;
    hub.wait_for(&ids[1..], &["failed"], Duration::from_secs(20))
        .await;
    let v = hub.view(&ids[0]).await;
    let classes: Vec<&str> = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["classification"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["retry", "retry", "sent"], "{v:#}");
    let rejected = hub.view(&ids[1]).await;
    assert_eq!(
        rejected["attempts"].as_array().unwrap().last().unwrap()["classification"],
        "fail",
        "{rejected:#}"
    );

    // A Client fault refuses the whole bundle: failed, not retried.
    m.set_faults(CrmFaults {
        script: vec![CrmFault::ClientFault],
        ..CrmFaults::default()
    });
    let items = vec![offer(ChannelId::Amdocs, "client", "cf-1")];
    let ids = submit_all(&hub, &items).await;
    hub.wait_for(&ids, &["failed"], Duration::from_secs(20))
        .await;
    let v = hub.view(&ids[0]).await;
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "{v:#}");
    hub.stop().await;
}

/// Validates a whole envelope against `wsdl/` with xmllint (the envelope schemas import the
/// service schemas, so the body is checked strictly). Never skipped: xmllint comes with
/// scripts/test.sh.
fn xmllint(xml: &str, v12: bool) -> Result<(), String> {
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(if v12 {
        "../wsdl/samples/envelope-soap12.xsd"
    } else {
        "../wsdl/samples/envelope-soap11.xsd"
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("envelope.xml");
    std::fs::write(&file, xml).unwrap();
    let out = std::process::Command::new("xmllint")
        .args(["--nonet", "--noout", "--schema"])
        .arg(&schema)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("xmllint is needed (scripts/test.sh installs libxml2-utils): {e}")
        });
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}\n{xml}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_hub_sends_and_answers_validates_against_the_xsd() {
    use axum::body::Bytes;
    use clm_connectors::soap::{Body, Limits, SoapVersion, envelope, parse_envelope};
    use clm_contracts::soap::{ItemResult, ItemStatusCode, SendCommunicationsResponse};
    use std::sync::{Arc, Mutex};

    // The check itself can fail.
    let invalid = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../wsdl/samples/invalid-unknown-element-in-item.xml"),
    )
    .unwrap();
    assert!(xmllint(&invalid, false).is_err());

    // A stand-in CRM that keeps every raw request and answers it per the contract.
    let seen: Arc<Mutex<Vec<(bool, String)>>> = Arc::default();
    let keep = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/crm",
        axum::routing::post(move |body: Bytes| {
            let keep = Arc::clone(&keep);
            async move {
                let text = String::from_utf8(body.to_vec()).unwrap();
                let parsed = parse_envelope(&body, Limits::DEFAULT).unwrap();
                let v12 = parsed.version == SoapVersion::V12;
                keep.lock().unwrap().push((v12, text));
                let Body::SendCommunications(req) = parsed.body else {
                    panic!("a send")
                };
                let answer = SendCommunicationsResponse {
                    bundle_id: req.bundle_id.clone(),
                    results: req
                        .items
                        .iter()
                        .map(|i| ItemResult {
                            message_id: i.message_id.clone(),
                            status: ItemStatusCode::Accepted,
                            crm_id: Some(format!("X-{}", &i.message_id[..8])),
                            error_code: None,
                            error_text: None,
                        })
                        .collect(),
                };
                let service = req.service();
                let xml = envelope(parsed.version, &(service, &answer), None);
                let ct = parsed.version.content_type(None);
                ([(axum::http::header::CONTENT_TYPE, ct)], xml)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let crm_url = format!("http://{}/crm", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let hub = crm_hub(|c| {
        c.soap.callers = vec![clm_hub::config::SoapCaller {
            username: "esb".into(),
            password: "esb-pw".into(),
            systems: vec!["AMDOCS".into(), "CRM_B2C".into(), "SAP_CRM".into()],
        }];
        for id in CRMS {
            let ch = c.channels.typed_mut::<CrmChannelConfig>(id).unwrap();
            ch.endpoint = Some(clm_hub::config::EndpointConfig {
                url: crm_url.clone(),
                auth: Some(clm_hub::config::AuthConfig::WsSecurity {
                    username: "hub".into(),
                    password: "hub-pw".into(),
                }),
                ca_file: None,
                client_cert_file: None,
                client_key_file: None,
            });
            if id == ChannelId::CrmB2c {
                ch.soap.version = "1.2".into();
            }
        }
        // The stand-in, not the bundled mocks.
        c.sandbox = false;
        c.channels.sms.enabled = Some(false);
        for id in [
            ChannelId::Wink,
            ChannelId::Elk,
            ChannelId::Eissd,
            ChannelId::Email,
        ] {
            c.channels.get_mut(id).set_enabled(false);
        }
    })
    .await;
    let items: Vec<Value> = CRMS.iter().map(|id| offer(*id, "xsd", "x-1")).collect();
    let ids = submit_all(&hub, &items).await;
    hub.wait_for(&ids, &["sent"], Duration::from_secs(20)).await;
    let sent = seen.lock().unwrap().clone();
    assert!(sent.len() >= 3, "one bundle per channel at least");
    assert!(sent.iter().any(|(v12, _)| *v12), "crm_b2c speaks SOAP 1.2");
    for (v12, xml) in &sent {
        assert!(xml.contains("UsernameToken"), "WS-Security header sent");
        xmllint(xml, *v12).unwrap_or_else(|e| panic!("what the hub sent: {e}"));
    }

    // What the hub answers: results, and faults of both versions.
    let client = reqwest::Client::new();
    let submit = |v12: bool, user: &str| {
        let (env, ns) = if v12 {
            (
                "http://www.w3.org/2003/05/soap-envelope",
                "application/soap+xml",
            )
        } else {
            ("http://schemas.xmlsoap.org/soap/envelope/", "text/xml")
        };
        let xml = format!(
            r#"<e:Envelope xmlns:e="{env}"><e:Header><wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"><wsse:UsernameToken><wsse:Username>{user}</wsse:Username><wsse:Password>esb-pw</wsse:Password></wsse:UsernameToken></wsse:Security></e:Header><e:Body><r:SubmitResponses xmlns:r="urn:clm:hub:responses:v1"><r:SourceSystem>AMDOCS</r:SourceSystem><r:Response><r:ResponseId>xsd-1</r:ResponseId><r:MessageId>{id}</r:MessageId><r:Kind>Read</r:Kind><r:OccurredAt>2026-03-01T10:00:00Z</r:OccurredAt></r:Response><r:Response><r:ResponseId>xsd-2</r:ResponseId><r:Kind>Read</r:Kind><r:OccurredAt>2026-03-01T10:00:00Z</r:OccurredAt></r:Response></r:SubmitResponses></e:Body></e:Envelope>"#,
            id = ids[1],
        );
        client
            .post(hub.url("/soap/responses"))
            .header("content-type", format!("{ns}; charset=utf-8"))
            .body(xml)
            .send()
    };
    for (v12, user, status) in [
        (false, "esb", 200),
        (true, "esb", 200),
        (false, "intruder", 500),
        (true, "intruder", 400),
    ] {
        let r = submit(v12, user).await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        let answer = r.text().await.unwrap();
        xmllint(&answer, v12).unwrap_or_else(|e| panic!("what the hub answered: {e}"));
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_left_unknown_are_reconciled_later() {
    let hub = crm_hub(|c| {
        let soap = &mut c.channels.sap_crm.soap;
        soap.reconcile_every_ms = 300;
    })
    .await;
    let m = mock(&hub, ChannelId::SapCrm);
    // No callbacks: a Delivered callback would settle the item before the reconciler does.
    m.set_callbacks(clm_mocks::CrmCallbacks::default());
    // The answer is lost and every status query within the attempt fails: unknown. The next
    // query, the reconciler's, is answered.
    m.set_faults(CrmFaults {
        script: vec![CrmFault::AcceptThenHang],
        status_script: vec![
            CrmFault::ServerFault,
            CrmFault::ServerFault,
            CrmFault::ServerFault,
        ],
        ..CrmFaults::default()
    });
    let items: Vec<Value> = (0..2)
        .map(|i| offer(ChannelId::SapCrm, "later", &format!("r-{i}")))
        .collect();
    let ids = submit_all(&hub, &items).await;
    hub.wait_for(&ids, &["unknown"], Duration::from_secs(30))
        .await;
    hub.wait_for(&ids, &["sent"], Duration::from_secs(30)).await;
    for id in &ids {
        let v = hub.view(id).await;
        let a = v["attempts"].as_array().unwrap();
        assert_eq!(a.len(), 2, "{v:#}");
        assert_eq!(a[0]["classification"], "unknown");
        assert_eq!(a[1]["classification"], "sent");
        assert!(
            a[1]["answer"]
                .as_str()
                .unwrap()
                .contains("reconciled later"),
            "{v:#}"
        );
        assert_eq!(m.accepted_count(id), 1, "never resent");
    }
    hub.stop().await;
}

/// Issue 10: with every bundle slot busy on a slow CRM, an item that gets no slot within what its
/// attempt's timeout leaves comes back as a retry, never sent, instead of running into the
/// dispatcher's timeout as `unknown` (before, it waited for a slot, went out late, and ended
/// `unknown` although the CRM then had it, or never went out at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_without_a_free_bundle_slot_retry_instead_of_ending_unknown() {
    let hub = crm_hub(|c| {
        let ch = &mut c.channels.sap_crm;
        let soap = SoapChannelConfig {
            bundle_size: 1,
            bundle_wait_ms: 20,
            parallel_bundles: 1,
            request_timeout_ms: 3_000,
            reconcile_attempts: 1,
            ..SoapChannelConfig::default()
        };
        ch.policy.timeout_ms = soap.worst_case_ms() + 1_000;
        ch.policy.concurrency = 10;
        ch.policy.max_attempts = 20;
        ch.soap = soap;
    })
    .await;
    let m = mock(&hub, ChannelId::SapCrm);
    m.set_faults(CrmFaults {
        latency_ms: 1_500,
        ..CrmFaults::default()
    });
    // One at a time, 1.5 s each: the sixth would get its slot after 7.5 s, past the attempt's
    // timeout (about 7.2 s).
    let items: Vec<Value> = (0..6)
        .map(|i| offer(ChannelId::SapCrm, "slots", &format!("s-{i}")))
        .collect();
    let ids = submit_all(&hub, &items).await;
    hub.wait_for(&ids, &["sent", "delivered"], Duration::from_secs(60))
        .await;
    let mut waited = 0;
    for id in &ids {
        let v = hub.view(id).await;
        for a in v["attempts"].as_array().unwrap() {
            assert_ne!(a["classification"], "unknown", "{v:#}");
            if a["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no free bundle slot"))
            {
                assert_eq!(a["classification"], "retry", "{v:#}");
                waited += 1;
            }
        }
        assert_eq!(m.accepted_count(id), 1, "sent once: {id}");
    }
    assert!(waited > 0, "some item waited for a slot and was retried");
    hub.stop().await;
}
