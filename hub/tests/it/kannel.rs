//! The hub against a real Kannel (Debian's `kannel` and `kannel-extras`: bearerbox, smsbox and
//! the `fakesmsc` test SMSC) on loopback, with Kannel's own delivery reports; and the
//! multi-part report rule (`clm_connectors::sms::parts`) through `/ingest/sms`.
//!
//! Kannel missing is a failure, never a skip: `scripts/test.sh` installs it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clm_contracts::Status;
use clm_mocks::{DlrConfig, SmsMock};
use serde_json::{Value, json};

use crate::harness::*;

const BEARERBOX: &str = "/usr/sbin/bearerbox";
const SMSBOX: &str = "/usr/sbin/smsbox";
const FAKESMSC: &str = "/usr/lib/kannel/test/fakesmsc";
const TOKEN: &str = "kannel-dlr-token";

fn require_kannel() {
    for bin in [BEARERBOX, SMSBOX, FAKESMSC] {
        assert!(
            Path::new(bin).is_file(),
            "{bin} is missing: the real-Kannel tests need Debian's kannel and kannel-extras \
             (apt-get install kannel kannel-extras; scripts/test.sh installs them)"
        );
    }
}

/// bearerbox + smsbox + fakesmsc on free loopback ports, in a temporary folder.
struct Kannel {
    dir: tempfile::TempDir,
    admin_port: u16,
    sendsms_port: u16,
    bearerbox: Option<Child>,
    smsbox: Option<Child>,
    fakesmsc: Option<Child>,
}

impl Kannel {
    async fn start() -> Kannel {
        require_kannel();
        // The readiness probes below use reqwest before any hub has installed one.
        clm_connectors::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (admin_port, box_port, fake_port, sendsms_port) =
            (free_port(), free_port(), free_port(), free_port());
        let conf = format!(
            r#"group = core
admin-port = {admin_port}
admin-password = admin
admin-interface = 127.0.0.1
smsbox-port = {box_port}
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
dlr-storage = internal
log-level = 0
log-file = "{dir}/bearerbox.log"

group = smsc
smsc = fake
smsc-id = fake
port = {fake_port}
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {box_port}
sendsms-port = {sendsms_port}
sendsms-interface = 127.0.0.1
log-level = 0
log-file = "{dir}/smsbox.log"

group = sendsms-user
username = hub
password = secret
max-messages = 10
concatenation = true
"#,
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("kannel.conf"), conf).unwrap();
        let mut k = Kannel {
            dir,
            admin_port,
            sendsms_port,
            bearerbox: None,
            smsbox: None,
            fakesmsc: None,
        };
        k.bearerbox = Some(k.spawn(BEARERBOX, &[], "bearerbox.out"));
        k.wait_for_status("Status: running", Duration::from_secs(10))
            .await;
        k.start_smsbox();
        // fakesmsc reads messages to send from stdin in interactive mode: a pipe kept open.
        // It prints what it gets through stdio: line-buffered (stdbuf), so the file is current.
        let out = std::fs::File::create(k.fake_out()).unwrap();
        let err = out.try_clone().unwrap();
        let port = fake_port.to_string();
        k.fakesmsc = Some(
            Command::new("stdbuf")
                .args(["-oL", "-eL", FAKESMSC])
                .args(["-H", "127.0.0.1", "-r", &port, "-m", "0", "-i", "0.01"])
                .stdin(Stdio::piped())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start fakesmsc"),
        );
        k.wait_for_status("(online", Duration::from_secs(10)).await;
        k.wait_for_smsbox().await;
        k
    }

    fn spawn(&self, bin: &str, args: &[&str], out: &str) -> Child {
        let file = std::fs::File::create(self.dir.path().join(out)).unwrap();
        let err = file.try_clone().unwrap();
        Command::new(bin)
            .args(args)
            .arg(self.dir.path().join("kannel.conf"))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"))
    }

    fn start_smsbox(&mut self) {
        self.smsbox = Some(self.spawn(SMSBOX, &[], "smsbox.out"));
    }

