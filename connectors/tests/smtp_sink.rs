//! The e-mail connector against a real MTA test server: Postfix's `smtp-sink`, started by each
//! test on a free loopback port, dumping every message it takes to a file, and told by its
//! options to refuse a stage with 4xx (`-r`), 5xx (`-f`), 421 (`-Q`), to hang up (`-q`) or to
//! answer late (`-W`). `scripts/test.sh` installs it (Debian package `postfix`); without it
//! these tests fail, they never skip.

#[path = "../src/email/testutil.rs"]
mod testutil;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clm_connectors::email::{
    DkimConfig, EmailConnector, Suppress, Tracking, communication_of_message_id,
    is_policy_rejection, suppression_of,
};
pub use clm_connectors::email::{Security, SmtpConfig};
use clm_connectors::{Connector, Outcome};
use clm_contracts::Communication;
use testutil::{Parsed, decode_rfc2047};

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

/// A running `smtp-sink`, killed on drop.
struct Sink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sink {
    /// Starts `smtp-sink [args] -d <dir>/%M. 127.0.0.1:<free port> 100`.
    fn start(args: &[&str]) -> Sink {
        let binary = std::env::var_os("CLM_SMTP_SINK")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(SMTP_SINK));
        assert!(
            binary.exists(),
            "{} not found: Postfix's smtp-sink is needed by connectors/tests/smtp_sink.rs; \
             scripts/test.sh installs it (DEBIAN_FRONTEND=noninteractive apt-get install -y postfix)",
            binary.display()
        );
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let mut cmd = Command::new(&binary);
            cmd.args(args);
            if running_as_root() {
                // smtp-sink refuses to run as root; `nobody` must be able to write the dumps.
                set_mode_777(dir.path());
                cmd.args(["-u", "nobody"]);
            }
            cmd.arg("-d")
                .arg(format!("{}/%M.", dir.path().display()))
                .arg(format!("127.0.0.1:{port}"))
                .arg("100")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("start smtp-sink");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    eprintln!("smtp-sink exited ({status}): {err}");
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sink { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("smtp-sink did not start listening on loopback (see its errors above)");
    }

