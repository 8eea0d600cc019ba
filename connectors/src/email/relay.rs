//! The SMTP dialogue with the relay (RFC 5321), one step at a time, so that every failure knows
//! its [`Stage`]: lettre's `AsyncSmtpConnection` sends the commands; this file decides what each
//! answer means for the connection and keeps the idle ones.
//!
//! Session: connect (implicit TLS, or plain then `STARTTLS` when required: RFC 3207), EHLO,
//! `AUTH PLAIN`/`LOGIN` (RFC 4954) when configured. Transaction, one per message and recipient:
//! `MAIL FROM`, `RCPT TO`, `DATA`, the content, the final `.`.
//!
//! Pool: up to `pool_size` idle sessions, newest first, none older than [`IDLE_MAX`]. A session
//! goes back to the pool after a completed transaction, or after a refused one once `RSET`
//! (RFC 5321 §4.1.1.5) was accepted; it is dropped after a broken connection, a timeout or a
//! `421`. A pooled session the relay has meanwhile closed fails at `MAIL`, before anything of the
//! message went out: then the next idle session, or a new one, carries the message.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Quit, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

use super::classify::{Failure, Reply, Stage};
use super::{EmailBuildError, Security, SmtpConfig};

/// Idle sessions older than this are closed rather than reused: relays drop idle clients after
/// a minute or a few (Postfix `smtpd_timeout` 300 s), and a dead session costs a round trip.
pub(crate) const IDLE_MAX: Duration = Duration::from_secs(60);

