//! The release `clm-hub` binary as a child process, configured by a TOML file in a temp dir.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clm_mocks::SmsMock;

/// The `clm-hub` binary running on its own temp dir; killed on drop (also when the bench panics).
pub struct HubProcess {
    child: Child,
    dir: tempfile::TempDir,
    base: String,
}

impl HubProcess {
    /// A hub sending SMS to `mock` with the `[channels.sms.policy]` lines `policy`; `extra` is
    /// TOML for further top-level tables (`[store]`, `[queue]`), empty for the embedded stack.
    pub async fn start(mock: &SmsMock, policy: &str, extra: &str) -> anyhow::Result<HubProcess> {
        let dir = tempfile::tempdir()?;
        let listen = free_port()?;
        let config = dir.path().join("hub.toml");
        std::fs::write(
            &config,
            format!(
                r#"sandbox = false
data_dir = {data:?}

[server]
listen = "{listen}"
{extra}
[dispatcher]
claim_batch = 1000
poll_ms = 20

[channels.sms]
enabled = true

[channels.sms.policy]
{policy}

[channels.sms.gateway]
dialect = "kannel"
url = "{url}"
delivery_reports = false
"#,
                data = dir.path().join("data").display().to_string(),
                url = mock.kannel_url(),
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("hub.log"))?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clm-hub"));
        // As the hub runs in its container (Dockerfile), unless the caller says otherwise.
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            cmd.env("MIMALLOC_ALLOW_THP", "0");
        }
        cmd.arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // `CLM_HUB__…` variables reach the hub (they override the file; the report lists them).
        let child = cmd.spawn().context("spawn clm-hub")?;
        let hub = HubProcess {
            child,
            dir,
            base: format!("http://{listen}"),
        };
        hub.wait_ready().await?;
        Ok(hub)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                bail!(
                    "the hub exited before it was ready ({status}); log:\n{}",
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the hub was not ready after 30 s; log:\n{}",
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The exit status, if it already exited. Takes `&self`: reads `/proc` rather than reaping.
    pub fn exited(&self) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
        (state == "Z" || state == "X").then(|| "exited".to_owned())
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("hub.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn log_lines(&self) -> usize {
        self.log().lines().count()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then up to 15 s for a graceful stop; SIGKILL after that.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("      the hub did not stop within 15 s of SIGTERM; killing it");
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}
