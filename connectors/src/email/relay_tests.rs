//! The TLS paths (STARTTLS and implicit TLS, with a private CA from `ca_file`), AUTH and the
//! pool's recovery from a session the relay closed, against a small scripted SMTP server:
//! smtp-sink (tests/smtp_sink.rs) speaks no TLS.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::testutil;
use super::{EmailConnector, Security, SmtpConfig};
use crate::{Connector, Outcome};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the scripted relay saw: each command, `tls:` marking those that came encrypted.
type Seen = Arc<Mutex<Vec<String>>>;

struct Script {
    implicit_tls: bool,
    offer_starttls: bool,
    /// Reply to `AUTH`.
    auth_reply: &'static str,
    /// Close the session after this many messages, without a word (an idle timeout).
    hang_up_after: Option<usize>,
}

struct Pki {
    dir: tempfile::TempDir,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    crate::install_crypto_provider();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &*ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    Pki {
        dir,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

/// Serves `script` on a loopback port, session after session.
async fn scripted_relay(script: Script, acceptor: tokio_rustls::TlsAcceptor) -> (u16, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Seen::default();
    let script = Arc::new(script);
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (script, acceptor, log) = (script.clone(), acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let _ = session(tcp, &script, acceptor, &log).await;
            });
        }
    });
    (port, seen)
}

async fn session(
    tcp: tokio::net::TcpStream,
    script: &Script,
    acceptor: tokio_rustls::TlsAcceptor,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut tls = script.implicit_tls;
    let io: Box<dyn Io> = if tls {
        Box::new(acceptor.accept(tcp).await?)
    } else {
        Box::new(tcp)
    };
    let mut io = BufReader::new(io);
    io.write_all(b"220 scripted ESMTP\r\n").await?;
    io.flush().await?;
    let mut delivered = 0;
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_owned();
        let verb = cmd
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        log.lock()
            .unwrap()
            .push(format!("{}{verb}", if tls { "tls:" } else { "" }));
        let reply: String = match verb.as_str() {
            "EHLO" => {
                let mut r = String::from("250-scripted\r\n");
                if script.offer_starttls && !tls {
                    r.push_str("250-STARTTLS\r\n");
                }
                r.push_str("250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN\r\n");
                r
            }
            "STARTTLS" => {
                io.write_all(b"220 2.0.0 Ready to start TLS\r\n").await?;
                io.flush().await?;
                let inner = io.into_inner();
                let upgraded: Box<dyn Io> = Box::new(acceptor.accept(inner).await?);
                io = BufReader::new(upgraded);
                tls = true;
                continue;
            }
            "AUTH" => format!("{}\r\n", script.auth_reply),
            "MAIL" if script.hang_up_after == Some(delivered) => return Ok(()),
            "MAIL" | "RCPT" | "RSET" => "250 2.1.0 Ok\r\n".into(),
            "DATA" => {
                io.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                io.flush().await?;
                loop {
                    let mut l = String::new();
                    if io.read_line(&mut l).await? == 0 {
                        return Ok(());
                    }
                    if l == ".\r\n" {
                        break;
                    }
                }
                delivered += 1;
                "250 2.0.0 Ok: queued as SCRIPTED\r\n".into()
            }
            "QUIT" => {
                io.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Error: command not recognized\r\n".into(),
        };
        io.write_all(reply.as_bytes()).await?;
        io.flush().await?;
    }
}

fn tls_config(port: u16, security: Security, pki: &Pki) -> SmtpConfig {
    SmtpConfig {
        host: "localhost".into(),
        security,
        ca_file: Some(pki.dir.path().join("ca.pem")),
        auth: Some(("clm".into(), "secret".into())),
        ..testutil::config("localhost", port)
    }
}

fn script() -> Script {
    Script {
        implicit_tls: false,
        offer_starttls: true,
        auth_reply: "235 2.7.0 Authentication successful",
        hang_up_after: None,
    }
}

#[tokio::test]
async fn starttls_with_a_private_ca_then_auth_then_the_message() {
    let pki = pki();
    let (port, seen) = scripted_relay(script(), pki.acceptor.clone()).await;
    let c = EmailConnector::new(tls_config(port, Security::StartTlsRequired, &pki), None).unwrap();
    let o = c.send(&testutil::comm("ivan@example.ru")).await;
    assert!(matches!(o, Outcome::Sent { .. }), "{o:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "EHLO", "STARTTLS", "tls:EHLO", "tls:AUTH", "tls:MAIL", "tls:RCPT", "tls:DATA"
        ]
    );
}

#[tokio::test]
async fn implicit_tls_from_the_first_byte() {
    let pki = pki();
    let s = Script {
        implicit_tls: true,
        offer_starttls: false,
        ..script()
    };
    let (port, seen) = scripted_relay(s, pki.acceptor.clone()).await;
    let c = EmailConnector::new(tls_config(port, Security::Implicit, &pki), None).unwrap();
    let o = c.send(&testutil::comm("ivan@example.ru")).await;
    assert!(matches!(o, Outcome::Sent { .. }), "{o:?}");
    assert!(
        seen.lock().unwrap().iter().all(|c| c.starts_with("tls:")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_relay_certificate_from_an_unknown_ca_is_refused_and_retried() {
    let pki = pki();
    let (port, seen) = scripted_relay(script(), pki.acceptor.clone()).await;
    let mut config = tls_config(port, Security::StartTlsRequired, &pki);
    config.ca_file = None;
    let c = EmailConnector::new(config, None).unwrap();
    let o = c.send(&testutil::comm("ivan@example.ru")).await;
    let Outcome::Retry { answer, .. } = &o else {
        panic!("{o:?}")
    };
    assert!(answer.contains("UnknownIssuer"), "{answer}");
    assert!(
        !seen.lock().unwrap().iter().any(|c| c.ends_with("AUTH")),
        "credentials never go to an unverified relay: {seen:?}"
    );
}

#[tokio::test]
async fn rejected_credentials_retry() {
    let pki = pki();
    let s = Script {
        auth_reply: "535 5.7.8 Error: authentication failed",
        ..script()
    };
    let (port, _) = scripted_relay(s, pki.acceptor.clone()).await;
    let c = EmailConnector::new(tls_config(port, Security::StartTlsRequired, &pki), None).unwrap();
    let o = c.send(&testutil::comm("ivan@example.ru")).await;
    let Outcome::Retry { reason, answer, .. } = &o else {
        panic!("{o:?}")
    };
    assert!(reason.contains("credentials"), "{reason}");
    assert!(answer.starts_with("535 5.7.8"), "{answer}");
}

#[tokio::test]
async fn a_pooled_session_the_relay_closed_is_replaced_without_failing_the_message() {
    let pki = pki();
    let s = Script {
        hang_up_after: Some(1),
        ..script()
    };
    let (port, seen) = scripted_relay(s, pki.acceptor.clone()).await;
    let c = EmailConnector::new(tls_config(port, Security::StartTlsRequired, &pki), None).unwrap();
    for _ in 0..2 {
        let o = c.send(&testutil::comm("ivan@example.ru")).await;
        assert!(matches!(o, Outcome::Sent { .. }), "{o:?}");
    }
    let ehlos = seen.lock().unwrap().iter().filter(|c| *c == "EHLO").count();
    assert_eq!(ehlos, 2, "the second message needed a new session");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
