//! One SMTP connection: the RFC 5321 dialogue (with ESMTP `PIPELINING`, `SIZE`, `8BITMIME`,
//! `SMTPUTF8`, `ENHANCEDSTATUSCODES` and `AUTH PLAIN LOGIN`), the faults of each stage, and the
//! record and feedback of every message taken.
//!
//! Commands are read one line at a time from a buffered reader and answered in order, which is
//! all pipelining needs. Enhanced status codes (RFC 3463) go to clients that said `EHLO` only.
//! Logs carry queue ids and `Message-ID`s, never addresses or content.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::faults::{Decision, SmtpScriptStep, SmtpStageFault, Stage};
use super::feedback::{Sender, Target};
use super::record::{Counter, ReceivedMail};
use super::state::Shared;
use crate::util::{base64_decode, same};

/// Longest command line, CRLF included (RFC 5321 4.5.3.1.4).
const COMMAND_LINE_MAX: usize = 512;
/// Longest line of an `AUTH` exchange (RFC 4954 4).
const AUTH_LINE_MAX: usize = 12_288;
/// Longest path, angle brackets included (RFC 5321 4.5.3.1.3).
const PATH_MAX: usize = 256;
/// A client that goes quiet this long is told `421` and dropped (RFC 5321 4.5.3.2.7).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest a `hang` fault holds a connection, so held connections cannot pile up forever.
const MAX_HOLD: Duration = Duration::from_secs(300);
/// Errors (syntax, sequence, unknown commands) after which the connection is dropped.
const MAX_ERRORS: u32 = 20;

/// Serves one connection until `QUIT`, the client leaves, a fault or the shutdown ends it.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    shared.recorder.count(Counter::Connections);
    let (read, write) = stream.into_split();
    let mut session = Session {
        reader: BufReader::with_capacity(16 * 1024, read),
        writer: write,
        shared,
        helo: false,
        esmtp: false,
        authenticated: None,
        tx: None,
        errors: 0,
    };
    if let Err(error) = session.run().await {
        tracing::debug!(%error, "smtp mock: connection ended");
    }
}

/// One line read, or why none came.
enum Read {
    /// The line, with its line ending.
    Line(Vec<u8>),
    /// The line was longer than allowed; it was read to its end and dropped.
    TooLong,
    Closed,
    Idle,
    Shutdown,
}

/// Whether the connection goes on.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// What the faults of a stage came to.
enum Applied {
    /// No fault replied: the normal reply follows.
    Proceed,
    /// A fault's reply went out.
    Replied,
    /// Closed by the fault (a disconnect, or after a 421).
    Closed,
    /// A `hang`: nothing may be said any more.
    Hung,
}

/// A mail transaction, from `MAIL FROM` on.
struct Transaction {
    from: String,
    recipients: Vec<String>,
    smtputf8: bool,
    step: SmtpScriptStep,
}

struct Session {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    shared: Arc<Shared>,
    helo: bool,
    /// `EHLO` (not `HELO`): enhanced status codes are sent.
    esmtp: bool,
    authenticated: Option<String>,
    tx: Option<Transaction>,
    errors: u32,
}