    /// SIGKILL, then reaped (so it is gone, not a zombie).
    fn kill_smsbox(&mut self) {
        if let Some(mut c) = self.smsbox.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    fn fake_out(&self) -> PathBuf {
        self.dir.path().join("fakesmsc.out")
    }

    fn sendsms_url(&self) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/sendsms", self.sendsms_port)
    }

    async fn status_text(&self) -> String {
        let url = format!(
            "http://127.0.0.1:{}/status.txt?password=admin",
            self.admin_port
        );
        match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn wait_for_status(&self, needle: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = self.status_text().await;
            if text.contains(needle) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Kannel status has no {needle:?} after {timeout:?}:\n{text}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Until smsbox is connected to bearerbox and its sendsms port answers.
    async fn wait_for_smsbox(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.status_text().await;
            // A connected smsbox without an id is listed as `smsbox:(none), IP 127.0.0.1 …`.
            let connected = status.contains("smsbox:");
            let listening = reqwest::get(format!("{}?username=x", self.sendsms_url()))
                .await
                .is_ok();
            if connected && listening {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "smsbox did not come up:\n{status}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["bearerbox.out", "smsbox.out", "fakesmsc.out"] {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            s.push_str(&format!("--- {f} (last lines)\n"));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// The messages fakesmsc got, one per SMS part, in order.
    fn received(&self) -> Vec<FakePart> {
        let text = std::fs::read_to_string(self.fake_out()).unwrap_or_default();
        text.lines().filter_map(FakePart::parse).collect()
    }
}

impl Drop for Kannel {
    fn drop(&mut self) {
        for c in [&mut self.fakesmsc, &mut self.smsbox, &mut self.bearerbox]
            .into_iter()
            .flatten()
        {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

/// One SMS (part) as fakesmsc prints it: `Got message N: <from to type [udh] data>`.
#[derive(Debug, Clone)]
struct FakePart {
    /// Concatenation reference, part count and sequence number (from the UDH), if any.
    concat: Option<(u8, u8, u8)>,
    text: String,
}

fn url_decode(s: &str) -> Vec<u8> {
    // fakesmsc escapes with Kannel's octstr_url_encode: 0x20 as `+`.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn ucs2(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    String::from_utf16_lossy(&units)
}

impl FakePart {
    fn parse(line: &str) -> Option<FakePart> {
        let start = line.find("Got message ")?;
        let body = &line[start..];
        let body = &body[body.find('<')? + 1..body.rfind('>')?];
        let mut it = body.splitn(4, ' ');
        let (_from, _to, kind, rest) = (it.next()?, it.next()?, it.next()?, it.next()?);
        match kind {
            "text" => Some(FakePart {
                concat: None,
                text: rest.to_owned(),
            }),
            "ucs-2" | "ucs2" => Some(FakePart {
                concat: None,
                text: ucs2(&url_decode(rest)),
            }),
            "udh" => {
                let (udh, data) = rest.split_once(' ')?;
                let data = data.strip_prefix("data ").unwrap_or(data);
                let udh = url_decode(udh);
                // 05 00 03 ref total seq: the 8-bit concatenation element.
                let concat = (udh.len() >= 6 && udh[1] == 0).then(|| (udh[3], udh[4], udh[5]));
                Some(FakePart {
                    concat,
                    text: ucs2(&url_decode(data)),
                })
            }
            _ => None,
        }
    }
}

/// The texts fakesmsc got, multi-part messages put together; and how many parts it got.
fn reassembled(parts: &[FakePart]) -> (Vec<String>, usize) {
    let mut texts = Vec::new();
    let mut open: HashMap<u8, Vec<(u8, u8, String)>> = HashMap::new();
    for p in parts {
        match p.concat {
            None => texts.push(p.text.clone()),
            Some((r, total, seq)) => {
                let v = open.entry(r).or_default();
                v.push((seq, total, p.text.clone()));
                if v.len() == usize::from(total) {
                    let mut v = open.remove(&r).unwrap();
                    v.sort_by_key(|x| x.0);
                    texts.push(v.into_iter().map(|x| x.2).collect());
                }
            }
        }
    }
    for (_, v) in open {
        texts.push(format!("<incomplete: {} parts>", v.len()));
    }
    (texts, parts.len())
}

async fn hub_for(kannel: &Kannel, tweak: impl FnOnce(&mut clm_hub::Config)) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.toml");
    std::fs::write(
        &file,
        format!(
            r#"
sandbox = false
data_dir = "{data}"
[server]
listen = "127.0.0.1:0"
[dispatcher]
poll_ms = 20
[channels.sms]
enabled = true
[channels.sms.ingest]
token = "{TOKEN}"
[channels.sms.policy]
rate = 100000.0
burst = 1000
concurrency = 16
timeout_ms = 5000
max_attempts = 200
backoff_initial_ms = 50
backoff_max_ms = 200
[channels.sms.policy.breaker]
open_ms = 300
[channels.sms.gateway]
dialect = "kannel"
url = "{url}"
username = "hub"
password = "secret"
from = "RTK"
"#,
            data = dir.path().join("data").display(),
            url = kannel.sendsms_url(),
        ),
    )
    .unwrap();
    let mut c = clm_hub::Config::load(Some(&file), Vec::new()).unwrap();
    tweak(&mut c);
    c.validate().unwrap();
    start_hub(c, dir).await
}

fn ids_of(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

fn cyrillic_long(i: usize) -> String {
    // 150 UCS-2 characters: three parts of at most 67.
    let mut s = format!("Длинное сообщение номер {i}: ");
    while s.chars().count() < 150 {
        s.push_str("предложение ");
    }
    s.chars().take(150).collect()
}

/// Waits until fakesmsc printed `parts` parts (it prints them a little after Kannel has sent
/// its reports), and a moment more for any duplicate; then checks every text arrived once.
async fn assert_each_text_once(kannel: &Kannel, sent: &[String], parts: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while kannel.received().len() < parts && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = kannel.received();
    let (texts, n) = reassembled(&got);
    let mut expected: Vec<String> = sent.to_vec();
    let mut actual = texts.clone();
    expected.sort();
    actual.sort();
    assert_eq!(
        n,
        parts,
        "parts at the SMSC (fakesmsc); texts: {}\n{}",
        texts.len(),
        kannel.logs()
    );
    assert_eq!(actual, expected, "every text exactly once at the SMSC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kannel_latin_cyrillic_and_multi_part_sms_end_delivered() {
    let kannel = Kannel::start().await;
    let hub = hub_for(&kannel, |_| {}).await;
    let texts = vec![
        "Hello from the hub, offer 1".to_owned(),
        "Привет! Ваш бонус ждёт".to_owned(),
        cyrillic_long(1),
        cyrillic_long(2),
    ];
    let items: Vec<Value> = texts.iter().map(|t| sms_json("kannel", t)).collect();
    let (status, body) = hub.submit(&json!({ "communications": items })).await;
    assert_eq!(status, 202, "{body}");
    let ids = ids_of(&items);
    hub.wait_for(&ids, &["delivered"], Duration::from_secs(20))
        .await;
    assert_each_text_once(&kannel, &texts, 1 + 1 + 3 + 3).await;
    // Kannel's own reports came back: for a 3-part message one delivered report (type 1) and
    // one "delivered to SMSC" (type 8), naming the same SMSC id.
    let view = hub.view(&ids[2]).await;
    let kinds: Vec<&str> = view["responses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"delivered"), "{view:#}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kannel_smsbox_killed_mid_run_loses_and_duplicates_nothing() {
    let mut kannel = Kannel::start().await;
    let hub = hub_for(&kannel, |_| {}).await;
    let texts: Vec<String> = (0..150)
        .map(|i| {
            if i % 3 == 0 {
                cyrillic_long(i)
            } else {
                format!("Offer {i}: short text")
            }
        })
        .collect();
    let parts: usize = texts
        .iter()
        .map(|t| clm_contracts::sms::segment(t).parts)
        .sum();
    let items: Vec<Value> = texts.iter().map(|t| sms_json("kannel-kill", t)).collect();
    let (status, body) = hub.submit(&json!({ "communications": items })).await;
    assert_eq!(status, 202, "{body}");
    // Kill smsbox once Kannel took some of the messages, keep it down a moment, restart it.
    let ids = ids_of(&items);
    let taken = || async {
        let rows = hub
            .hub
            .shared
            .store
            .count_by_status(Some("kannel-kill"))
            .await
            .unwrap();
        rows.iter()
            .filter(|(s, _)| matches!(s, Status::Sent | Status::Delivered))
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while taken().await < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Kannel took nothing:\n{}",
            kannel.logs()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    kannel.kill_smsbox();
    let at_kill = taken().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    kannel.start_smsbox();
    kannel.wait_for_smsbox().await;
    let restarted_at = chrono::Utc::now();
    // The breaker opens while smsbox is down (300 ms here), then the rest goes out. Around the
    // kill, Kannel itself loses what the dead smsbox held: a request it was reading may or may
    // not have reached bearerbox (the hub cannot know: `unknown`, never resent blindly), and a
    // report it was about to post is gone (the message stays `sent`: Kannel keeps no report
    // for a box that died). Whatever the hub sent after smsbox came back ends `delivered`.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut delivered = Vec::new();
    let mut unknown = Vec::new();
    let mut unreported = Vec::new();
    loop {
        delivered.clear();
        unknown.clear();
        unreported.clear();
        let mut waiting = Vec::new();
        for (id, text) in ids.iter().zip(&texts) {
            let v = hub.view(id).await;
            let last_started = v["attempts"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(|a| a["started_at"].as_str())
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            let before_restart = last_started.is_some_and(|t| t < restarted_at);
            match v["status"].as_str() {
                Some("delivered") => delivered.push(text.clone()),
                Some("unknown") => {
                    let reason = v["reason"].as_str().unwrap_or_default();
                    assert!(
                        reason.contains("connection broke") || reason.contains("no answer"),
                        "unknown only when the kill cut the request: {v:#}"
                    );
                    unknown.push(text.clone());
                }
                Some("sent") if before_restart => unreported.push(text.clone()),
                _ => waiting.push(v),
            }
        }
        if waiting.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} not settled; e.g. {:#}\n{}",
            waiting.len(),
            waiting[0],
            kannel.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        at_kill < texts.len() as u64,
        "smsbox was killed after the run ({at_kill} of {} taken): not mid-run",
        texts.len()
    );
    let concurrency = hub.hub.shared.channels[&clm_contracts::ChannelId::Sms]
        .policy
        .concurrency as usize;
    assert!(unknown.len() <= concurrency, "{} unknown", unknown.len());
    // What smsbox had taken but not reported when it died: only messages Kannel had taken by
    // the kill (their reports were inside the dead smsbox or on their way to it). How many of
    // them depends on how far the reports lagged the sends at that moment, not on the hub's
    // concurrency (a bound of one batch failed under a loaded CI run: 17 of 16), so the bound is
    // what was taken before the kill; everything sent after the restart is reported (checked
    // above: it is not `sent` without a report).
    assert!(
        unreported.len() as u64 <= at_kill,
        "{} sent without a report, more than the {at_kill} Kannel had taken before the kill",
        unreported.len()
    );
    if unknown.is_empty() && unreported.is_empty() {
        assert_each_text_once(&kannel, &texts, parts).await;
    } else {
        // Each delivered text exactly once at the SMSC, an unknown one at most once, none twice.
        let delivered_parts: usize = delivered
            .iter()
            .map(|t| clm_contracts::sms::segment(t).parts)
            .sum();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while kannel.received().len() < delivered_parts && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (got, _) = reassembled(&kannel.received());
        let mut counts = std::collections::HashMap::<&str, usize>::new();
        for t in &got {
            *counts.entry(t.as_str()).or_default() += 1;
        }
        for t in &delivered {
            assert_eq!(
                counts.get(t.as_str()),
                Some(&1),
                "delivered once at the SMSC: {t}"
            );
        }
        for t in unknown.iter().chain(&unreported) {
            assert!(
                counts.get(t.as_str()).copied().unwrap_or(0) <= 1,
                "twice: {t}"
            );
        }
        assert!(
            got.iter().all(|t| texts.contains(t)),
            "nothing at the SMSC that was not sent"
        );
    }
    hub.stop().await;
}

/// A Kannel report as Kannel fills in the hub's `dlr-url`.
async fn report(hub: &TestHub, id: &str, ty: u32, smsc_id: &str) {
    let url = hub.url(&format!(
        "/ingest/sms?id={id}&type={ty}&answer=&smsc_id={smsc_id}&ts=1700000000&token={TOKEN}"
    ));
    let r = hub.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}: {}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kannel_multi_part_reports_per_message_per_part_and_mixed() {
    // The hub sends to the SMS mock with its reports off; the reports are posted here, as
    // Kannel would send them.
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    mock.set_dlr(DlrConfig {
        enabled: false,
        ..DlrConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&mock, "kannel", dir.path(), |c| {
        let sms = &mut c.channels.sms;
        sms.ingest.token = Some(TOKEN.into());
    });
    let hub = start_hub(config, dir).await;
    let items: Vec<Value> = (0..7)
        .map(|i| sms_json("kannel-rule", &cyrillic_long(i)))
        .collect();
    let (status, _) = hub.submit(&json!({ "communications": items })).await;
    assert_eq!(status, 202);
    let ids = ids_of(&items);
    hub.wait_for(&ids, &["sent"], Duration::from_secs(10)).await;
    let status = |i: usize| {
        let (hub, id) = (&hub, ids[i].clone());
        async move { hub.status(&id).await }
    };

    // Kannel's one report for the whole message: type 8 and type 1 with one SMSC id, in
    // either order (Kannel 1.4.5 with fakesmsc sends both orders).
    report(&hub, &ids[0], 8, "k-0").await;
    assert_eq!(status(0).await, "sent");
    report(&hub, &ids[0], 1, "k-0").await;
    assert_eq!(status(0).await, "delivered");
    report(&hub, &ids[1], 1, "k-1").await;
    assert_eq!(status(1).await, "sent");
    report(&hub, &ids[1], 8, "k-1").await;
    assert_eq!(status(1).await, "delivered");

    // Per-part reports, each with its own SMSC id: every part counts, repeats do not.
    report(&hub, &ids[2], 1, "p-a").await;
    report(&hub, &ids[2], 1, "p-a").await;
    report(&hub, &ids[2], 1, "p-b").await;
    assert_eq!(status(2).await, "sent");
    report(&hub, &ids[2], 1, "p-c").await;
    assert_eq!(status(2).await, "delivered");

    // Per-part with a type 8 naming another part (Kannel's per-message "delivered to SMSC" on
    // a gateway that reports per part): still counted.
    report(&hub, &ids[3], 8, "q-c").await;
    report(&hub, &ids[3], 1, "q-a").await;
    report(&hub, &ids[3], 1, "q-b").await;
    assert_eq!(status(3).await, "sent");
    report(&hub, &ids[3], 1, "q-c").await;
    assert_eq!(status(3).await, "delivered");

    // Without %F nothing tells the parts apart: the report speaks for the whole message.
    report(&hub, &ids[4], 1, "").await;
    assert_eq!(status(4).await, "delivered");

    // A mix: one part undelivered makes the message failed, whatever the other parts say.
    report(&hub, &ids[5], 1, "m-a").await;
    report(&hub, &ids[5], 2, "m-b").await;
    assert_eq!(status(5).await, "failed");
    report(&hub, &ids[5], 1, "m-c").await;
    report(&hub, &ids[5], 1, "m-b").await;
    assert_eq!(status(5).await, "failed");

    // Kannel's "not delivered to SMSC" (16) for the message fails it too.
    report(&hub, &ids[6], 16, "").await;
    assert_eq!(status(6).await, "failed");
    hub.stop().await;
}