/// How long a `QUIT` to a session we no longer need may take.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// The relay of the e-mail channel and its idle sessions.
pub(crate) struct Relay {
    host: String,
    port: u16,
    security: Security,
    tls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
    connect_timeout: Duration,
    command_timeout: Duration,
    pool_size: usize,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("auth", &self.credentials.is_some())
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

type StageFailure = (Stage, Failure);

impl Relay {
    pub fn new(config: &SmtpConfig) -> Result<Self, EmailBuildError> {
        let host = config.host.trim();
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(EmailBuildError::Host(
                "must be a host name or an IP address".into(),
            ));
        }
        if config.port == 0 {
            return Err(EmailBuildError::Port);
        }
        if config.connect_timeout.is_zero() {
            return Err(EmailBuildError::Timeout {
                setting: "connect_timeout",
            });
        }
        if config.command_timeout.is_zero() {
            return Err(EmailBuildError::Timeout {
                setting: "command_timeout",
            });
        }
        let hello = hello_name(&config.hello_name).map_err(EmailBuildError::HelloName)?;
        let credentials = match &config.auth {
            None => None,
            Some((user, password)) => {
                if user.trim().is_empty() || password.is_empty() {
                    return Err(EmailBuildError::Auth(
                        "username and password must not be empty".into(),
                    ));
                }
                Some(Credentials::new(user.clone(), password.clone()))
            }
        };
        let tls = match config.security {
            Security::Plain => {
                if let Some(path) = &config.ca_file {
                    return Err(EmailBuildError::CaFile {
                        path: path.clone(),
                        problem:
                            "has no effect with security `plain`; use STARTTLS or implicit TLS"
                                .into(),
                    });
                }
                None
            }
            Security::StartTlsRequired | Security::Implicit => {
                let mut builder = TlsParameters::builder(host.to_owned());
                if let Some(path) = &config.ca_file {
                    builder = builder.add_root_certificate(ca_certificates(path)?);
                }
                Some(
                    builder
                        .build_rustls()
                        .map_err(|e| EmailBuildError::Tls(e.to_string()))?,
                )
            }
        };
        Ok(Relay {
            host: host.to_owned(),
            port: config.port,
            security: config.security,
            tls,
            credentials,
            hello,
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            pool_size: config.pool_size,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub fn idle_connections(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// One transaction: `from` → `to` with `message`. `Ok` is the relay's 2xx to the final `.`.
    pub async fn deliver(
        &self,
        from: &Address,
        to: &Address,
        message: &[u8],
    ) -> Result<Reply, StageFailure> {
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                None => (self.open().await?, false),
            };
            match self.transaction(&mut conn, from, to, message).await {
                Ok(reply) => {
                    self.checkin(conn);
                    return Ok(reply);
                }
                // The relay closed the idle session (a dead socket, or `421 4.4.2 timeout`)
                // before MAIL was taken: nothing of the message went out. Take the next one.
                Err((Stage::Mail, failure)) if reused && failure.ends_connection() => {
                    tracing::debug!(?failure, "pooled SMTP session was gone; reconnecting");
                }
                Err((stage, failure)) => {
                    if !failure.ends_connection() && self.reset(&mut conn).await {
                        self.checkin(conn);
                    }
                    return Err((stage, failure));
                }
            }
        }
    }

    /// A new session: connect, TLS, EHLO, AUTH.
    async fn open(&self) -> Result<AsyncSmtpConnection, StageFailure> {
        let implicit = match self.security {
            Security::Implicit => self.tls.clone(),
            _ => None,
        };
        let connect = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.connect_timeout),
            &self.hello,
            implicit,
            None,
        );
        // The TCP connect has `connect_timeout`; TLS, the greeting and EHLO one command more.
        let mut conn = match tokio::time::timeout(
            self.connect_timeout + self.command_timeout,
            connect,
        )
        .await
        {
            Err(_) => return Err((Stage::Connect, Failure::Timeout)),
            Ok(Err(e)) => return Err((Stage::Connect, failure_of(&e))),
            Ok(Ok(conn)) => conn,
        };
        if self.security == Security::StartTlsRequired {
            if !conn.can_starttls() {
                // Never fall back to clear text when TLS is required (RFC 3207 §4.1 leaves it to
                // the client's policy; ours is: no TLS, no message).
                abort(conn);
                return Err((
                    Stage::Connect,
                    Failure::Unsupported(
                        "the relay does not offer STARTTLS and security is starttls_required"
                            .into(),
                    ),
                ));
            }
            let tls = self
                .tls
                .clone()
                .expect("TLS parameters exist with STARTTLS");
            match tokio::time::timeout(self.command_timeout, conn.starttls(tls, &self.hello)).await
            {
                Err(_) => return Err((Stage::Connect, Failure::Timeout)),
                Ok(Err(e)) => return Err((Stage::Connect, failure_of(&e))),
                Ok(Ok(())) => {}
            }
        }
        if let Some(credentials) = &self.credentials {
            const MECHANISMS: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];
            if conn.server_info().get_auth_mechanism(&MECHANISMS).is_none() {
                abort(conn);
                return Err((
                    Stage::Auth,
                    Failure::Unsupported(
                        "the relay offers no AUTH PLAIN or LOGIN (after TLS, if any)".into(),
                    ),
                ));
            }
            match tokio::time::timeout(self.command_timeout, conn.auth(&MECHANISMS, credentials))
                .await
            {
                Err(_) => return Err((Stage::Auth, Failure::Timeout)),
                Ok(Err(e)) => return Err((Stage::Auth, failure_of(&e))),
                // RFC 4954 §6: 235 2.7.0 Authentication successful.
                Ok(Ok(r)) if r.code().severity as u8 == 2 => {}
                Ok(Ok(r)) => return Err((Stage::Auth, Failure::Reply(reply_of(&r)))),
            }
        }
        Ok(conn)
    }

    async fn transaction(
        &self,
        conn: &mut AsyncSmtpConnection,
        from: &Address,
        to: &Address,
        message: &[u8],
    ) -> Result<Reply, StageFailure> {
        let info = conn.server_info();
        let mut params = Vec::new();
        // RFC 6531: a non-ASCII mailbox needs SMTPUTF8 (lettre's message itself is 7-bit).
        if !AsRef::<str>::as_ref(from).is_ascii() || !AsRef::<str>::as_ref(to).is_ascii() {
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return Err((
                    Stage::Mail,
                    Failure::Unsupported(
                        "the relay does not support SMTPUTF8 (non-ASCII address)".into(),
                    ),
                ));
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        // RFC 6152: 8-bit content needs 8BITMIME (not the case for lettre's encodings).
        if !message.is_ascii() {
            if !info.supports_feature(Extension::EightBitMime) {
                return Err((
                    Stage::Mail,
                    Failure::Unsupported("the relay does not support 8BITMIME".into()),
                ));
            }
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        self.step(conn, Stage::Mail, Mail::new(Some(from.clone()), params), 2)
            .await?;
        self.step(conn, Stage::Rcpt, Rcpt::new(to.clone(), Vec::new()), 2)
            .await?;
        // RFC 5321 §4.1.1.4: 354, then the content.
        self.step(conn, Stage::Data, Data, 3).await?;

        // Set once every byte before the final "." is written: from then on the relay may have
        // the message, and only its reply says whether it does.
        let content_written = AtomicBool::new(false);
        let parts = std::iter::once(message).chain(std::iter::from_fn(|| {
            content_written.store(true, Ordering::SeqCst);
            None
        }));
        let result = tokio::time::timeout(self.command_timeout, conn.message_iter(parts)).await;
        let stage = if content_written.load(Ordering::SeqCst) {
            Stage::EndOfData
        } else {
            Stage::Content
        };
        match result {
            Err(_) => Err((stage, Failure::Timeout)),
            Ok(Err(e)) => Err((stage, failure_of(&e))),
            Ok(Ok(r)) if r.code().severity as u8 == 2 => Ok(reply_of(&r)),
            Ok(Ok(r)) => Err((stage, Failure::Reply(reply_of(&r)))),
        }
    }

    /// One command; `Ok` when the reply's first digit is `class`.
    async fn step<C: std::fmt::Display>(
        &self,
        conn: &mut AsyncSmtpConnection,
        stage: Stage,
        command: C,
        class: u8,
    ) -> Result<Reply, StageFailure> {
        match tokio::time::timeout(self.command_timeout, conn.command(command)).await {
            Err(_) => Err((stage, Failure::Timeout)),
            Ok(Err(e)) => Err((stage, failure_of(&e))),
            Ok(Ok(r)) if r.code().severity as u8 == class => Ok(reply_of(&r)),
            Ok(Ok(r)) => Err((stage, Failure::Reply(reply_of(&r)))),
        }
    }

    /// `RSET` after a refused transaction; whether the session can carry the next one.
    async fn reset(&self, conn: &mut AsyncSmtpConnection) -> bool {
        matches!(
            tokio::time::timeout(self.command_timeout, conn.command(Rset)).await,
            Ok(Ok(r)) if r.code().severity as u8 == 2
        )
    }

    fn checkout(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().ok()?;
        let fresh = idle.pop()?;
        if fresh.since.elapsed() > IDLE_MAX {
            // The newest is too old, so are the others (idle is ordered by check-in).
            idle.clear();
            return None;
        }
        Some(fresh.conn)
    }

    fn checkin(&self, conn: AsyncSmtpConnection) {
        let rejected = match self.idle.lock() {
            Ok(mut idle) if idle.len() < self.pool_size && !conn.has_broken() => {
                idle.push(Idle {
                    conn,
                    since: Instant::now(),
                });
                None
            }
            _ => Some(conn),
        };
        if let Some(conn) = rejected {
            quit(conn);
        }
    }
}

/// `QUIT` in the background (RFC 5321 §4.1.1.10), bounded; the caller does not wait.
fn quit(mut conn: AsyncSmtpConnection) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.command(Quit)).await;
        });
    }
}

