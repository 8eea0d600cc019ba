//! Faults per stage: replies at `RCPT`, `DATA` and after the final `.`, disconnects, slow
//! replies, hangs, scripts, per-recipient faults, greylisting, latency — changeable mid-run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clm_mocks::{SmtpFaults, SmtpMockConfig, SmtpScriptStep, SmtpStageFault};

use crate::harness::{Client, Outcome, WAIT, message, start, start_with};

#[tokio::test]
async fn replies_at_each_stage_refuse_what_they_stand_for() {
    let mock = start().await;
    let mut client = Client::connect_ehlo(&mock).await;

    mock.set_faults(SmtpFaults {
        rcpt: Some(SmtpStageFault::user_unknown()),
        ..SmtpFaults::default()
    });
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    let reply = client.expect("RCPT TO:<b@example.com>", 550).await;
    assert_eq!(
        reply.text(),
        "5.1.1 Recipient address rejected: User unknown"
    );
    client.expect("DATA", 554).await;
    client.expect("RSET", 250).await;

    mock.set_faults(SmtpFaults {
        data: Some(SmtpStageFault::policy()),
        ..SmtpFaults::default()
    });
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 250).await;
    let reply = client.expect("DATA", 554).await;
    assert!(reply.text().starts_with("5.7.1"), "{reply:?}");
    client.expect("RSET", 250).await;

    mock.set_faults(SmtpFaults {
        end_of_data: Some(SmtpStageFault::reply(451, "4.3.0", "Try again later")),
        ..SmtpFaults::default()
    });
    let reply = client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            &message("<e-1@clm.example>", "x"),
        )
        .await;
    assert_eq!(reply.code, 451);
    assert_eq!(reply.text(), "4.3.0 Try again later");

    mock.set_faults(SmtpFaults::default());
    let reply = client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            &message("<e-2@clm.example>", "x"),
        )
        .await;
    assert_eq!(reply.code, 250, "faults off again: {reply:?}");

    let received = mock.received();
    assert_eq!(received.len(), 1, "refused messages are not recorded");
    assert_eq!(received[0].message_id.as_deref(), Some("<e-2@clm.example>"));
    let stats = mock.stats();
    assert_eq!(
        (
            stats.rejected_rcpt,
            stats.rejected_data,
            stats.rejected_end_of_data
        ),
        (1, 2, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn disconnects_at_each_stage() {
    let mock = start().await;

    mock.set_faults(SmtpFaults {
        rcpt: Some(SmtpStageFault::Disconnect),
        ..SmtpFaults::default()
    });
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.send("RCPT TO:<b@example.com>").await;
    assert!(client.closed().await, "closed at RCPT");

    mock.set_faults(SmtpFaults {
        data: Some(SmtpStageFault::Disconnect),
        ..SmtpFaults::default()
    });
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 250).await;
    client.send("DATA").await;
    assert!(client.closed().await, "closed at DATA");

    mock.set_faults(SmtpFaults {
        end_of_data: Some(SmtpStageFault::Disconnect),
        ..SmtpFaults::default()
    });
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 250).await;
    client.expect("DATA", 354).await;
    client
        .write(&crate::harness::stuffed(&message("<d-1@clm.example>", "x")))
        .await;
    assert!(client.closed().await, "closed after the final dot");

    assert!(mock.received().is_empty());
    assert_eq!(mock.stats().disconnects, 3);
}

#[tokio::test]
async fn a_421_closes_the_connection_after_the_reply() {
    let mock = start().await;
    mock.set_faults(SmtpFaults {
        rcpt: Some(SmtpStageFault::reply(421, "4.3.2", "Service not available")),
        ..SmtpFaults::default()
    });
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 421).await;
    assert!(client.closed().await);
}

#[tokio::test]
async fn slow_replies_and_latency_come_late_but_normal() {
    let mock = start().await;
    mock.set_faults(SmtpFaults {
        rcpt: Some(SmtpStageFault::Slow { ms: 300 }),
        end_of_data: Some(SmtpStageFault::Slow { ms: 300 }),
        ..SmtpFaults::default()
    });
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    let started = Instant::now();
    client.expect("RCPT TO:<b@example.com>", 250).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    let reply = client.data(&message("<s-1@clm.example>", "slow")).await;
    assert_eq!(reply.code, 250);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(mock.stats().slow_replies, 2);

    mock.set_faults(SmtpFaults {
        latency_ms: 200,
        ..SmtpFaults::default()
    });
    let started = Instant::now();
    client.expect("NOOP", 250).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn a_hang_after_the_final_dot_times_the_client_out_but_the_message_is_taken() {
    let mock = start().await;
    mock.set_faults(SmtpFaults {
        end_of_data: Some(SmtpStageFault::Hang),
        ..SmtpFaults::default()
    });
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 250).await;
    client.expect("DATA", 354).await;
    client
        .write(&crate::harness::stuffed(&message(
            "<h-1@clm.example>",
            "hang",
        )))
        .await;
    // The mock never answers, so any timeout of the client's expires.
    match client.read_reply(Duration::from_millis(500)).await {
        Outcome::TimedOut => {}
        other => panic!("expected no answer, got {other:?}"),
    }
    assert!(mock.wait_for_messages(1, WAIT).await);
    let received = mock.received();
    assert_eq!(received[0].message_id.as_deref(), Some("<h-1@clm.example>"));
    assert!(!received[0].answered);
    let stats = mock.stats();
    assert_eq!(
        (stats.messages_hung, stats.messages_accepted, stats.hangs),
        (1, 0, 1)
    );
    drop(client);

    // A hang at RCPT records nothing.
    mock.set_faults(SmtpFaults {
        rcpt: Some(SmtpStageFault::Hang),
        ..SmtpFaults::default()
    });
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.send("RCPT TO:<b@example.com>").await;
    assert!(matches!(
        client.read_reply(Duration::from_millis(300)).await,
        Outcome::TimedOut
    ));
    assert_eq!(mock.received().len(), 1);
    assert_eq!(mock.stats().hangs, 2);
    drop(client);
    mock.shutdown().await;
}

