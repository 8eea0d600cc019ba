//! The RFC 5321 dialogue: a whole session, dot-unstuffing, pipelining, the errors of sequence
//! and syntax, and the limits.

use clm_mocks::SmtpMockConfig;

use crate::harness::{Client, Outcome, WAIT, message, start, start_with};

#[tokio::test]
async fn a_full_dialogue_records_the_message_as_sent_after_dot_unstuffing() {
    let mock = start().await;
    let mut client = Client::connect(&mock).await;
    let ehlo = client.expect("EHLO client.example", 250).await;
    for extension in ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"] {
        assert!(
            ehlo.lines.iter().any(|l| l == extension),
            "{extension}: {ehlo:?}"
        );
    }
    assert!(
        ehlo.lines.iter().any(|l| l.starts_with("SIZE ")),
        "{ehlo:?}"
    );
    assert!(
        !ehlo
            .lines
            .iter()
            .any(|l| l.starts_with("AUTH") || l == "STARTTLS"),
        "no AUTH without credentials, no STARTTLS: {ehlo:?}"
    );

    let reply = client.expect("MAIL FROM:<hub@clm.example>", 250).await;
    assert!(reply.text().starts_with("2.1.0"), "{reply:?}");
    let reply = client.expect("RCPT TO:<one@example.com>", 250).await;
    assert!(reply.text().starts_with("2.1.5"), "{reply:?}");
    client.expect("rcpt to: <Two@Example.com>", 250).await;
    let reply = client.expect("DATA", 354).await;
    assert!(reply.text().contains("<CR><LF>.<CR><LF>"), "{reply:?}");
    let sent = "From: Hub <hub@clm.example>\r\n\
                To: <one@example.com>\r\n\
                Subject: =?utf-8?b?0J/RgNC40LLQtdGC?=\r\n\
                Message-ID: <m-1@clm.example>\r\n\
                List-Unsubscribe: <https://hub.example/unsubscribe/t0k>\r\n\
                List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
                DKIM-Signature: v=1; a=rsa-sha256; d=clm.example; s=s1;\r\n\
                \tb=abc\r\n\
                \r\n\
                .a line that starts with a dot\r\n\
                .\r\n\
                ..\r\n\
                last line\r\n";
    // Written by hand: every line that starts with "." gets another one.
    let wire = sent.replace("\r\n.", "\r\n..");
    client.write(wire.as_bytes()).await;
    client.write(b".\r\n").await;
    let reply = client.reply().await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let queued = reply
        .text()
        .strip_prefix("2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{reply:?}"))
        .to_owned();
    client.expect("NOOP", 250).await;
    client.expect("QUIT", 221).await;
    assert!(client.closed().await);

    let received = mock.received();
    assert_eq!(received.len(), 1);
    let mail = &received[0];
    assert_eq!(mail.id, queued);
    assert_eq!(mail.envelope_from, "hub@clm.example");
    assert_eq!(mail.recipients, ["one@example.com", "Two@Example.com"]);
    assert_eq!(
        mail.raw,
        sent.as_bytes(),
        "dot-unstuffed, as the client meant it"
    );
    assert!(mail.answered);
    assert_eq!(mail.authenticated_as, None);
    assert_eq!(
        mail.subject.as_deref(),
        Some("=?utf-8?b?0J/RgNC40LLQtdGC?=")
    );
    assert_eq!(mail.message_id.as_deref(), Some("<m-1@clm.example>"));
    assert_eq!(mail.from.as_deref(), Some("Hub <hub@clm.example>"));
    assert_eq!(mail.to.as_deref(), Some("<one@example.com>"));
    assert_eq!(
        mail.list_unsubscribe.as_deref(),
        Some("<https://hub.example/unsubscribe/t0k>")
    );
    assert_eq!(
        mail.list_unsubscribe_post.as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(mail.dkim_signature);
    assert_eq!(
        mail.header("dkim-signature"),
        Some("v=1; a=rsa-sha256; d=clm.example; s=s1;\tb=abc"),
        "unfolded"
    );
    assert_eq!(
        mail.body(),
        b".a line that starts with a dot\r\n.\r\n..\r\nlast line\r\n"
    );

    let stats = mock.stats();
    assert_eq!((stats.connections, stats.messages_accepted), (1, 1));
    assert_eq!(stats.messages_hung, 0);
    mock.shutdown().await;
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let mock = start().await;
    let mut client = Client::connect_ehlo(&mock).await;
    // The whole envelope in one write, as a PIPELINING client sends it.
    client
        .write(b"MAIL FROM:<a@clm.example>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
        .await;
    for code in [250, 250, 250, 354] {
        assert_eq!(client.reply().await.code, code);
    }
    // The end of one message and the next envelope in one write.
    let mut batch = message("<p-1@clm.example>", "one").into_bytes();
    batch.extend_from_slice(
        b".\r\nMAIL FROM:<a@clm.example>\r\nRCPT TO:<d@example.com>\r\nDATA\r\n",
    );
    client.write(&batch).await;
    for code in [250, 250, 250, 354] {
        assert_eq!(client.reply().await.code, code);
    }
    let mut batch = message("<p-2@clm.example>", "two").into_bytes();
    batch.extend_from_slice(b".\r\nQUIT\r\n");
    client.write(&batch).await;
    assert_eq!(client.reply().await.code, 250);
    assert_eq!(client.reply().await.code, 221);

    let received = mock.received();
    let ids: Vec<_> = received
        .iter()
        .map(|m| m.message_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["<p-1@clm.example>", "<p-2@clm.example>"]);
    assert_eq!(received[0].recipients, ["b@example.com", "c@example.com"]);
    assert_eq!(received[1].recipients, ["d@example.com"]);
    assert_eq!(
        received[1].raw,
        message("<p-2@clm.example>", "two").as_bytes()
    );
}

#[tokio::test]
async fn wrong_sequences_and_syntax_get_5xx_and_the_session_goes_on() {
    let mock = start().await;
    let mut client = Client::connect(&mock).await;
    client.expect("MAIL FROM:<a@clm.example>", 503).await;
    client.expect("EHLO", 501).await;
    let reply = client.expect("EHLO client.example", 250).await;
    assert_eq!(reply.lines[0], "smtp.clm-mocks.invalid");
    let reply = client.expect("RCPT TO:<b@example.com>", 503).await;
    assert!(
        reply.text().starts_with("5.5.1"),
        "enhanced codes after EHLO: {reply:?}"
    );
    client.expect("DATA", 503).await;
    client.expect("MAIL FROM:a@clm.example", 501).await;
    client
        .expect("MAIL FROM:<a@clm.example> FOO=BAR", 555)
        .await;
    client
        .expect("MAIL FROM:<a@clm.example> BODY=BINARYMIME", 501)
        .await;
    client.expect("MAIL FROM:<иван@пример.рф>", 553).await;
    client.expect("MAIL FROM:<>", 250).await;
    client.expect("MAIL FROM:<a@clm.example>", 503).await;
    client.expect("RCPT TO:<>", 501).await;
    client.expect("RCPT TO:<no-domain>", 501).await;
    client
        .expect("RCPT TO:<b@example.com> NOTIFY=NEVER", 555)
        .await;
    client.expect("DATA", 554).await;
    client.expect("DATA now", 554).await;
    client.expect("RSET", 250).await;
    client.expect("FROB", 500).await;
    client.expect("STARTTLS", 502).await;
    client.expect("VRFY b@example.com", 252).await;
    client.expect("NOOP", 250).await;
    client
        .expect(
            "MAIL FROM:<иван@пример.рф> SMTPUTF8 BODY=8BITMIME SIZE=100",
            250,
        )
        .await;
    client.expect("RCPT TO:<пётр@пример.рф>", 250).await;
    let reply = client.data(&message("<u-1@clm.example>", "utf8")).await;
    assert_eq!(reply.code, 250);
    // HELO: the same errors, without enhanced status codes.
    client.expect("HELO client.example", 250).await;
    let reply = client.expect("RCPT TO:<b@example.com>", 503).await;
    assert!(
        !reply.text().starts_with("5.5.1"),
        "no enhanced codes after HELO: {reply:?}"
    );
    client.expect("QUIT", 221).await;

    let received = mock.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].envelope_from, "иван@пример.рф");
    assert_eq!(received[0].recipients, ["пётр@пример.рф"]);
}