/// Closes a session we will not use, politely when it still works.
fn abort(conn: AsyncSmtpConnection) {
    quit(conn);
}

/// The EHLO argument: a domain, or an address literal for an IP (RFC 5321 §4.1.3).
fn hello_name(name: &str) -> Result<ClientId, String> {
    let name = name.trim();
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(v4) => ClientId::Ipv4(v4),
            IpAddr::V6(v6) => ClientId::Ipv6(v6),
        });
    }
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if valid {
        Ok(ClientId::Domain(name.to_owned()))
    } else {
        Err(
            "must be this host's domain name (ASCII letters, digits, `-`, `_`, `.`) or an IP address"
                .into(),
        )
    }
}

fn ca_certificates(path: &std::path::Path) -> Result<Certificate, EmailBuildError> {
    let err = |problem: String| EmailBuildError::CaFile {
        path: path.to_owned(),
        problem,
    };
    let pem = std::fs::read(path).map_err(|e| err(format!("cannot read it ({e})")))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(err("holds no PEM certificate".into()));
    }
    Certificate::from_pem(&pem).map_err(|e| err(format!("unreadable certificates ({e})")))
}

fn reply_of(r: &Response) -> Reply {
    let text = r.message().collect::<Vec<_>>().join(" ");
    Reply::new(u16::from(r.code()), &text)
}

/// A lettre error as a [`Failure`]: a negative reply keeps its code and text, the rest is a
/// broken session (its text: lettre's error chain, which names no address).
fn failure_of(e: &lettre::transport::smtp::Error) -> Failure {
    if let Some(code) = e.status() {
        let text = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        return Failure::Reply(Reply::new(u16::from(code), &text));
    }
    if e.is_timeout() {
        return Failure::Timeout;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    Failure::Broken(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_names_are_domains_or_address_literals() {
        assert_eq!(
            hello_name("clm-hub.example.ru").unwrap().to_string(),
            "clm-hub.example.ru"
        );
        assert_eq!(hello_name("10.0.0.7").unwrap().to_string(), "[10.0.0.7]");
        assert_eq!(hello_name("::1").unwrap().to_string(), "[IPv6:::1]");
        assert!(hello_name("").is_err());
        assert!(hello_name("a b").is_err());
        assert!(hello_name("хаб.рф").is_err());
    }
}