#[tokio::test]
async fn a_script_applies_to_the_next_transactions_in_order() {
    let script = vec![
        SmtpScriptStep {
            rcpt: Some(SmtpStageFault::greylisted()),
            ..SmtpScriptStep::default()
        },
        SmtpScriptStep::default(),
        SmtpScriptStep {
            end_of_data: Some(SmtpStageFault::policy()),
            ..SmtpScriptStep::default()
        },
    ];
    let mock = start_with(SmtpMockConfig {
        faults: SmtpFaults {
            script,
            ..SmtpFaults::default()
        },
        ..SmtpMockConfig::default()
    })
    .await;
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 450).await;
    client.expect("RCPT TO:<c@example.com>", 450).await;
    client.expect("RSET", 250).await;
    assert_eq!(mock.faults().script.len(), 2);

    let ok = client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            &message("<s-1@clm.example>", "1"),
        )
        .await;
    assert_eq!(ok.code, 250);
    let refused = client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            &message("<s-2@clm.example>", "2"),
        )
        .await;
    assert_eq!(refused.code, 554);
    assert!(mock.faults().script.is_empty());
    let ok = client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            &message("<s-3@clm.example>", "3"),
        )
        .await;
    assert_eq!(ok.code, 250, "the script is done");
    let ids: Vec<_> = mock
        .received()
        .into_iter()
        .map(|m| m.message_id.unwrap())
        .collect();
    assert_eq!(ids, ["<s-1@clm.example>", "<s-3@clm.example>"]);
}

#[tokio::test]
async fn per_recipient_faults_refuse_that_address_only() {
    let mock = start().await;
    mock.set_faults(SmtpFaults {
        per_recipient: BTreeMap::from([
            (
                "gone@example.com".to_owned(),
                SmtpStageFault::user_unknown(),
            ),
            (
                "full@example.com".to_owned(),
                SmtpStageFault::mailbox_full(),
            ),
        ]),
        ..SmtpFaults::default()
    });
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    let reply = client.expect("RCPT TO:<Gone@Example.COM>", 550).await;
    assert!(reply.text().starts_with("5.1.1"), "{reply:?}");
    let reply = client.expect("RCPT TO:<full@example.com>", 452).await;
    assert!(reply.text().starts_with("4.2.2"), "{reply:?}");
    client.expect("RCPT TO:<fine@example.com>", 250).await;
    let reply = client.data(&message("<r-1@clm.example>", "x")).await;
    assert_eq!(reply.code, 250);
    assert_eq!(mock.received()[0].recipients, ["fine@example.com"]);
    assert_eq!(mock.stats().rejected_rcpt, 2);
}

#[tokio::test]
async fn greylisting_refuses_the_first_attempt_of_each_pair() {
    let mock = start().await;
    mock.set_faults(SmtpFaults {
        greylist_first: true,
        ..SmtpFaults::default()
    });
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    let reply = client.expect("RCPT TO:<b@example.com>", 450).await;
    assert!(reply.text().starts_with("4.7.1"), "{reply:?}");
    client.expect("QUIT", 221).await;

    // The retry, on a new connection as a real client makes it, passes.
    let mut client = Client::connect_ehlo(&mock).await;
    let reply = client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            &message("<g-1@clm.example>", "x"),
        )
        .await;
    assert_eq!(reply.code, 250);
    // Another pair is greylisted on its own.
    client.expect("MAIL FROM:<other@clm.example>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 450).await;
    client.expect("RCPT TO:<b@example.com>", 250).await;
    client.expect("RSET", 250).await;

    let stats = mock.stats();
    assert_eq!((stats.greylisted, stats.rejected_rcpt), (2, 2));
    mock.reset();
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 250).await;
    assert_eq!(mock.stats().greylisted, 0, "a reset turns greylisting off");
}
