//! E-mail end to end on the embedded default: the hub in-process with its bundled SMTP mock;
//! delivered, bounced → suppressed, opened, clicked, unsubscribed (one-click POST), and the
//! classification of every relay answer.

use std::time::Duration;

use clm_hub::config::SmtpRelayConfig;
use clm_mocks::{SmtpFaults, SmtpMock, SmtpScriptStep, SmtpStageFault};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestHub, sandbox_config, start_hub};

const GREYLIST_MS: u64 = 1_500;

async fn email_hub(tweak: impl FnOnce(&mut clm_hub::Config)) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(dir.path());
    let ch = &mut config.channels.email;
    assert!(
        ch.enabled == Some(true),
        "e-mail is on in the embedded default"
    );
    // In sandbox mode the relay is the bundled mock; these settings give its timing.
    ch.smtp = Some(SmtpRelayConfig {
        host: "sandbox".into(),
        port: 25,
        security: "plain".into(),
        username: None,
        password: None,
        ca_file: None,
        from: "Ростелеком <offers@example.ru>".into(),
        hello_name: None,
        message_id_domain: None,
        connect_timeout_ms: 2_000,
        command_timeout_ms: 1_500,
        pool_size: 4,
        greylist_delay_ms: GREYLIST_MS,
        dkim: None,
    });
    ch.policy.timeout_ms = 20_000;
    ch.policy.backoff_initial_ms = 50;
    ch.policy.backoff_max_ms = 200;
    tweak(&mut config);
    config.validate().unwrap();
    start_hub(config, dir).await
}

fn smtp(hub: &TestHub) -> &SmtpMock {
    hub.hub
        .sandbox
        .as_ref()
        .and_then(|s| s.smtp.as_ref())
        .expect("the sandbox runs an SMTP mock")
}

fn mail(to: &str, campaign: &str) -> Value {
    json!({
        "id": Uuid::new_v4().to_string(), "campaign_id": campaign, "customer_id": "cust-1",
        "channel": "email", "recipient": to,
        "content": {
            "subject": "Ваш персональный тариф",
            "text": "Подключите «Семейный» со скидкой: https://rt.example/tariff",
            "html": "<html><body><p>Подключите <a href=\"https://rt.example/tariff?id=7&amp;src=mail\">«Семейный»</a></p></body></html>"
        },
        "attributes": {"name": "Иван Петров"},
    })
}

async fn submit(hub: &TestHub, item: &Value) -> String {
    let (code, body) = hub.submit(item).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["results"][0]["outcome"], "accepted", "{body}");
    item["id"].as_str().unwrap().to_owned()
}