    /// The messages dumped so far, once `want` of them are complete.
    fn messages(&self, want: usize) -> Vec<Parsed> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut files: Vec<_> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            let dumps: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
            // A dump is complete once the message's last part boundary or body is in it; the
            // sink writes it before answering the final ".", so this is quick.
            if dumps.len() >= want && dumps.iter().all(|d| d.ends_with(b"\n\n")) {
                return dumps.iter().map(|d| Parsed::new(d)).collect();
            }
            assert!(
                Instant::now() < deadline,
                "expected {want} dumped messages, have {}",
                dumps.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn config(&self) -> SmtpConfig {
        testutil::config("127.0.0.1", self.port)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn set_mode_777(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
}

struct Links;

impl Tracking for Links {
    fn unsubscribe_url(&self, comm: &Communication) -> Option<String> {
        Some(format!(
            "https://hub.example.ru/email/unsubscribe/{}?token=Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG9mcmVk",
            comm.id.simple()
        ))
    }

    fn rewrite_html(&self, _comm: &Communication, html: &str) -> String {
        html.replace(
            "https://example.ru/offer",
            "https://hub.example.ru/email/c/TOKEN",
        )
    }
}

const RCPT: &str = "ivan.petrov@example.ru";

fn connector(config: SmtpConfig) -> EmailConnector {
    clm_connectors::install_crypto_provider();
    EmailConnector::new(config, Some(Arc::new(Links))).unwrap()
}

fn retry_after(o: &Outcome) -> Option<Duration> {
    match o {
        Outcome::Retry { after, .. } => *after,
        other => panic!("expected a retry: {other:?}"),
    }
}

fn assert_no_address(o: &Outcome) {
    let text = format!("{o:?}");
    assert!(!text.contains("ivan"), "the recipient leaked: {text}");
}

#[tokio::test]
async fn messages_arrive_intact_with_their_headers() {
    let sink = Sink::start(&[]);
    let mut config = sink.config();
    config.from = "КЛМ Предложения <offers@example.ru>".into();
    config.dkim = Some(DkimConfig {
        domain: "example.ru".into(),
        selector: "s2025".into(),
        private_key_pem: testutil::RSA_PKCS1_PEM.into(),
    });
    let c = connector(config);
    let mut comm = testutil::comm(RCPT);
    comm.attributes.insert("name".into(), "Иван Петров".into());

    let o = c.send(&comm).await;
    let Outcome::Sent {
        external_id: Some(message_id),
        answer,
    } = &o
    else {
        panic!("{o:?}")
    };
    assert_eq!(communication_of_message_id(message_id), Some(comm.id));
    assert!(answer.starts_with("250"), "{answer}");
    assert_no_address(&o);

    let m = &sink.messages(1)[0];
    // The envelope, as smtp-sink recorded it.
    assert_eq!(m.header("X-Mail-Args").unwrap(), "<offers@example.ru>");
    assert_eq!(m.header("X-Rcpt-Args").unwrap(), format!("<{RCPT}>"));
    assert_eq!(m.header("X-Helo-Args").unwrap(), "clm-hub.example.ru");
    // The headers.
    assert_eq!(
        decode_rfc2047(&m.header("Subject").unwrap()),
        testutil::SUBJECT
    );
    assert_eq!(
        decode_rfc2047(&m.header("From").unwrap()),
        "КЛМ Предложения <offers@example.ru>"
    );
    assert_eq!(
        decode_rfc2047(&m.header("To").unwrap()),
        format!("Иван Петров <{RCPT}>")
    );
    assert_eq!(&m.header("Message-ID").unwrap(), message_id);
    chrono::DateTime::parse_from_rfc2822(&m.header("Date").unwrap()).unwrap();
    assert_eq!(
        m.header("List-Unsubscribe").unwrap(),
        format!("<{}>", Links.unsubscribe_url(&comm).unwrap())
    );
    assert_eq!(
        m.header("List-Unsubscribe-Post").unwrap(),
        "List-Unsubscribe=One-Click"
    );
    // The bodies, text and the tracked HTML.
    assert!(
        m.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative")
    );
    let parts = m.parts();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts[0].0.starts_with("text/plain; charset=utf-8"));
    assert_eq!(parts[0].1.trim_end(), testutil::TEXT);
    assert!(parts[1].0.starts_with("text/html; charset=utf-8"));
    assert_eq!(
        parts[1].1.trim_end(),
        testutil::HTML.replace(
            "https://example.ru/offer",
            "https://hub.example.ru/email/c/TOKEN"
        )
    );
    // The signature survived the trip.
    testutil::verify_dkim(&m.raw, testutil::RSA_PKCS1_PEM).unwrap();
}

#[tokio::test]
async fn one_pooled_session_carries_message_after_message() {
    let sink = Sink::start(&[]);
    let c = connector(sink.config());
    let mut ids = Vec::new();
    for n in 0..3 {
        let mut comm = testutil::comm(&format!("user{n}@example.ru"));
        // ASCII text goes out as it is: lines that start with "." must be dot-stuffed.
        comm.content.html = None;
        comm.content.text = Some(format!("Message {n}\n.\n..two dots\n.leading dot\nend"));
        let o = c.send(&comm).await;
        assert!(matches!(o, Outcome::Sent { .. }), "{o:?}");
        assert_eq!(c.idle_connections(), 1);
        ids.push(comm.id);
    }
    let messages = sink.messages(3);
    assert_eq!(messages.len(), 3);
    for m in &messages {
        let id = communication_of_message_id(&m.header("Message-ID").unwrap()).unwrap();
        let n = ids.iter().position(|i| *i == id).unwrap();
        assert_eq!(
            m.body_text().trim_end(),
            format!("Message {n}\n.\n..two dots\n.leading dot\nend")
        );
    }
}

#[tokio::test]
async fn a_4xx_at_rcpt_retries_and_keeps_the_session() {
    let sink = Sink::start(&["-r", "RCPT"]);
    let c = connector(sink.config());
    let o = c.send(&testutil::comm(RCPT)).await;
    assert_eq!(retry_after(&o), None);
    assert!(o.answer().starts_with("450 4.3.0"), "{o:?}");
    let Outcome::Retry { reason, .. } = &o else {
        unreachable!()
    };
    assert!(reason.contains("RCPT"), "{reason}");
    assert_no_address(&o);
    // RSET made the session reusable.
    assert_eq!(c.idle_connections(), 1);
}

#[tokio::test]
async fn greylisting_at_rcpt_retries_after_the_greylist_delay() {
    let sink = Sink::start(&[
        "-r",
        "RCPT",
        "-b",
        "450 4.7.1 <ivan.petrov@example.ru>: Recipient address rejected: Greylisted, see https://postgrey.schweikert.ch/",
    ]);
    let mut config = sink.config();
    config.greylist_delay = Duration::from_secs(420);
    let c = connector(config);
    let o = c.send(&testutil::comm(RCPT)).await;
    assert_eq!(retry_after(&o), Some(Duration::from_secs(420)), "{o:?}");
    assert_no_address(&o);
}

#[tokio::test]
async fn a_5_1_1_at_rcpt_fails_and_suppresses_the_address() {
    let sink = Sink::start(&[
        "-f",
        "RCPT",
        "-B",
        "550 5.1.1 <ivan.petrov@example.ru>: Recipient address rejected: User unknown in virtual mailbox table",
    ]);
    let c = connector(sink.config());
    let o = c.send(&testutil::comm(RCPT)).await;
    let Outcome::Fail { reason, .. } = &o else {
        panic!("{o:?}")
    };
    assert!(reason.contains("550 5.1.1"), "{reason}");
    assert_eq!(suppression_of(&o), Some(Suppress::HardBounce));
    assert!(!is_policy_rejection(&o));
    assert_no_address(&o);
}

#[tokio::test]
async fn other_5xx_at_rcpt_fail_without_suppression() {
    let sink = Sink::start(&["-f", "RCPT"]);
    let c = connector(sink.config());
    let o = c.send(&testutil::comm(RCPT)).await;
    assert!(matches!(o, Outcome::Fail { .. }), "{o:?}");
    assert!(o.answer().starts_with("500 5.3.0"), "{o:?}");
    assert_eq!(suppression_of(&o), None);
}

#[tokio::test]
async fn a_5xx_at_data_fails() {
    let sink = Sink::start(&["-f", "DATA"]);
    let c = connector(sink.config());
    let o = c.send(&testutil::comm(RCPT)).await;
    let Outcome::Fail { reason, .. } = &o else {
        panic!("{o:?}")
    };
    assert!(reason.contains("DATA"), "{reason}");
}

#[tokio::test]
async fn a_5_7_x_after_the_content_is_a_policy_rejection() {
    let sink = Sink::start(&[
        "-f",
        ".",
        "-B",
        "554 5.7.1 Message rejected: looks like spam",
    ]);
    let c = connector(sink.config());
    let o = c.send(&testutil::comm(RCPT)).await;
    assert!(matches!(o, Outcome::Fail { .. }), "{o:?}");
    assert!(is_policy_rejection(&o), "{o:?}");
    assert_eq!(suppression_of(&o), None);
}

#[tokio::test]
async fn a_hang_up_before_the_content_retries() {
    let sink = Sink::start(&["-q", "DATA"]);
    let c = connector(sink.config());
    let o = c.send(&testutil::comm(RCPT)).await;
    assert_eq!(retry_after(&o), None);
    assert_eq!(c.idle_connections(), 0, "a broken session is not pooled");
}

#[tokio::test]
async fn a_hang_up_after_the_final_dot_is_unknown() {
    let sink = Sink::start(&["-q", "."]);
    let c = connector(sink.config());
    let o = c.send(&testutil::comm(RCPT)).await;
    assert!(matches!(o, Outcome::Unknown { .. }), "{o:?}");
    assert_eq!(c.idle_connections(), 0);
}

#[tokio::test]
async fn no_answer_to_the_final_dot_in_time_is_unknown() {
    let sink = Sink::start(&["-W", ".:3"]);
    let mut config = sink.config();
    config.command_timeout = Duration::from_millis(800);
    let c = connector(config);
    let o = c.send(&testutil::comm(RCPT)).await;
    assert!(matches!(o, Outcome::Unknown { .. }), "{o:?}");
    assert_eq!(c.idle_connections(), 0);
}

#[tokio::test]
async fn a_421_retries_and_drops_the_session() {
    let sink = Sink::start(&["-Q", "RCPT"]);
    let c = connector(sink.config());
    let o = c.send(&testutil::comm(RCPT)).await;
    assert_eq!(retry_after(&o), None);
    assert!(o.answer().starts_with("421"), "{o:?}");
    assert_eq!(c.idle_connections(), 0);
}

#[tokio::test]
async fn a_relay_without_starttls_is_not_used_when_tls_is_required() {
    let sink = Sink::start(&[]);
    let mut config = sink.config();
    config.security = Security::StartTlsRequired;
    let c = connector(config);
    let o = c.send(&testutil::comm(RCPT)).await;
    let Outcome::Retry { reason, .. } = &o else {
        panic!("{o:?}")
    };
    assert!(reason.contains("STARTTLS"), "{reason}");
    assert!(
        std::fs::read_dir(sink.dir.path()).unwrap().next().is_none(),
        "nothing went out in clear text"
    );
}

#[tokio::test]
async fn auth_is_used_when_offered_and_its_absence_retries() {
    let sink = Sink::start(&[]);
    let mut config = sink.config();
    config.auth = Some(("clm".into(), "secret".into()));
    let o = connector(config).send(&testutil::comm(RCPT)).await;
    assert!(matches!(o, Outcome::Sent { .. }), "{o:?}");

    // `-a`: the relay announces no AUTH.
    let sink = Sink::start(&["-a"]);
    let mut config = sink.config();
    config.auth = Some(("clm".into(), "secret".into()));
    let o = connector(config).send(&testutil::comm(RCPT)).await;
    let Outcome::Retry { reason, .. } = &o else {
        panic!("{o:?}")
    };
    assert!(reason.contains("AUTH"), "{reason}");
}