impl Session {
    async fn run(&mut self) -> std::io::Result<()> {
        let greeting = format!("220 {} ESMTP clm-mocks", self.shared.hostname);
        self.send_line(&greeting).await?;
        let mut line = Vec::new();
        loop {
            let flow = match self.read_line(&mut line, COMMAND_LINE_MAX).await {
                Read::Line(bytes) => {
                    line = bytes;
                    self.command(&line).await?
                }
                Read::TooLong => self.error(500, "5.5.2", "Error: line too long").await?,
                Read::Closed => Flow::Close,
                Read::Idle => {
                    self.reply(421, "4.4.2", "Error: timeout exceeded").await?;
                    Flow::Close
                }
                Read::Shutdown => {
                    self.reply(421, "4.3.2", "Service shutting down").await?;
                    Flow::Close
                }
            };
            if flow == Flow::Close {
                let _ = self.writer.shutdown().await;
                return Ok(());
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> std::io::Result<Flow> {
        let text = String::from_utf8_lossy(trim_line_end(line)).into_owned();
        let (verb, arg) = match text.split_once(' ') {
            Some((verb, arg)) => (verb.to_ascii_uppercase(), arg.trim()),
            None => (text.trim().to_ascii_uppercase(), ""),
        };
        match verb.as_str() {
            "EHLO" | "HELO" => self.hello(&verb, arg).await,
            "AUTH" => self.auth(arg).await,
            "MAIL" => self.mail(arg).await,
            "RCPT" => self.rcpt(arg).await,
            "DATA" => self.data(arg).await,
            "RSET" => {
                self.tx = None;
                self.reply(250, "2.0.0", "Ok").await?;
                Ok(Flow::Continue)
            }
            "NOOP" => {
                self.reply(250, "2.0.0", "Ok").await?;
                Ok(Flow::Continue)
            }
            "QUIT" => {
                self.reply(221, "2.0.0", "Bye").await?;
                Ok(Flow::Close)
            }
            "VRFY" => {
                self.reply(252, "2.0.0", "Cannot VRFY user, but will accept message")
                    .await?;
                Ok(Flow::Continue)
            }
            "HELP" => {
                self.reply(214, "2.0.0", "See RFC 5321").await?;
                Ok(Flow::Continue)
            }
            "EXPN" | "TURN" | "ETRN" | "ATRN" | "BDAT" | "STARTTLS" => {
                self.error(502, "5.5.1", "Error: command not implemented")
                    .await
            }
            _ => {
                self.error(500, "5.5.2", "Error: command not recognized")
                    .await
            }
        }
    }

    async fn hello(&mut self, verb: &str, arg: &str) -> std::io::Result<Flow> {
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            return self
                .error(501, "5.5.4", &format!("Syntax: {verb} hostname"))
                .await;
        }
        self.tx = None;
        self.helo = true;
        self.esmtp = verb == "EHLO";
        if !self.esmtp {
            let line = format!("250 {}", self.shared.hostname);
            self.pause().await;
            self.send_line(&line).await?;
            return Ok(Flow::Continue);
        }
        let mut lines = vec![
            self.shared.hostname.clone(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.shared.limits.max_message_size),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if self.shared.credentials().is_some() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        self.pause().await;
        let last = lines.len() - 1;
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.push_str(&format!("250{sep}{line}\r\n"));
        }
        self.write_raw(out.as_bytes()).await?;
        Ok(Flow::Continue)
    }

    async fn auth(&mut self, arg: &str) -> std::io::Result<Flow> {
        let Some(credentials) = self.shared.credentials() else {
            return self
                .error(503, "5.5.1", "Error: authentication not enabled")
                .await;
        };
        if !self.helo {
            return self.error(503, "5.5.1", "Error: send EHLO first").await;
        }
        if self.authenticated.is_some() {
            return self
                .error(503, "5.5.1", "Error: already authenticated")
                .await;
        }
        if self.tx.is_some() {
            return self
                .error(503, "5.5.1", "Error: MAIL transaction in progress")
                .await;
        }
        let mut words = arg.split_whitespace();
        let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
        let initial = words.next().map(str::to_owned);
        let (username, password) = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(given) if given == "=" => Vec::new(),
                    Some(given) => match decode(&given) {
                        Some(bytes) => bytes,
                        None => return self.undecodable().await,
                    },
                    None => match self.challenge("").await? {
                        Ok(bytes) => bytes,
                        Err(flow) => return Ok(flow),
                    },
                };
                let mut parts = response.split(|b| *b == 0);
                let (_authzid, user, password) = (parts.next(), parts.next(), parts.next());
                match (user, password, parts.next()) {
                    (Some(user), Some(password), None) => (user.to_vec(), password.to_vec()),
                    _ => return self.auth_failed().await,
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(given) => match decode(&given) {
                        Some(bytes) => bytes,
                        None => return self.undecodable().await,
                    },
                    None => match self.challenge("VXNlcm5hbWU6").await? {
                        Ok(bytes) => bytes,
                        Err(flow) => return Ok(flow),
                    },
                };
                let password = match self.challenge("UGFzc3dvcmQ6").await? {
                    Ok(bytes) => bytes,
                    Err(flow) => return Ok(flow),
                };
                (user, password)
            }
            "" => return self.error(501, "5.5.4", "Syntax: AUTH mechanism").await,
            _ => {
                return self
                    .error(504, "5.5.4", "Unrecognized authentication type")
                    .await;
            }
        };
        // Both compared, whatever the first gave.
        let user_ok = same(&username, credentials.username.as_bytes());
        let password_ok = same(&password, credentials.password.as_bytes());
        if user_ok && password_ok {
            self.shared.recorder.count(Counter::AuthSucceeded);
            self.authenticated = Some(credentials.username.clone());
            self.reply(235, "2.7.0", "Authentication successful")
                .await?;
            Ok(Flow::Continue)
        } else {
            self.auth_failed().await
        }
    }

    /// `334 <challenge>`, then the client's base64 answer decoded. `Err` ends the exchange (the
    /// reply went out, or the connection ends).
    async fn challenge(&mut self, challenge: &str) -> std::io::Result<Result<Vec<u8>, Flow>> {
        self.pause().await;
        self.send_line(&format!("334 {challenge}")).await?;
        let mut line = Vec::new();
        let answer = match self.read_line(&mut line, AUTH_LINE_MAX).await {
            Read::Line(bytes) => bytes,
            Read::TooLong => {
                return Ok(Err(self
                    .error(500, "5.5.6", "Authentication Exchange line is too long")
                    .await?));
            }
            Read::Closed | Read::Idle | Read::Shutdown => return Ok(Err(Flow::Close)),
        };
        let answer = String::from_utf8_lossy(trim_line_end(&answer)).into_owned();
        if answer.trim() == "*" {
            return Ok(Err(self
                .error(501, "5.0.0", "Authentication aborted")
                .await?));
        }
        match decode(answer.trim()) {
            Some(bytes) => Ok(Ok(bytes)),
            None => Ok(Err(self.undecodable().await?)),
        }
    }

    async fn undecodable(&mut self) -> std::io::Result<Flow> {
        self.error(501, "5.5.2", "Cannot decode response").await
    }

    async fn auth_failed(&mut self) -> std::io::Result<Flow> {
        self.shared.recorder.count(Counter::AuthFailed);
        self.error(535, "5.7.8", "Authentication credentials invalid")
            .await
    }

    async fn mail(&mut self, arg: &str) -> std::io::Result<Flow> {
        if !self.helo {
            return self
                .error(503, "5.5.1", "Error: send HELO/EHLO first")
                .await;
        }
        if self.shared.credentials().is_some() && self.authenticated.is_none() {
            return self.error(530, "5.7.0", "Authentication required").await;
        }
        if self.tx.is_some() {
            return self.error(503, "5.5.1", "Error: nested MAIL command").await;
        }
        let Some((from, params)) = parse_path(arg, "FROM:") else {
            return self
                .error(501, "5.5.4", "Syntax: MAIL FROM:<address>")
                .await;
        };
        let mut smtputf8 = false;
        for (key, value) in &params {
            match (key.as_str(), value.as_deref()) {
                ("SIZE", Some(size)) => match size.parse::<u64>() {
                    Ok(size) if size > self.shared.limits.max_message_size as u64 => {
                        return self
                            .error(552, "5.3.4", "Message size exceeds fixed limit")
                            .await;
                    }
                    Ok(_) => {}
                    Err(_) => return self.error(501, "5.5.4", "Bad SIZE parameter").await,
                },
                ("BODY", Some(body))
                    if body.eq_ignore_ascii_case("7BIT")
                        || body.eq_ignore_ascii_case("8BITMIME") => {}
                ("BODY", _) => return self.error(501, "5.5.4", "Bad BODY parameter").await,
                ("SMTPUTF8", None) => smtputf8 = true,
                ("AUTH", Some(_)) => {}
                _ => {
                    return self.error(555, "5.5.4", "Unsupported option").await;
                }
            }
        }
        if !from.is_ascii() && !smtputf8 {
            return self
                .error(
                    553,
                    "5.6.7",
                    "Must declare SMTPUTF8 to send unicode address",
                )
                .await;
        }
        let step = self.shared.begin_transaction();
        self.tx = Some(Transaction {
            from,
            recipients: Vec::new(),
            smtputf8,
            step,
        });
        self.reply(250, "2.1.0", "Ok").await?;
        Ok(Flow::Continue)
    }

    async fn rcpt(&mut self, arg: &str) -> std::io::Result<Flow> {
        let Some(tx) = &self.tx else {
            return self.error(503, "5.5.1", "Error: need MAIL command").await;
        };
        let parsed = parse_path(arg, "TO:");
        let (recipient, params) = match parsed {
            Some((to, params)) if !to.is_empty() && is_mailbox(&to) => (to, params),
            _ => {
                self.shared.recorder.count(Counter::RejectedRcpt);
                return self.error(501, "5.5.4", "Syntax: RCPT TO:<address>").await;
            }
        };
        if !params.is_empty() {
            self.shared.recorder.count(Counter::RejectedRcpt);
            return self.error(555, "5.5.4", "Unsupported option").await;
        }
        if !recipient.is_ascii() && !tx.smtputf8 {
            self.shared.recorder.count(Counter::RejectedRcpt);
            return self
                .error(
                    553,
                    "5.6.7",
                    "Must declare SMTPUTF8 to send unicode address",
                )
                .await;
        }
        if tx.recipients.len() >= self.shared.limits.max_recipients {
            self.shared.recorder.count(Counter::RejectedRcpt);
            self.reply(452, "4.5.3", "Error: too many recipients")
                .await?;
            return Ok(Flow::Continue);
        }
        let decision = self.shared.rcpt_faults(&tx.step, &tx.from, &recipient);
        match self.apply(decision, Counter::RejectedRcpt).await? {
            Applied::Proceed => {}
            Applied::Replied => return Ok(Flow::Continue),
            Applied::Closed => return Ok(Flow::Close),
            Applied::Hung => {
                self.hold().await;
                return Ok(Flow::Close);
            }
        }
        if let Some(tx) = &mut self.tx {
            tx.recipients.push(recipient);
        }
        self.reply(250, "2.1.5", "Ok").await?;
        Ok(Flow::Continue)
    }

    async fn data(&mut self, arg: &str) -> std::io::Result<Flow> {
        let Some(tx) = &self.tx else {
            self.shared.recorder.count(Counter::RejectedData);
            return self.error(503, "5.5.1", "Error: need MAIL command").await;
        };
        if tx.recipients.is_empty() {
            self.shared.recorder.count(Counter::RejectedData);
            return self.error(554, "5.5.1", "Error: no valid recipients").await;
        }
        if !arg.is_empty() {
            self.shared.recorder.count(Counter::RejectedData);
            return self.error(501, "5.5.4", "Syntax: DATA").await;
        }
        let decision = self.shared.stage_faults(&tx.step, Stage::Data);
        match self.apply(decision, Counter::RejectedData).await? {
            Applied::Proceed => {}
            Applied::Replied => return Ok(Flow::Continue),
            Applied::Closed => return Ok(Flow::Close),
            Applied::Hung => {
                self.hold().await;
                return Ok(Flow::Close);
            }
        }
        self.pause().await;
        self.send_line("354 End data with <CR><LF>.<CR><LF>")
            .await?;
        let data = match self.read_data().await {
            Ok(data) => data,
            Err(read) => {
                // The client left (or went quiet, or the mock stops) mid-message: nothing taken.
                if matches!(read, Read::Idle) {
                    self.reply(421, "4.4.2", "Error: timeout exceeded").await?;
                }
                if matches!(read, Read::Shutdown) {
                    self.reply(421, "4.3.2", "Service shutting down").await?;
                }
                return Ok(Flow::Close);
            }
        };
        let Some(tx) = self.tx.take() else {
            return Ok(Flow::Close);
        };
        if data.line_too_long {
            self.shared.recorder.count(Counter::RejectedEndOfData);
            self.reply(500, "5.5.2", "Error: message has a line too long")
                .await?;
            return Ok(Flow::Continue);
        }
        if data.too_big {
            self.shared.recorder.count(Counter::RejectedEndOfData);
            self.reply(552, "5.3.4", "Error: message size exceeds fixed limit")
                .await?;
            return Ok(Flow::Continue);
        }
        let decision = self.shared.stage_faults(&tx.step, Stage::EndOfData);
        let applied = self.apply(decision, Counter::RejectedEndOfData).await?;
        let answered = match applied {
            Applied::Proceed => true,
            Applied::Hung => false,
            Applied::Replied => return Ok(Flow::Continue),
            Applied::Closed => return Ok(Flow::Close),
        };
        let queue_id = new_queue_id();
        let mail = ReceivedMail::new(
            queue_id.clone(),
            tx.from,
            tx.recipients,
            self.authenticated.clone(),
            answered,
            data.raw,
        );
        let feedback = self.shared.feedback();
        let target = Sender::wants(&feedback, &mail.recipients).then(|| Target {
            queue_id: queue_id.clone(),
            message_id: mail.message_id.clone(),
            link: Sender::wants_link(&feedback, &mail.recipients)
                .then(|| mail.first_link())
                .flatten(),
            recipients: mail.recipients.clone(),
        });
        let message_id = mail.message_id.clone().unwrap_or_default();
        // Recorded before the reply, so whoever got the reply finds the record.
        self.shared.recorder.record(mail);
        if answered {
            tracing::debug!(%queue_id, %message_id, "smtp mock: message accepted");
            self.reply(250, "2.0.0", &format!("Ok: queued as {queue_id}"))
                .await?;
        } else {
            tracing::debug!(%queue_id, %message_id, "smtp mock: message taken, reply held (hang)");
        }
        if let Some(target) = target {
            self.shared.sender.schedule(feedback, target);
        }
        if answered {
            Ok(Flow::Continue)
        } else {
            self.hold().await;
            Ok(Flow::Close)
        }
    }

    /// The message after `354`, up to the line `.` after a CRLF: dot-unstuffed, at most
    /// `max_message_size` octets kept (the rest read and dropped, `too_big` set).
    async fn read_data(&mut self) -> Result<Data, Read> {
        let max_size = self.shared.limits.max_message_size;
        let max_line = self.shared.limits.max_line_length;
        let mut data = Data {
            raw: Vec::new(),
            too_big: false,
            line_too_long: false,
        };
        // The line before ended with CRLF (the DATA command did).
        let mut after_crlf = true;
        let mut line = Vec::new();
        loop {
            match self.read_line(&mut line, max_line).await {
                Read::Line(bytes) => {
                    if after_crlf && bytes == b".\r\n" {
                        return Ok(data);
                    }
                    after_crlf = bytes.ends_with(b"\r\n");
                    let unstuffed = bytes.strip_prefix(b".").unwrap_or(&bytes);
                    if data.raw.len() + unstuffed.len() > max_size {
                        data.too_big = true;
                    } else if !data.too_big {
                        data.raw.extend_from_slice(unstuffed);
                    }
                    line = bytes;
                }
                Read::TooLong => {
                    data.line_too_long = true;
                    after_crlf = true;
                }
                other => return Err(other),
            }
        }
    }

    /// Applies a stage's faults: `slow` ones wait, the final one replies, disconnects or hangs.
    /// A reply counts on `rejected`.
    async fn apply(&mut self, decision: Decision, rejected: Counter) -> std::io::Result<Applied> {
        for fault in decision.faults {
            match fault {
                SmtpStageFault::Slow { ms } => {
                    self.shared.recorder.count(Counter::SlowReplies);
                    crate::faults::pause(Duration::from_millis(ms), &self.shared.shutdown).await;
                }
                SmtpStageFault::Reply {
                    code,
                    enhanced,
                    text,
                } => {
                    self.shared.recorder.count(rejected);
                    if decision.greylisted {
                        self.shared.recorder.count(Counter::Greylisted);
                    }
                    self.reply(code, enhanced.as_deref().unwrap_or(""), &text)
                        .await?;
                    if code == 421 {
                        self.shared.recorder.count(Counter::Disconnects);
                        return Ok(Applied::Closed);
                    }
                    return Ok(Applied::Replied);
                }
                SmtpStageFault::Disconnect => {
                    self.shared.recorder.count(Counter::Disconnects);
                    return Ok(Applied::Closed);
                }
                SmtpStageFault::Hang => {
                    self.shared.recorder.count(Counter::Hangs);
                    return Ok(Applied::Hung);
                }
            }
        }
        Ok(Applied::Proceed)
    }

    /// Holds the connection without a word until the client closes it, the mock shuts down or
    /// [`MAX_HOLD`] passed. What the client sends meanwhile is read and ignored.
    async fn hold(&mut self) {
        let shutdown = self.shared.shutdown.clone();
        let reader = &mut self.reader;
        let drain = async {
            let mut buf = [0_u8; 4096];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::select! {
            () = drain => {}
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(MAX_HOLD) => {}
        }
    }

    /// A 4xx/5xx reply to a command that was wrong (syntax, sequence, unknown): counted, and
    /// after [`MAX_ERRORS`] the connection is dropped with `421`.
    async fn error(&mut self, code: u16, enhanced: &str, text: &str) -> std::io::Result<Flow> {
        self.errors += 1;
        if self.errors > MAX_ERRORS {
            self.reply(421, "4.7.0", "Error: too many errors").await?;
            return Ok(Flow::Close);
        }
        self.reply(code, enhanced, text).await?;
        Ok(Flow::Continue)
    }

    /// `code enhanced text` after the injected latency; the enhanced code only after `EHLO`.
    async fn reply(&mut self, code: u16, enhanced: &str, text: &str) -> std::io::Result<()> {
        self.pause().await;
        let line = if self.esmtp && !enhanced.is_empty() {
            format!("{code} {enhanced} {text}")
        } else {
            format!("{code} {text}")
        };
        self.send_line(&line).await
    }

    async fn pause(&self) {
        let latency = self.shared.latency();
        crate::faults::pause(latency, &self.shared.shutdown).await;
    }

    async fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(line.len() + 2);
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.write_raw(&out).await
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    /// The next line into `buf` (cleared first), at most `limit` octets with its line ending.
    async fn read_line(&mut self, buf: &mut Vec<u8>, limit: usize) -> Read {
        let mut bytes = std::mem::take(buf);
        bytes.clear();
        let shutdown = self.shared.shutdown.clone();
        let reader = &mut self.reader;
        tokio::select! {
            () = shutdown.cancelled() => Read::Shutdown,
            read = tokio::time::timeout(IDLE_TIMEOUT, read_limited(reader, bytes, limit)) => {
                read.unwrap_or(Read::Idle)
            }
        }
    }
}

