//! lettre, a real SMTP client (the one the e-mail connector uses), against the mock: AUTH,
//! Cyrillic headers, dot-stuffing, and how its errors look for each fault.
//!
//! Note: the `timeout` of lettre's tokio transport bounds the connect only; a relay that never
//! answers after the final `.` is noticed by a timeout around the send (as here).

use std::time::Duration;

use clm_mocks::{Credentials, SmtpFaults, SmtpMock, SmtpMockConfig, SmtpStageFault};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::Error;
use lettre::transport::smtp::authentication::{Credentials as SmtpCredentials, Mechanism};
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::harness::{WAIT, start_with};

fn transport(mock: &SmtpMock) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(mock.port())
        .credentials(SmtpCredentials::new(
            "relay-user".into(),
            "relay-pa55".into(),
        ))
        .authentication(vec![Mechanism::Plain])
        .timeout(Some(WAIT))
        .build()
}

/// Sends `letter` with lettre; the answer must come within [`WAIT`].
async fn send(mock: &SmtpMock, letter: Message) -> Result<Response, Error> {
    tokio::time::timeout(WAIT, transport(mock).send(letter))
        .await
        .expect("lettre got an answer in time")
}

async fn mock() -> SmtpMock {
    start_with(SmtpMockConfig {
        credentials: Some(Credentials {
            username: "relay-user".into(),
            password: "relay-pa55".into(),
        }),
        ..SmtpMockConfig::default()
    })
    .await
}

fn letter(message_id: &str) -> Message {
    let from: Mailbox = "Магазин <news@clm.example>".parse().unwrap();
    let to: Mailbox = "Иван Петров <ivan@example.com>".parse().unwrap();
    Message::builder()
        .from(from)
        .to(to)
        .subject("Скидка 20% только для вас")
        .message_id(Some(message_id.to_owned()))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("List-Unsubscribe"),
            "<https://hub.example/u/t0k>".to_owned(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
            "List-Unsubscribe=One-Click".to_owned(),
        ))
        .multipart(MultiPart::alternative_plain_html(
            "Line one\r\n.line with a leading dot\r\n.\r\nend\r\n".to_owned(),
            "<p><a href=\"https://shop.example/o?x=1\">Скидка</a></p>".to_owned(),
        ))
        .unwrap()
}

#[tokio::test]
async fn lettre_delivers_and_the_mock_records_exactly_what_it_sent() {
    let mock = mock().await;
    let letter = letter("<l-1@clm.example>");
    let response = send(&mock, letter.clone()).await.unwrap();
    assert_eq!(u16::from(response.code()), 250);
    assert!(
        response.first_line().unwrap_or("").contains("queued as"),
        "{response:?}"
    );

    let received = mock.received();
    assert_eq!(received.len(), 1);
    let mail = &received[0];
    // lettre ends the data with CRLF "." CRLF after a message that ends with CRLF already: an
    // empty last line is part of what it sent.
    let mut sent = letter.formatted();
    sent.extend_from_slice(b"\r\n");
    assert_eq!(mail.raw, sent, "byte for byte, dot-stuffing undone");
    assert_eq!(mail.envelope_from, "news@clm.example");
    assert_eq!(mail.recipients, ["ivan@example.com"]);
    assert_eq!(mail.authenticated_as.as_deref(), Some("relay-user"));
    assert_eq!(mail.message_id.as_deref(), Some("<l-1@clm.example>"));
    let subject = mail.subject.as_deref().unwrap();
    assert!(
        subject.starts_with("=?utf-8?"),
        "RFC 2047 encoded: {subject}"
    );
    assert_eq!(
        mail.list_unsubscribe_post.as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert_eq!(
        mail.first_link().as_deref(),
        Some("https://shop.example/o?x=1")
    );
}

#[tokio::test]
async fn lettre_sees_each_fault_as_the_connector_must_classify_it() {
    let mock = mock().await;

    mock.set_faults(SmtpFaults {
        rcpt: Some(SmtpStageFault::user_unknown()),
        ..SmtpFaults::default()
    });
    let error = send(&mock, letter("<l-2@clm.example>")).await.unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert_eq!(error.status().map(u16::from), Some(550));
    assert!(error.to_string().contains("5.1.1"), "{error}");

    mock.set_faults(SmtpFaults {
        greylist_first: true,
        ..SmtpFaults::default()
    });
    let error = send(&mock, letter("<l-3@clm.example>")).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(error.status().map(u16::from), Some(450));
    send(&mock, letter("<l-3@clm.example>"))
        .await
        .expect("the retry passes greylisting");

    mock.set_faults(SmtpFaults {
        end_of_data: Some(SmtpStageFault::policy()),
        ..SmtpFaults::default()
    });
    let error = send(&mock, letter("<l-4@clm.example>")).await.unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert!(error.to_string().contains("5.7.1"), "{error}");

    mock.set_faults(SmtpFaults {
        end_of_data: Some(SmtpStageFault::Hang),
        ..SmtpFaults::default()
    });
    let hung = tokio::time::timeout(
        Duration::from_millis(500),
        transport(&mock).send(letter("<l-5@clm.example>")),
    )
    .await;
    assert!(hung.is_err(), "no answer after the final dot: {hung:?}");
    assert!(mock.wait_for_messages(2, WAIT).await);
    let last = mock.received().pop().unwrap();
    assert_eq!(last.message_id.as_deref(), Some("<l-5@clm.example>"));
    assert!(!last.answered, "taken, never answered");
    mock.shutdown().await;
}