fn kinds(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

async fn wait_kind(hub: &TestHub, id: &str, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = hub.view(id).await;
        if kinds(&v).iter().any(|k| k == kind) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} response: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first URL under `prefix` in the message's HTML (quoted-printable soft breaks undone).
fn link_in(raw: &str, prefix: &str) -> String {
    let flat = raw.replace("=\r\n", "").replace("=3D", "=");
    let start = flat
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix} in\n{flat}"));
    flat[start..]
        .split(['"', '\'', '>', ' ', '\r', '\n'])
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_then_opened_clicked_and_unsubscribed_with_one_click() {
    let hub = email_hub(|_| {}).await;
    let id = submit(&hub, &mail("ivan@example.ru", "track")).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["delivered"],
        Duration::from_secs(15),
    )
    .await;
    let m = smtp(&hub);
    let got = m.received();
    assert_eq!(got.len(), 1);
    let raw = String::from_utf8_lossy(&got[0].raw).into_owned();
    // The headers a good mailer sends.
    assert!(raw.contains("Message-ID: <"), "{raw}");
    assert!(raw.contains("List-Unsubscribe: <"), "{raw}");
    assert!(
        raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{raw}"
    );
    assert!(raw.contains("Subject: =?utf-8?"), "RFC 2047 subject: {raw}");
    let base = hub.hub.base_url();

    // Open pixel.
    let pixel = link_in(&raw, &format!("{base}/t/o/"));
    let r = hub.client.get(&pixel).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/gif");
    wait_kind(&hub, &id, "opened").await;

    // Click: redirected to the original link, recorded with it.
    let click = link_in(&raw, &format!("{base}/t/c/"));
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects.get(&click).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    assert_eq!(
        r.headers()["location"],
        "https://rt.example/tariff?id=7&src=mail"
    );
    let v = wait_kind(&hub, &id, "clicked").await;
    assert!(
        v.to_string()
            .contains("https://rt.example/tariff?id=7&src=mail")
    );
    // A forged or altered token leads nowhere.
    // (A different last character, whatever the token ended with.)
    let last = if click.ends_with('x') { 'y' } else { 'x' };
    let forged = format!("{}{last}", &click[..click.len() - 1]);
    assert_eq!(
        no_redirects.get(&forged).send().await.unwrap().status(),
        404
    );

    // One-click unsubscribe (RFC 8058): the mail client POSTs to the List-Unsubscribe URL.
    let unsub = link_in(&raw, &format!("{base}/u/"));
    let page = hub.client.get(&unsub).send().await.unwrap();
    assert_eq!(page.status(), 200, "a GET only shows the button");
    assert!(!kinds(&hub.view(&id).await).contains(&"unsubscribed".to_owned()));
    let r = hub
        .client
        .post(&unsub)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_kind(&hub, &id, "unsubscribed").await;

    // Unsubscribed means suppressed: the next mail fails fast, no SMTP session.
    let sessions = (m.received().len(), m.stats().rejected_rcpt);
    let next = submit(&hub, &mail("Ivan@Example.ru", "after")).await;
    hub.wait_for(
        std::slice::from_ref(&next),
        &["failed"],
        Duration::from_secs(10),
    )
    .await;
    let v = hub.view(&next).await;
    assert_eq!(v["reason"], "suppressed", "{v:#}");
    assert_eq!(v["attempts"].as_array().unwrap().len(), 0, "{v:#}");
    assert_eq!((m.received().len(), m.stats().rejected_rcpt), sessions);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_bounce_at_send_suppresses_the_address() {
    let hub = email_hub(|_| {}).await;
    let m = smtp(&hub);
    let mut faults = SmtpFaults::default();
    faults.per_recipient.insert(
        "nobody@example.ru".into(),
        SmtpStageFault::Reply {
            code: 550,
            enhanced: Some("5.1.1".into()),
            // Relays name the address in their answer; the attempt log must not keep it.
            text: "<nobody@example.ru>: user unknown".into(),
        },
    );
    m.set_faults(faults);
    let id = submit(&hub, &mail("nobody@example.ru", "bounce")).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["failed"],
        Duration::from_secs(10),
    )
    .await;
    let v = hub.view(&id).await;
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "{v:#}");
    assert!(
        v["attempts"][0]["answer"]
            .as_str()
            .unwrap()
            .contains("5.1.1"),
        "{v:#}"
    );
    assert!(
        !v.to_string().contains("nobody@example.ru"),
        "no address in the attempt log"
    );
    let again = submit(&hub, &mail("nobody@example.ru", "bounce-again")).await;
    hub.wait_for(
        std::slice::from_ref(&again),
        &["failed"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(hub.view(&again).await["reason"], "suppressed");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_reported_later_fails_and_suppresses() {
    let hub = email_hub(|_| {}).await;
    let m = smtp(&hub);
    let mut feedback = m.feedback();
    feedback.bounce_recipients = vec!["gone@example.ru".into()];
    m.set_feedback(feedback);
    let id = submit(&hub, &mail("gone@example.ru", "late-bounce")).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["failed"],
        Duration::from_secs(15),
    )
    .await;
    assert!(kinds(&hub.view(&id).await).contains(&"undelivered".to_owned()));
    let again = submit(&hub, &mail("gone@example.ru", "late-bounce-2")).await;
    hub.wait_for(
        std::slice::from_ref(&again),
        &["failed"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(hub.view(&again).await["reason"], "suppressed");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_answers_are_classified() {
    let hub = email_hub(|_| {}).await;
    let m = smtp(&hub);

    // Greylisting: retried, the first retry only after the greylist delay.
    m.set_faults(SmtpFaults {
        script: vec![SmtpScriptStep {
            rcpt: Some(SmtpStageFault::Reply {
                code: 450,
                enhanced: Some("4.7.1".into()),
                text: "greylisted, try again later".into(),
            }),
            ..SmtpScriptStep::default()
        }],
        ..SmtpFaults::default()
    });
    let id = submit(&hub, &mail("grey@example.ru", "grey")).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["sent", "delivered"],
        Duration::from_secs(15),
    )
    .await;
    let v = hub.view(&id).await;
    let a = v["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 2, "{v:#}");
    assert_eq!(a[0]["classification"], "retry");
    let t0: chrono::DateTime<chrono::Utc> = a[0]["started_at"].as_str().unwrap().parse().unwrap();
    let t1: chrono::DateTime<chrono::Utc> = a[1]["started_at"].as_str().unwrap().parse().unwrap();
    assert!(
        (t1 - t0).num_milliseconds() >= (GREYLIST_MS as i64) - 100,
        "greylisting waits: {v:#}"
    );

    // 5.7.x: failed, counted as a policy rejection, address not suppressed.
    m.set_faults(SmtpFaults {
        script: vec![SmtpScriptStep {
            end_of_data: Some(SmtpStageFault::Reply {
                code: 554,
                enhanced: Some("5.7.1".into()),
                text: "message refused by policy".into(),
            }),
            ..SmtpScriptStep::default()
        }],
        ..SmtpFaults::default()
    });
    let id = submit(&hub, &mail("policy@example.ru", "policy")).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["failed"],
        Duration::from_secs(10),
    )
    .await;
    let metrics = hub.metrics_text().await;
    assert!(
        metrics.contains("clm_email_policy_rejections_total 1"),
        "{metrics}"
    );

    // A disconnect before the message went out: retried, then sent.
    m.set_faults(SmtpFaults {
        script: vec![SmtpScriptStep {
            rcpt: Some(SmtpStageFault::Disconnect),
            ..SmtpScriptStep::default()
        }],
        ..SmtpFaults::default()
    });
    let id = submit(&hub, &mail("drop@example.ru", "drop")).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["sent", "delivered"],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        hub.view(&id).await["attempts"][0]["classification"],
        "retry"
    );

    // No answer after the final dot: the relay may have it — the attempt is unknown, never
    // resent. This relay did take it and reports it delivered (while the attempt was still
    // waiting): that report settles the communication once the attempt ends.
    m.set_faults(SmtpFaults {
        script: vec![SmtpScriptStep {
            end_of_data: Some(SmtpStageFault::Hang),
            ..SmtpScriptStep::default()
        }],
        ..SmtpFaults::default()
    });
    let before = m.received().len();
    let id = submit(&hub, &mail("hang@example.ru", "hang")).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["delivered"],
        Duration::from_secs(15),
    )
    .await;
    let v = hub.view(&id).await;
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["attempts"][0]["classification"], "unknown", "{v:#}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(m.received().len(), before + 1, "not resent");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_events_are_authenticated_recorded_once_and_suppress_on_complaint() {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    let secret = "mail-events-9d1";
    let hub = email_hub(|c| {
        c.channels.email.ingest.hmac_secret = Some(secret.into());
    })
    .await;
    let id = submit(&hub, &mail("olga@example.ru", "events")).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["delivered"],
        Duration::from_secs(15),
    )
    .await;
    let message_id = smtp(&hub).received()[0].message_id.clone().unwrap();
    let sign = |body: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let post = |body: Vec<u8>, signature: Option<String>| {
        let mut r = hub
            .client
            .post(hub.url("/ingest/email"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            r = r.header("x-clm-signature", s);
        }
        r.send()
    };
    let event = |event_id: &str, kind: &str, extra: Value| {
        let mut e = json!({"event_id": event_id, "message_id": message_id, "kind": kind,
            "occurred_at": "2026-03-01T10:00:00Z"});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        serde_json::to_vec(&e).unwrap()
    };
    for (eid, kind, extra, recorded_as) in [
        ("e-1", "opened", json!({}), "opened"),
        (
            "e-2",
            "clicked",
            json!({"url": "https://rt.example/x"}),
            "clicked",
        ),
        (
            "e-3",
            "bounced",
            json!({"bounce": {"type": "soft", "diagnostic": "smtp; 452 4.2.2 mailbox full"}}),
            "buffered",
        ),
        ("e-4", "complained", json!({}), "complained"),
    ] {
        let body = event(eid, kind, extra);
        let r = post(body.clone(), Some(sign(&body))).await.unwrap();
        assert_eq!(r.status(), 200, "{kind}");
        wait_kind(&hub, &id, recorded_as).await;
        // The same event again is recorded once.
        let r = post(body.clone(), Some(sign(&body))).await.unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["outcome"], "duplicate", "{kind}");
    }
    // Issue 10: U+0000 in a field is refused with the field named; nothing is recorded.
    for (eid, extra, field) in [
        ("e-\u{0}", json!({}), "event_id"),
        ("e-6", json!({"url": "https://rt.example/\u{0}"}), "url"),
        (
            "e-7",
            json!({"bounce": {"type": "hard", "diagnostic": "550 5.1.1 \u{0}"}}),
            "bounce.diagnostic",
        ),
    ] {
        let kind = if field == "bounce.diagnostic" {
            "bounced"
        } else {
            "clicked"
        };
        let body = event(eid, kind, extra);
        let r = post(body.clone(), Some(sign(&body))).await.unwrap();
        assert_eq!(r.status(), 400, "{field}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().starts_with(field), "{v}");
    }
    // Unsigned, wrongly signed, malformed, unknown message.
    let body = event("e-5", "opened", json!({}));
    assert_eq!(post(body.clone(), None).await.unwrap().status(), 401);
    assert_eq!(
        post(body.clone(), Some(sign(b"other")))
            .await
            .unwrap()
            .status(),
        401
    );
    let bad = br#"{"event_id":"e-6","message_id":"<x>","kind":"exploded","occurred_at":"2026-03-01T10:00:00Z"}"#.to_vec();
    let r = post(bad.clone(), Some(sign(&bad))).await.unwrap();
    assert_eq!(r.status(), 400);
    let stranger = serde_json::to_vec(&json!({"event_id": "e-7",
        "message_id": "<someone-else@mail.example>", "kind": "opened",
        "occurred_at": "2026-03-01T10:00:00Z"}))
    .unwrap();
    assert_eq!(
        post(stranger.clone(), Some(sign(&stranger)))
            .await
            .unwrap()
            .status(),
        404
    );
    // The complaint suppressed the address.
    let next = submit(&hub, &mail("olga@example.ru", "after-complaint")).await;
    hub.wait_for(
        std::slice::from_ref(&next),
        &["failed"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(hub.view(&next).await["reason"], "suppressed");
    hub.stop().await;
}