/// The message of a `DATA` phase.
struct Data {
    raw: Vec<u8>,
    too_big: bool,
    line_too_long: bool,
}

/// Reads up to and including `\n`; a line over `limit` is read to its end and dropped.
async fn read_limited(
    reader: &mut BufReader<OwnedReadHalf>,
    mut line: Vec<u8>,
    limit: usize,
) -> Read {
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf().await {
            Ok(available) => available,
            Err(_) => return Read::Closed,
        };
        if available.is_empty() {
            // The client left; a partial line is dropped.
            return Read::Closed;
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(pos) => (pos + 1, true),
            None => (available.len(), false),
        };
        if !too_long && line.len() + take <= limit {
            line.extend_from_slice(&available[..take]);
        } else {
            too_long = true;
            line.clear();
        }
        reader.consume(take);
        if done {
            return if too_long {
                Read::TooLong
            } else {
                Read::Line(line)
            };
        }
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn decode(base64: &str) -> Option<Vec<u8>> {
    base64_decode(base64.as_bytes())
}

/// ESMTP parameters of `MAIL` or `RCPT`: `(KEY, value)`, the key uppercased.
type Params = Vec<(String, Option<String>)>;

/// `FROM:<path> PARAM=VALUE …` (`keyword` case-insensitive, a space after the colon tolerated):
/// the address (empty for `<>`, a source route dropped) and the parameters, keys uppercased.
/// `None` for a syntax error.
fn parse_path(arg: &str, keyword: &str) -> Option<(String, Params)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let path = &rest[..end];
    if path.len() + 2 > PATH_MAX || path.contains(|c: char| c.is_whitespace() || c == '<') {
        return None;
    }
    // A source route (`@a,@b:user@c`) is ignored, as RFC 5321 4.1.2 allows.
    let address = match path.strip_prefix('@') {
        Some(_) => path.split_once(':')?.1,
        None => path,
    };
    let mut params = Vec::new();
    for word in rest[end + 1..].split_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((key, value)) => (key, Some(value.to_owned())),
            None => (word, None),
        };
        if key.is_empty() {
            return None;
        }
        params.push((key.to_ascii_uppercase(), value));
    }
    Some((address.to_owned(), params))
}