#[tokio::test]
async fn the_null_sender_and_a_lone_dot_after_a_bare_lf() {
    let mock = start().await;
    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("MAIL FROM:<>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 250).await;
    client.expect("DATA", 354).await;
    // "\n.\r\n" is no end of data: only CRLF "." CRLF is.
    client
        .write(b"Subject: bounce\r\n\r\nline\n.\r\nmore\r\n.\r\n")
        .await;
    assert_eq!(client.reply().await.code, 250);
    let mail = &mock.received()[0];
    assert_eq!(mail.envelope_from, "");
    assert_eq!(mail.raw, b"Subject: bounce\r\n\r\nline\n\r\nmore\r\n");
}

#[tokio::test]
async fn limits_of_lines_size_and_recipients_are_5xx() {
    let config = SmtpMockConfig {
        max_message_size: 300,
        max_line_length: 100,
        max_recipients: 2,
        ..SmtpMockConfig::default()
    };
    let mock = start_with(config).await;
    let mut client = Client::connect_ehlo(&mock).await;

    let long_command = format!("NOOP {}", "x".repeat(600));
    let reply = client.expect(&long_command, 500).await;
    assert!(reply.text().contains("too long"), "{reply:?}");
    client.expect("NOOP", 250).await;

    let reply = client
        .expect("MAIL FROM:<a@clm.example> SIZE=301", 552)
        .await;
    assert!(reply.text().starts_with("5.3.4"), "{reply:?}");

    client
        .expect("MAIL FROM:<a@clm.example> SIZE=200", 250)
        .await;
    client.expect("RCPT TO:<b@example.com>", 250).await;
    client.expect("RCPT TO:<c@example.com>", 250).await;
    let reply = client.expect("RCPT TO:<d@example.com>", 452).await;
    assert!(reply.text().starts_with("4.5.3"), "{reply:?}");
    let too_big = format!("Subject: big\r\n\r\n{}", "0123456789\r\n".repeat(40));
    let reply = client.data(&too_big).await;
    assert_eq!(reply.code, 552, "{reply:?}");
    assert!(reply.text().starts_with("5.3.4"), "{reply:?}");

    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 250).await;
    let long_line = format!("Subject: long\r\n\r\n{}\r\n", "y".repeat(150));
    let reply = client.data(&long_line).await;
    assert_eq!(reply.code, 500, "{reply:?}");
    assert!(reply.text().starts_with("5.5.2"), "{reply:?}");

    // The session is still fine, and a message within the limits passes.
    let reply = client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            "Subject: ok\r\n\r\nfine\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(mock.received().len(), 1);
    let stats = mock.stats();
    assert_eq!(stats.rejected_end_of_data, 2);
    assert_eq!(stats.rejected_rcpt, 1);
}

#[tokio::test]
async fn shutdown_says_421_to_open_sessions() {
    let mock = start().await;
    let mut client = Client::connect_ehlo(&mock).await;
    let shutdown = tokio::spawn(mock.shutdown());
    match client.read_reply(WAIT).await {
        Outcome::Reply(reply) => assert_eq!(reply.code, 421, "{reply:?}"),
        other => panic!("expected 421, got {other:?}"),
    }
    shutdown.await.unwrap();
}
