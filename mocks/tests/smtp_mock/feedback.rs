//! Feedback webhooks to the hub's `/ingest/email`: the JSON, correlated by `Message-ID`, signed
//! with HMAC or sent with Basic, retried after a 5xx.

use std::collections::BTreeSet;

use chrono::DateTime;
use clm_contracts::channels::email;
use clm_mocks::{EmailFeedback, SmtpFaults, SmtpMockConfig, SmtpStageFault};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::harness::{Client, Hook, Receiver, WAIT, message, start_with, wait_until};

pub const SECRET: &str = "email-hmac-secret";

/// Checks `X-CLM-Signature: sha256=<hex>` against the raw body.
pub fn assert_signed(hook: &Hook, secret: &str) {
    assert_eq!(hook.headers["content-type"], "application/json");
    let signature = hook.headers["x-clm-signature"].to_str().unwrap();
    let hex_signature = signature
        .strip_prefix("sha256=")
        .unwrap_or_else(|| panic!("no sha256= prefix: {signature}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&hook.body);
    mac.verify_slice(&hex::decode(hex_signature).unwrap())
        .expect("the signature matches the body");
}

/// A multipart/alternative message whose text part has a link before the HTML part's.
fn newsletter(message_id: &str) -> String {
    format!(
        "From: Shop <news@clm.example>\r\n\
         To: <ivan@example.com>\r\n\
         Subject: =?utf-8?b?0KHQutC40LTQutCw?=\r\n\
         Message-ID: {message_id}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"b-1\"\r\n\
         \r\n\
         --b-1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Plain: http://plain.example/not-this\r\n\
         --b-1\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\
         \r\n\
         <p><a href=3D\"https://shop.example/offer?id=3D7&amp;utm=3Dmail\">Offer</a></p>\r\n\
         --b-1--\r\n"
    )
}

fn config(receiver: &Receiver, feedback: EmailFeedback) -> SmtpMockConfig {
    SmtpMockConfig {
        feedback: EmailFeedback {
            url: Some(receiver.url()),
            delay_ms: 5,
            ..feedback
        },
        ..SmtpMockConfig::default()
    }
}

#[tokio::test]
async fn typical_feedback_is_signed_correlated_and_in_order() {
    let receiver = Receiver::start().await;
    let feedback = EmailFeedback {
        hmac_secret: Some(SECRET.into()),
        ..EmailFeedback::typical()
    };
    let mock = start_with(config(&receiver, feedback)).await;
    let mut client = Client::connect_ehlo(&mock).await;
    let reply = client
        .transaction(
            "news@clm.example",
            &["ivan@example.com"],
            &newsletter("<n-1@clm.example>"),
        )
        .await;
    assert_eq!(reply.code, 250);

    let hooks = receiver.wait_for(3).await;
    assert!(mock.wait_for_feedback(3, WAIT).await);
    let mut kinds = Vec::new();
    let mut event_ids = BTreeSet::new();
    for hook in &hooks {
        assert_signed(hook, SECRET);
        assert!(hook.headers.get("authorization").is_none());
        let json = hook.json();
        // The contract's strict type (unknown fields refused) takes it.
        let webhook: email::Webhook =
            serde_json::from_slice(&hook.body).expect("a Webhook of the contract");
        assert_eq!(webhook.message_id, "<n-1@clm.example>");
        assert_eq!(json["message_id"], "<n-1@clm.example>");
        DateTime::parse_from_rfc3339(json["occurred_at"].as_str().unwrap())
            .expect("occurred_at is RFC 3339");
        assert!(json.get("bounce").is_none(), "{json}");
        kinds.push(json["kind"].as_str().unwrap().to_owned());
        event_ids.insert(json["event_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["delivered", "opened", "clicked"], "in order");
    assert_eq!(event_ids.len(), 3, "a fresh event_id per event");
    assert_eq!(
        hooks[2].json()["url"],
        "https://shop.example/offer?id=7&utm=mail",
        "the first link of the HTML part"
    );
    assert!(hooks[0].json().get("url").is_none());
    let stats = mock.stats();
    assert_eq!((stats.feedback_sent, stats.feedback_failed), (3, 0));
}

#[tokio::test]
async fn bounces_unsubscribes_and_complaints() {
    let receiver = Receiver::start().await;
    let feedback = EmailFeedback {
        events: vec![
            "bounced_soft".into(),
            "unsubscribed".into(),
            "complained".into(),
        ],
        bounce_recipients: vec!["Gone@Example.com".into()],
        ..EmailFeedback::default()
    };
    let mock = start_with(config(&receiver, feedback)).await;
    let mut client = Client::connect_ehlo(&mock).await;
    let reply = client
        .transaction(
            "a@clm.example",
            &["gone@example.com"],
            &message("<b-1@clm.example>", "x"),
        )
        .await;
    assert_eq!(reply.code, 250);
    let hooks = receiver.wait_for(1).await;
    let json = hooks[0].json();
    let webhook: email::Webhook = serde_json::from_slice(&hooks[0].body).unwrap();
    assert!(webhook.suppresses(), "a hard bounce suppresses the address");
    assert_eq!(json["message_id"], "<b-1@clm.example>");
    assert_eq!(json["kind"], "bounced");
    assert_eq!(json["bounce"]["type"], "hard");
    assert!(
        json["bounce"]["diagnostic"]
            .as_str()
            .unwrap()
            .starts_with("smtp; 550 5.1.1"),
        "{json}"
    );

    let reply = client
        .transaction(
            "a@clm.example",
            &["fine@example.com"],
            &message("<b-2@clm.example>", "x"),
        )
        .await;
    assert_eq!(reply.code, 250);
    let hooks = receiver.wait_for(4).await;
    let later: Vec<_> = hooks[1..].iter().map(Hook::json).collect();
    assert!(later.iter().all(|j| j["message_id"] == "<b-2@clm.example>"));
    let kinds: Vec<_> = later.iter().map(|j| j["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["bounced", "unsubscribed", "complained"]);
    assert_eq!(later[0]["bounce"]["type"], "soft");
    assert!(
        later[0]["bounce"]["diagnostic"]
            .as_str()
            .unwrap()
            .starts_with("smtp; 4"),
        "{}",
        later[0]
    );
    assert!(
        hooks
            .iter()
            .all(|h| h.headers.get("x-clm-signature").is_none())
    );
}

#[tokio::test]
async fn a_500_is_retried_with_the_same_event() {
    let receiver = Receiver::start().await;
    receiver.script(&[500]);
    let feedback = EmailFeedback {
        events: vec!["delivered".into()],
        hmac_secret: Some(SECRET.into()),
        ..EmailFeedback::default()
    };
    let mock = start_with(config(&receiver, feedback)).await;
    let mut client = Client::connect_ehlo(&mock).await;
    client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            &message("<r-1@clm.example>", "x"),
        )
        .await;
    let taken = receiver.wait_for(1).await;
    let all = receiver.all();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].answered, 500);
    assert_eq!(all[0].body, taken[0].body, "the same event, byte for byte");
    assert_signed(&taken[0], SECRET);
    assert!(mock.wait_for_feedback(1, WAIT).await);
    let stats = mock.stats();
    assert_eq!(
        (
            stats.feedback_sent,
            stats.feedback_failed,
            stats.feedback_retries
        ),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn basic_auth_hung_messages_and_messages_without_message_id() {
    let receiver = Receiver::start().await;
    let feedback = EmailFeedback {
        events: vec!["delivered".into()],
        basic: Some(("hub-user".into(), "hub-pa55".into())),
        ..EmailFeedback::default()
    };
    let mock = start_with(config(&receiver, feedback)).await;

    // Taken but never answered: the relay has it, so it is delivered all the same.
    mock.set_faults(SmtpFaults {
        end_of_data: Some(SmtpStageFault::Hang),
        ..SmtpFaults::default()
    });
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 250).await;
    client.expect("DATA", 354).await;
    client
        .write(&crate::harness::stuffed(&message("<h-1@clm.example>", "x")))
        .await;
    let hooks = receiver.wait_for(1).await;
    assert_eq!(
        hooks[0].headers["authorization"],
        // base64("hub-user:hub-pa55")
        "Basic aHViLXVzZXI6aHViLXBhNTU="
    );
    assert_eq!(hooks[0].json()["message_id"], "<h-1@clm.example>");
    assert_eq!(hooks[0].json()["kind"], "delivered");
    drop(client);

    mock.set_faults(SmtpFaults::default());
    let mut client = Client::connect_ehlo(&mock).await;
    let reply = client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            "Subject: no id\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    assert!(
        wait_until(|| mock.stats().feedback_failed == 1).await,
        "{:?}",
        mock.stats()
    );
    assert_eq!(
        receiver.all().len(),
        1,
        "nothing to correlate: nothing sent"
    );
}