/// `local@domain` with both parts, or `postmaster`.
fn is_mailbox(address: &str) -> bool {
    if address.eq_ignore_ascii_case("postmaster") {
        return true;
    }
    address
        .rsplit_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
}

/// A fresh queue id: 10 uppercase hex digits, as Postfix writes them.
fn new_queue_id() -> String {
    format!("{:010X}", rand::random::<u64>() & 0xFF_FFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_parameters() {
        assert_eq!(
            parse_path("FROM:<a@b.example> SIZE=10 body=8BITMIME SMTPUTF8", "FROM:"),
            Some((
                "a@b.example".into(),
                vec![
                    ("SIZE".into(), Some("10".into())),
                    ("BODY".into(), Some("8BITMIME".into())),
                    ("SMTPUTF8".into(), None)
                ]
            ))
        );
        assert_eq!(
            parse_path("from: <>", "FROM:"),
            Some((String::new(), vec![]))
        );
        assert_eq!(
            parse_path("TO:<@relay.example:u@d.example>", "TO:"),
            Some(("u@d.example".into(), vec![]))
        );
        for bad in ["TO:a@b", "TO:<a@b", "TO <a@b>", "TO:<a b@c>", ""] {
            assert_eq!(parse_path(bad, "TO:"), None, "{bad}");
        }
        let long = format!("TO:<{}@d.example>", "x".repeat(300));
        assert_eq!(parse_path(&long, "TO:"), None);
    }

    #[test]
    fn mailboxes() {
        assert!(is_mailbox("a@b"));
        assert!(is_mailbox("Postmaster"));
        assert!(is_mailbox("иван@пример.рф"));
        assert!(!is_mailbox("a@"));
        assert!(!is_mailbox("@b"));
        assert!(!is_mailbox("plain"));
    }

    #[test]
    fn queue_ids_look_like_postfix() {
        let id = new_queue_id();
        assert_eq!(id.len(), 10);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
        );
    }
}
