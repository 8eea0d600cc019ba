//! Shared helpers: started mocks, a raw SMTP client, messages, and a small webhook receiver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clm_mocks::{SmtpMock, SmtpMockConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Generous: nothing here should take long, but a loaded CI machine may be slow.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn start() -> SmtpMock {
    start_with(SmtpMockConfig::default()).await
}

pub async fn start_with(config: SmtpMockConfig) -> SmtpMock {
    SmtpMock::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

/// One SMTP reply: its code and the text of every line (after `code-` / `code `).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of the last line.
    pub fn text(&self) -> &str {
        self.lines.last().map_or("", String::as_str)
    }
}

/// What waiting for a reply came to.
#[derive(Debug)]
pub enum Outcome {
    Reply(Reply),
    /// The server closed the connection.
    Closed,
    /// Nothing came in time.
    TimedOut,
}

/// A raw SMTP client: every command written by hand.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects and reads the greeting, which must be 220.
    pub async fn connect(mock: &SmtpMock) -> Client {
        let stream = TcpStream::connect(mock.addr()).await.unwrap();
        let (read, write) = stream.into_split();
        let mut client = Client {
            reader: BufReader::new(read),
            writer: write,
        };
        let greeting = client.reply().await;
        assert_eq!(greeting.code, 220, "{greeting:?}");
        client
    }

    /// Connects and says `EHLO`.
    pub async fn connect_ehlo(mock: &SmtpMock) -> Client {
        let mut client = Self::connect(mock).await;
        client.expect("EHLO client.example", 250).await;
        client
    }

    /// Writes `bytes` as they are.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// Writes `line` and CRLF.
    pub async fn send(&mut self, line: &str) {
        self.write(format!("{line}\r\n").as_bytes()).await;
    }

    /// The next reply within `within`, or why none came.
    pub async fn read_reply(&mut self, within: Duration) -> Outcome {
        match tokio::time::timeout(within, read_reply(&mut self.reader)).await {
            Ok(Some(reply)) => Outcome::Reply(reply),
            Ok(None) => Outcome::Closed,
            Err(_) => Outcome::TimedOut,
        }
    }

    /// The next reply, which must come.
    pub async fn reply(&mut self) -> Reply {
        match self.read_reply(WAIT).await {
            Outcome::Reply(reply) => reply,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// Sends `line` and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(line).await;
        self.reply().await
    }

    /// Sends `line`; the reply must have `code`.
    pub async fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.cmd(line).await;
        assert_eq!(reply.code, code, "{line} → {reply:?}");
        reply
    }

    /// True when the server closes the connection (within [`WAIT`]) without another reply.
    pub async fn closed(&mut self) -> bool {
        matches!(self.read_reply(WAIT).await, Outcome::Closed)
    }

    /// `DATA`, then `message` dot-stuffed and the final `.`: the reply after it.
    pub async fn data(&mut self, message: &str) -> Reply {
        self.expect("DATA", 354).await;
        self.write(&stuffed(message)).await;
        self.reply().await
    }

    /// A whole transaction that must pass up to `DATA`: the reply after the final `.`.
    pub async fn transaction(&mut self, from: &str, to: &[&str], message: &str) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250).await;
        for to in to {
            self.expect(&format!("RCPT TO:<{to}>"), 250).await;
        }
        self.data(message).await
    }
}

async fn read_reply(reader: &mut BufReader<OwnedReadHalf>) -> Option<Reply> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        assert!(line.len() >= 3, "not a reply line: {line:?}");
        let code: u16 = line[..3].parse().expect("a reply code");
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line.get(4..).unwrap_or("").to_owned());
        if last {
            return Some(Reply { code, lines });
        }
    }
}

/// `message` (CRLF lines) dot-stuffed, with the final `.` line.
pub fn stuffed(message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
    }
    if !message.is_empty() && !message.ends_with("\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A small text message with `message_id` (angle brackets included).
pub fn message(message_id: &str, subject: &str) -> String {
    format!(
        "From: Hub <hub@clm.example>\r\n\
         To: <someone@example.com>\r\n\
         Subject: {subject}\r\n\
         Message-ID: {message_id}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Hello.\r\n"
    )
}

/// One webhook the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Hook {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub answered: u16,
}

impl Hook {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Hooks {
    got: Mutex<Vec<Hook>>,
    /// Statuses the next webhooks get, before 200.
    script: Mutex<VecDeque<u16>>,
}

/// Takes webhooks at `/ingest/email`, as the hub does.
pub struct Receiver {
    addr: std::net::SocketAddr,
    hooks: Arc<Hooks>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let hooks = Arc::new(Hooks::default());
        let app = Router::new()
            .route("/ingest/email", post(take))
            .with_state(hooks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, hooks }
    }

    pub fn url(&self) -> String {
        format!("http://{}/ingest/email", self.addr)
    }

    /// The next webhooks are answered with these statuses, then 200.
    pub fn script(&self, statuses: &[u16]) {
        self.hooks.script.lock().unwrap().extend(statuses);
    }

    /// Every webhook received, whatever it was answered.
    pub fn all(&self) -> Vec<Hook> {
        self.hooks.got.lock().unwrap().clone()
    }

    /// Webhooks answered 2xx.
    pub fn taken(&self) -> Vec<Hook> {
        self.all()
            .into_iter()
            .filter(|h| (200..300).contains(&h.answered))
            .collect()
    }

    /// Waits for `n` webhooks answered 2xx.
    pub async fn wait_for(&self, n: usize) -> Vec<Hook> {
        assert!(
            wait_until(|| self.taken().len() >= n).await,
            "expected {n} webhooks, got {:?}",
            self.all()
        );
        self.taken()
    }
}

async fn take(State(hooks): State<Arc<Hooks>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = hooks.script.lock().unwrap().pop_front().unwrap_or(200);
    hooks.got.lock().unwrap().push(Hook {
        headers,
        body,
        answered: status,
    });
    StatusCode::from_u16(status).unwrap()
}

/// Polls `condition` for up to [`WAIT`].
pub async fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
