//! The `clm-hub` binary's start-up output on the embedded default: the banner in one piece (no
//! log line between its lines), and with `log.format = "json"` nothing but JSON lines on standard
//! output.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The hub on the embedded default in `dir`, on a free port, with `env` added; its standard
/// output comes line by line through the receiver.
fn spawn(dir: &std::path::Path, env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clm-hub"));
    cmd.env_remove("CLM_LOG")
        .env("CLM_HUB__DATA_DIR", dir.join("data"))
        .env("CLM_HUB__SERVER__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn clm-hub");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Lines until `done` says so (inclusive), or panics after `within` with what came.
fn lines_until(
    rx: &mpsc::Receiver<String>,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let end = done(&line);
                got.push(line);
                if end {
                    return got;
                }
            }
            Err(_) => panic!(
                "not seen within {within:?}; standard output was:\n{}",
                got.join("\n")
            ),
        }
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A log line of the text format: `2026-…T…Z  INFO target: message`.
fn is_log_line(line: &str) -> bool {
    line.len() > 30 && line.as_bytes()[4] == b'-' && line.contains('T') && {
        let rest = &line[..line.len().min(40)];
        [" INFO ", " WARN ", " ERROR ", " DEBUG "]
            .iter()
            .any(|l| rest.contains(l))
    }
}

#[test]
fn the_banner_is_printed_in_one_piece() {
    let dir = tempfile::tempdir().unwrap();
    let (child, rx) = spawn(dir.path(), &[]);
    // The banner's last line: the request to look the demo communication up.
    let lines = lines_until(&rx, Duration::from_secs(30), |l| {
        l.trim_start().starts_with("curl -s")
            && l.contains("/v1/communications/")
            && !l.contains("-d '")
    });
    stop(child);
    let first = lines
        .iter()
        .position(|l| l == "CLM Channel Hub is running")
        .unwrap_or_else(|| panic!("no banner:\n{}", lines.join("\n")));
    let banner = &lines[first..];
    assert!(
        banner.iter().any(|l| l.contains("sms     mock at")),
        "{banner:#?}"
    );
    let logged: Vec<&String> = banner.iter().filter(|l| is_log_line(l)).collect();
    assert!(
        logged.is_empty(),
        "log lines inside the banner: {logged:#?}"
    );
    // Log lines do come before it: the check above would see them if they came between.
    assert!(lines[..first].iter().any(|l| is_log_line(l)));
}

#[test]
fn json_logs_leave_nothing_but_json_on_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let (child, rx) = spawn(dir.path(), &[("CLM_HUB__LOG__FORMAT", "json")]);
    let mut lines = lines_until(&rx, Duration::from_secs(30), |l| l.contains("hub started"));
    // Whatever comes in the next moment (where the banner would be) must be JSON too.
    let settle = Instant::now() + Duration::from_millis(700);
    while let Ok(l) = rx.recv_timeout(settle.saturating_duration_since(Instant::now())) {
        lines.push(l);
    }
    stop(child);
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
    }
    let started = lines.iter().find(|l| l.contains("hub started")).unwrap();
    let v: serde_json::Value = serde_json::from_str(started).unwrap();
    assert_eq!(v["message"], "hub started", "{started}");
    assert_eq!(v["store"], "sqlite", "{started}");
}

#[test]
fn an_unknown_log_format_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clm-hub"))
        .env("CLM_HUB__DATA_DIR", dir.path().join("data"))
        .env("CLM_HUB__SERVER__LISTEN", "127.0.0.1:0")
        .env("CLM_HUB__LOG__FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log.format"), "{err}");
}
