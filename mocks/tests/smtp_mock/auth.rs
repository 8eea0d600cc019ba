//! `AUTH PLAIN` and `AUTH LOGIN` (RFC 4954): advertised only with credentials, required before
//! `MAIL` then, `235` / `535 5.7.8`.

use clm_mocks::{Credentials, SmtpMock, SmtpMockConfig};

use crate::harness::{Client, message, start, start_with};

fn b64(text: &str) -> String {
    use std::fmt::Write;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let _ = write!(
                    out,
                    "{}",
                    char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize])
                );
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn with_credentials() -> SmtpMock {
    start_with(SmtpMockConfig {
        credentials: Some(Credentials {
            username: "relay-user".into(),
            password: "relay-pa55".into(),
        }),
        ..SmtpMockConfig::default()
    })
    .await
}

#[tokio::test]
async fn auth_plain_is_required_and_checked() {
    let mock = with_credentials().await;
    let mut client = Client::connect(&mock).await;
    let ehlo = client.expect("EHLO client.example", 250).await;
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );

    let reply = client.expect("MAIL FROM:<a@clm.example>", 530).await;
    assert!(reply.text().starts_with("5.7.0"), "{reply:?}");
    let wrong = b64("\0relay-user\0wrong");
    let reply = client.expect(&format!("AUTH PLAIN {wrong}"), 535).await;
    assert!(reply.text().starts_with("5.7.8"), "{reply:?}");
    let right = b64("\0relay-user\0relay-pa55");
    let reply = client.expect(&format!("AUTH PLAIN {right}"), 235).await;
    assert!(reply.text().starts_with("2.7.0"), "{reply:?}");
    client.expect(&format!("AUTH PLAIN {right}"), 503).await;

    let reply = client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            &message("<a-1@clm.example>", "x"),
        )
        .await;
    assert_eq!(reply.code, 250);
    assert_eq!(
        mock.received()[0].authenticated_as.as_deref(),
        Some("relay-user")
    );
    let stats = mock.stats();
    assert_eq!((stats.auth_succeeded, stats.auth_failed), (1, 1));
}

#[tokio::test]
async fn auth_login_and_plain_without_initial_response_answer_challenges() {
    let mock = with_credentials().await;

    let mut client = Client::connect_ehlo(&mock).await;
    let reply = client.expect("AUTH LOGIN", 334).await;
    assert_eq!(reply.text(), "VXNlcm5hbWU6", "Username:");
    let reply = client.expect(&b64("relay-user"), 334).await;
    assert_eq!(reply.text(), "UGFzc3dvcmQ6", "Password:");
    client.expect(&b64("relay-pa55"), 235).await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;

    let mut client = Client::connect_ehlo(&mock).await;
    client
        .expect(&format!("AUTH LOGIN {}", b64("relay-user")), 334)
        .await;
    client.expect(&b64("not-it"), 535).await;

    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("AUTH PLAIN", 334).await;
    client.expect(&b64("\0relay-user\0relay-pa55"), 235).await;

    let mut client = Client::connect_ehlo(&mock).await;
    client.expect("AUTH PLAIN", 334).await;
    client.expect("*", 501).await;
    client.expect("AUTH PLAIN not-base64!", 501).await;
    client.expect("AUTH CRAM-MD5", 504).await;
    client.expect("AUTH", 501).await;
    client.expect("MAIL FROM:<a@clm.example>", 530).await;

    let stats = mock.stats();
    assert_eq!((stats.auth_succeeded, stats.auth_failed), (2, 1));
}

#[tokio::test]
async fn without_credentials_there_is_no_auth() {
    let mock = start().await;
    let mut client = Client::connect(&mock).await;
    let ehlo = client.expect("EHLO client.example", 250).await;
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "{ehlo:?}"
    );
    client
        .expect(&format!("AUTH PLAIN {}", b64("\0u\0p")), 503)
        .await;
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
}
