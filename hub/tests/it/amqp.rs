//! The hub on RabbitMQ and PostgreSQL: intake from `clm.communications`, rejects, events on
//! `clm.events`. Each test runs in its own vhost.

use std::collections::HashMap;
use std::time::Duration;

use clm_contracts::{ChannelId, Status};
use clm_mocks::SmsMock;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};

use crate::harness::*;

pub(crate) async fn broker(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    clm_hub::amqp::declare_topology(&ch).await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

/// A queue of our own bound to `exchange` with `key`.
async fn tap(ch: &Channel, exchange: &str, key: &str) -> lapin::Consumer {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_consume(
        q.name().clone(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// A consumer of the hub's reject queue.
pub(crate) async fn rejects(ch: &Channel) -> lapin::Consumer {
    ch.basic_consume(
        clm_hub::amqp::REJECTED_QUEUE.into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// The next reject (within 20 s), acked: its reason header and its body.
pub(crate) async fn next_reject(rejected: &mut lapin::Consumer) -> (String, Value) {
    let d = tokio::time::timeout(Duration::from_secs(20), rejected.next())
        .await
        .expect("a reject within 20 s")
        .unwrap()
        .unwrap();
    d.acker.ack(BasicAckOptions::default()).await.unwrap();
    let header = match d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(clm_hub::amqp::REJECT_REASON_HEADER).cloned())
    {
        Some(lapin::types::AMQPValue::LongString(s)) => {
            String::from_utf8_lossy(s.as_bytes()).into_owned()
        }
        other => panic!("reason header: {other:?}"),
    };
    (header, serde_json::from_slice(&d.data).unwrap())
}

pub(crate) async fn amqp_hub(mock: &SmsMock, vhost: &str) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let pg = pg_database().await;
    let config = config_for(mock, "kannel", dir.path(), |c| {
        c.store.url = Some(pg);
        c.queue.url = vhost.to_owned();
        let p = &mut c.channels.sms.policy;
        p.concurrency = 128;
    });
    let hub = start_hub(config, dir).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !hub.hub.shared.broker.intake_connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub never connected to RabbitMQ"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_published_communications_end_delivered_with_every_event_on_clm_events() {
    let vhost = amqp_vhost();
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let (_conn, ch) = broker(&vhost).await;
    let mut events = tap(&ch, clm_hub::amqp::EVENTS_EXCHANGE, "#").await;
    let hub = amqp_hub(&mock, &vhost).await;

    let n = 10_000;
    let items: Vec<Value> = (0..n)
        .map(|i| sms_json("amqp-bulk", &format!("Offer {i}")))
        .collect();
    let bodies: Vec<(String, Vec<u8>)> = items
        .iter()
        .map(|v| ("sms".to_owned(), serde_json::to_vec(v).unwrap()))
        .collect();
    publish_raw(&ch, &bodies).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let rows = hub
            .hub
            .shared
            .store
            .count_by_status(Some("amqp-bulk"))
            .await
            .unwrap();
        let delivered = rows
            .iter()
            .find(|(s, _)| *s == Status::Delivered)
            .map_or(0, |(_, n)| *n);
        if delivered == n as u64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 180 s: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(mock.accepted_count(), n as u64);
    assert_eq!(mock.duplicates(), 0);

    // Every state change of every communication reaches clm.events, in order per communication.
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let want = [
        "status.sms.received",
        "status.sms.sent",
        "response.sms.delivered",
        "status.sms.delivered",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut complete = 0;
    while complete < n {
        let d = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| {
                panic!("only {complete} of {n} communications have all their events")
            })
            .unwrap()
            .unwrap();
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        assert_eq!(
            d.properties.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        let e: Value = serde_json::from_slice(&d.data).unwrap();
        let id = e["communication_id"].as_str().unwrap().to_owned();
        let keys = seen.entry(id).or_default();
        keys.push(d.routing_key.as_str().to_owned());
        if keys.len() == want.len() {
            let mut sorted = keys.clone();
            sorted.sort();
            let mut expected = want.to_vec();
            expected.sort();
            assert_eq!(sorted, expected, "every event of one communication");
            // Status events follow the lifecycle; the report may come before or after `sent`.
            let statuses: Vec<&String> = keys.iter().filter(|k| k.starts_with("status.")).collect();
            assert_eq!(
                statuses,
                [
                    "status.sms.received",
                    "status.sms.sent",
                    "status.sms.delivered"
                ]
            );
            complete += 1;
        }
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_land_on_the_reject_queue_with_their_reasons() {
    let vhost = amqp_vhost();
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let (_conn, ch) = broker(&vhost).await;
    let mut rejected = rejects(&ch).await;
    let hub = amqp_hub(&mock, &vhost).await;

    let good = sms_json("amqp-rej", "fine");
    let mut unknown_channel = sms_json("amqp-rej", "x");
    unknown_channel["channel"] = json!("fax");
    let mut missing = sms_json("amqp-rej", "x");
    missing.as_object_mut().unwrap().remove("recipient");
    let wrong_key = sms_json("amqp-rej", "x");
    let bodies = vec![
        ("sms".to_owned(), b"{not json".to_vec()),
        (
            "fax".to_owned(),
            serde_json::to_vec(&unknown_channel).unwrap(),
        ),
        ("sms".to_owned(), serde_json::to_vec(&missing).unwrap()),
        ("wink".to_owned(), serde_json::to_vec(&wrong_key).unwrap()),
        ("sms".to_owned(), serde_json::to_vec(&good).unwrap()),
    ];
    publish_raw(&ch, &bodies).await;

    let mut reasons = Vec::new();
    for _ in 0..4 {
        let (header, body) = next_reject(&mut rejected).await;
        let reason = body["reason"].as_str().unwrap().to_owned();
        assert_eq!(header, reason);
        assert!(body["original"].is_string());
        reasons.push(reason);
    }
    reasons.sort();
    let all = reasons.join(" | ");
    assert!(all.contains("not JSON"), "{all}");
    assert!(all.contains("fax"), "{all}");
    assert!(all.contains("recipient"), "{all}");
    assert!(all.contains("routing key `wink`"), "{all}");
    hub.wait_for(
        &[good["id"].as_str().unwrap().to_owned()],
        &["delivered"],
        Duration::from_secs(20),
    )
    .await;
    // Nothing else was stored, nothing is left unacked.
    let rows = hub
        .hub
        .shared
        .store
        .count_by_status(Some("amqp-rej"))
        .await
        .unwrap();
    assert_eq!(rows.iter().map(|(_, n)| n).sum::<u64>(), 1, "{rows:?}");
    hub.stop().await;
}

/// Wink, ELK and EISSD on the production stack: communications from RabbitMQ, state in
/// PostgreSQL, limits in Redis, webhooks back over HTTP and EISSD's rows from a PostgreSQL DWH;
/// every response reaches `clm.events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_channels_run_on_the_production_stack() {
    use clm_contracts::channels::eissd;
    use clm_hub::config::{DwhConfig, EndpointConfig, HttpJsonChannelConfig};
    use clm_mocks::{ChannelMock, ChannelMockConfig, ResponsesConfig};

    let vhost = amqp_vhost();
    let sms = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dwh_url = pg_database().await;
    let dwh = sqlx::PgPool::connect(&dwh_url).await.unwrap();
    sqlx::raw_sql(eissd::DDL).execute(&dwh).await.unwrap();
    let channels = [ChannelId::Wink, ChannelId::Elk, ChannelId::Eissd];
    let mut mocks = HashMap::new();
    for id in channels {
        let config = ChannelMockConfig {
            dwh_url: (id == ChannelId::Eissd).then(|| dwh_url.clone()),
            ..ChannelMockConfig::default()
        };
        let m = ChannelMock::start(id, ([127, 0, 0, 1], 0).into(), config)
            .await
            .unwrap();
        mocks.insert(id, m);
    }
    let (_conn, ch) = broker(&vhost).await;
    let mut events = tap(&ch, clm_hub::amqp::EVENTS_EXCHANGE, "response.#").await;

    let dir = tempfile::tempdir().unwrap();
    let pg = pg_database().await;
    let redis = std::env::var("CLM_TEST_REDIS_URL")
        .expect("CLM_TEST_REDIS_URL is not set: run the suite with scripts/test.sh");
    let config = config_for(&sms, "kannel", dir.path(), |c| {
        c.store.url = Some(pg);
        c.queue.url = vhost.clone();
        c.coordination.url = redis;
        c.coordination.key_prefix = format!("clm-t-{}:", uuid::Uuid::new_v4().simple());
        for id in channels {
            let endpoint = Some(EndpointConfig {
                url: mocks[&id].base_url(),
                auth: None,
                ca_file: None,
                client_cert_file: None,
                client_key_file: None,
            });
            // EISSD has no webhook (its responses come from the DWH table): no ingest secret.
            if let Some(cfg) = c.channels.typed_mut::<HttpJsonChannelConfig>(id) {
                cfg.ingest.hmac_secret = Some(format!("{id}-secret"));
                cfg.endpoint = endpoint;
            } else {
                c.channels.eissd.endpoint = endpoint;
            }
            let cfg = c.channels.get_mut(id);
            cfg.set_enabled(true);
            cfg.policy_mut().backoff_initial_ms = 50;
        }
        c.channels.eissd.responses = Some(DwhConfig {
            source: Some(dwh_url.clone()),
            poll_ms: 50,
            ..DwhConfig::default()
        });
    });
    let hub = start_hub(config, dir).await;
    for (id, m) in &mocks {
        m.set_responses(ResponsesConfig {
            webhook_url: (*id != ChannelId::Eissd).then(|| hub.url(&format!("/ingest/{id}"))),
            hmac_secret: Some(format!("{id}-secret")),
            ..ResponsesConfig::typical(*id)
        });
    }

    let per_channel = 5;
    let items: Vec<Value> = channels
        .iter()
        .flat_map(|id| (0..per_channel).map(|_| crate::http_channels::comm(*id, "prod-http")))
        .collect();
    publish_communications(&vhost, &items).await;

    // wink: delivered, shown, clicked; elk: delivered, read, offer_accepted; eissd: interested.
    let want = per_channel * (3 + 3 + 1);
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for _ in 0..want {
        let d = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("response events so far: {seen:#?}"))
            .unwrap()
            .unwrap();
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        let e: Value = serde_json::from_slice(&d.data).unwrap();
        seen.entry(e["communication_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(d.routing_key.as_str().to_owned());
    }
    assert_eq!(seen.len(), items.len(), "every communication answered");
    for item in &items {
        let channel = item["channel"].as_str().unwrap();
        let mut keys = seen[item["id"].as_str().unwrap()].clone();
        keys.sort();
        let kinds: &[&str] = match channel {
            "wink" => &["clicked", "delivered", "shown"],
            "elk" => &["delivered", "offer_accepted", "read"],
            _ => &["interested"],
        };
        let expected: Vec<String> = kinds
            .iter()
            .map(|k| format!("response.{channel}.{k}"))
            .collect();
        assert_eq!(keys, expected);
    }
    for m in mocks.values() {
        assert_eq!(m.accepted_count(), per_channel as u64);
        assert_eq!(m.duplicates(), 0);
    }
    hub.stop().await;
}

/// SAP CRM, Amdocs and CRM B2C on the production stack: communications from RabbitMQ, bundles to
/// the CRM mocks, their SOAP callbacks (WS-Security, one caller per mock) recorded, every
/// response on `clm.events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_channels_run_on_the_production_stack() {
    use clm_hub::config::{EndpointConfig, SoapCaller};
    use clm_mocks::{CrmCallbacks, CrmKind, CrmMock, CrmMockConfig};

    let vhost = amqp_vhost();
    let sms = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let sap = CrmMock::start(
        CrmKind::SapCrm,
        ([127, 0, 0, 1], 0).into(),
        CrmMockConfig::default(),
    )
    .await
    .unwrap();
    let esb = CrmMock::start(
        CrmKind::Esb,
        ([127, 0, 0, 1], 0).into(),
        CrmMockConfig::default(),
    )
    .await
    .unwrap();
    let (_conn, ch) = broker(&vhost).await;
    let mut events = tap(&ch, clm_hub::amqp::EVENTS_EXCHANGE, "response.#").await;

    let dir = tempfile::tempdir().unwrap();
    let pg = pg_database().await;
    let redis = std::env::var("CLM_TEST_REDIS_URL")
        .expect("CLM_TEST_REDIS_URL is not set: run the suite with scripts/test.sh");
    let channels = [ChannelId::SapCrm, ChannelId::Amdocs, ChannelId::CrmB2c];
    let config = config_for(&sms, "kannel", dir.path(), |c| {
        c.store.url = Some(pg);
        c.queue.url = vhost.clone();
        c.coordination.url = redis;
        c.coordination.key_prefix = format!("clm-t-{}:", uuid::Uuid::new_v4().simple());
        c.soap.callers = vec![
            SoapCaller {
                username: "sap".into(),
                password: "sap-pw".into(),
                systems: vec!["SAP_CRM".into()],
            },
            SoapCaller {
                username: "esb".into(),
                password: "esb-pw".into(),
                systems: vec!["AMDOCS".into(), "CRM_B2C".into()],
            },
        ];
        for id in channels {
            let cfg = c
                .channels
                .typed_mut::<clm_hub::config::CrmChannelConfig>(id)
                .unwrap();
            cfg.enabled = Some(true);
            cfg.endpoint = Some(EndpointConfig {
                url: if id == ChannelId::SapCrm {
                    sap.url()
                } else {
                    esb.url()
                },
                auth: None,
                ca_file: None,
                client_cert_file: None,
                client_key_file: None,
            });
            let mut soap = clm_hub::config::SoapChannelConfig {
                bundle_wait_ms: 50,
                ..Default::default()
            };
            if id == ChannelId::CrmB2c {
                soap.version = "1.2".into();
            }
            cfg.soap = soap;
        }
    });
    let hub = start_hub(config, dir).await;
    for (m, user, pw) in [(&sap, "sap", "sap-pw"), (&esb, "esb", "esb-pw")] {
        m.set_callbacks(CrmCallbacks {
            url: Some(hub.url("/soap/responses")),
            auth: Some((user.into(), pw.into())),
            ..CrmCallbacks::typical()
        });
    }

    let per_channel = 20;
    let items: Vec<Value> = channels
        .iter()
        .flat_map(|id| {
            (0..per_channel).map(move |i| {
                json!({
                    "id": uuid::Uuid::new_v4().to_string(), "campaign_id": "prod-crm",
                    "customer_id": format!("cust-{i}"), "channel": id.as_str(),
                    "recipient": "+79001234567",
                    "content": {"text": "Персональное предложение", "offer_code": "TV-90"},
                })
            })
        })
        .collect();
    publish_communications(&vhost, &items).await;

    // Delivered and OfferAccepted for each.
    let want = items.len() * 2;
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for _ in 0..want {
        let d = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("{} communications answered so far", seen.len()))
            .unwrap()
            .unwrap();
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        let e: Value = serde_json::from_slice(&d.data).unwrap();
        seen.entry(e["communication_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(d.routing_key.as_str().to_owned());
    }
    for item in &items {
        let channel = item["channel"].as_str().unwrap();
        let mut keys = seen[item["id"].as_str().unwrap()].clone();
        keys.sort();
        assert_eq!(
            keys,
            [
                format!("response.{channel}.delivered"),
                format!("response.{channel}.offer_accepted")
            ]
        );
        assert_eq!(
            if channel == "sap_crm" { &sap } else { &esb }
                .accepted_count(item["id"].as_str().unwrap()),
            1
        );
    }
    hub.stop().await;
}

/// E-mail on the production stack: from RabbitMQ through the SMTP mock, its delivery events
/// back over `/ingest/email` (HMAC), every response on `clm.events`; a bounced address is
/// suppressed in PostgreSQL for the next send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_runs_on_the_production_stack() {
    use clm_hub::config::{SmtpRelayConfig, TrackingConfig};
    use clm_mocks::{EmailFeedback, SmtpMock, SmtpMockConfig};

    let vhost = amqp_vhost();
    let sms = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let relay = SmtpMock::start(([127, 0, 0, 1], 0).into(), SmtpMockConfig::default())
        .await
        .unwrap();
    let (_conn, ch) = broker(&vhost).await;
    let mut events = tap(&ch, clm_hub::amqp::EVENTS_EXCHANGE, "response.email.#").await;

    let dir = tempfile::tempdir().unwrap();
    let pg = pg_database().await;
    let secret = "prod-mail-events";
    let port = relay.port();
    let config = config_for(&sms, "kannel", dir.path(), |c| {
        c.store.url = Some(pg);
        c.queue.url = vhost.clone();
        let e = &mut c.channels.email;
        e.enabled = Some(true);
        e.ingest.hmac_secret = Some(secret.into());
        e.smtp = Some(SmtpRelayConfig {
            host: "127.0.0.1".into(),
            port,
            security: "plain".into(),
            username: None,
            password: None,
            ca_file: None,
            from: "CLM <offers@example.ru>".into(),
            hello_name: Some("hub.test".into()),
            message_id_domain: None,
            connect_timeout_ms: 2_000,
            command_timeout_ms: 5_000,
            pool_size: 4,
            greylist_delay_ms: 300_000,
            dkim: None,
        });
        e.tracking = Some(TrackingConfig {
            secret: Some("tracking-key-for-tests".into()),
            ..TrackingConfig::default()
        });
    });
    let hub = start_hub(config, dir).await;
    relay.set_feedback(EmailFeedback {
        url: Some(hub.url("/ingest/email")),
        hmac_secret: Some(secret.into()),
        events: vec!["delivered".into(), "opened".into()],
        bounce_recipients: vec!["gone@example.ru".into()],
        ..EmailFeedback::default()
    });

    let mail = |to: &str| {
        json!({
            "id": uuid::Uuid::new_v4().to_string(), "campaign_id": "prod-mail",
            "customer_id": "c-1", "channel": "email", "recipient": to,
            "content": {"subject": "Предложение", "text": "Текст", "html": "<p>Текст</p>"},
        })
    };
    let items: Vec<Value> = (0..10)
        .map(|i| mail(&format!("user{i}@example.ru")))
        .chain(std::iter::once(mail("gone@example.ru")))
        .collect();
    publish_communications(&vhost, &items).await;

    // delivered + opened for ten, one hard bounce.
    let want = 10 * 2 + 1;
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for _ in 0..want {
        let d = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("events so far: {seen:#?}"))
            .unwrap()
            .unwrap();
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        let e: Value = serde_json::from_slice(&d.data).unwrap();
        seen.entry(e["communication_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(d.routing_key.as_str().to_owned());
    }
    let gone = items[10]["id"].as_str().unwrap();
    assert_eq!(seen[gone], ["response.email.undelivered"]);
    for item in &items[..10] {
        let mut keys = seen[item["id"].as_str().unwrap()].clone();
        keys.sort();
        assert_eq!(keys, ["response.email.delivered", "response.email.opened"]);
    }
    assert_eq!(relay.received().len(), 11);

    // The bounced address is suppressed: the next mail to it never reaches the relay.
    let again = mail("gone@example.ru");
    publish_communications(&vhost, std::slice::from_ref(&again)).await;
    let url = hub.url(&format!(
        "/v1/communications/{}",
        again["id"].as_str().unwrap()
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while hub.client.get(&url).send().await.unwrap().status() == 404 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never taken from RabbitMQ"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.wait_for(
        &[again["id"].as_str().unwrap().to_owned()],
        &["failed"],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        hub.view(again["id"].as_str().unwrap()).await["reason"],
        "suppressed"
    );
    assert_eq!(relay.received().len(), 11);
    hub.stop().await;
}
