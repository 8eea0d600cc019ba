//! PostgreSQL and RabbitMQ (and Redis for the rate-limit phase) from `scripts/test-services.sh`:
//! started when not running (never stopped here: others use them), and a fresh database and vhost
//! per run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use sqlx::Connection as _;
use uuid::Uuid;

/// PostgreSQL and RabbitMQ as `scripts/test-services.sh` runs them.
pub struct Services {
    script: PathBuf,
    /// The script's state directory (`CLM_TEST_SERVICES_DIR`, default `target/test-services`).
    dir: PathBuf,
    pg_url: String,
    amqp_url: String,
    /// Set when Redis was among the services started.
    redis_url: Option<String>,
}

impl Services {
    /// Starts what is not running yet (idempotent) and reads the URLs; `list` is the script's
    /// `CLM_TEST_SERVICES` (`"postgres rabbitmq"`, `"postgres rabbitmq redis"`).
    pub fn start(list: &str) -> anyhow::Result<Services> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the workspace root")?
            .to_path_buf();
        let script = root.join("scripts/test-services.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg("start")
            .env("CLM_TEST_SERVICES", list)
            .stdin(Stdio::null())
            .status()
            .context("run scripts/test-services.sh start")?;
        if !status.success() {
            bail!("scripts/test-services.sh start failed ({status})");
        }
        let out = Command::new("bash").arg(&script).arg("env").output()?;
        if !out.status.success() {
            bail!(
                "scripts/test-services.sh env failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let vars: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.strip_prefix("export ")?.split_once('=')?;
                Some((k.to_owned(), v.trim_matches(['"', '\'']).to_owned()))
            })
            .collect();
        let var = |k: &str| {
            vars.get(k)
                .cloned()
                .with_context(|| format!("scripts/test-services.sh env printed no {k}"))
        };
        let dir = std::env::var_os("CLM_TEST_SERVICES_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/test-services"));
        let services = Services {
            script,
            dir,
            pg_url: var("CLM_TEST_PG_URL")?,
            amqp_url: var("CLM_TEST_AMQP_URL")?,
            redis_url: if list.contains("redis") {
                Some(var("CLM_TEST_REDIS_URL")?)
            } else {
                None
            },
        };
        eprintln!(
            "      PostgreSQL {}, RabbitMQ {}",
            services.pg_url, services.amqp_url
        );
        Ok(services)
    }

    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref()
    }

    fn rabbitmqctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new("bash")
            .arg(&self.script)
            .arg("rabbitmqctl")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("run rabbitmqctl")?;
        if !out.status.success() {
            bail!(
                "rabbitmqctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// A fresh database and a fresh vhost, both named `clm_bench_<uuid>`.
    pub async fn scratch(&self) -> anyhow::Result<Scratch> {
        let name = format!("clm_bench_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&self.pg_url)
            .await
            .context("connect to PostgreSQL")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await.ok();
        self.rabbitmqctl(&["add_vhost", &name])?;
        self.rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"])?;
        let (pg_prefix, _) = self.pg_url.rsplit_once('/').context("PostgreSQL URL")?;
        let (amqp_prefix, _) = self.amqp_url.rsplit_once('/').context("AMQP URL")?;
        Ok(Scratch {
            pg_url: format!("{pg_prefix}/{name}"),
            amqp_url: format!("{amqp_prefix}/{name}"),
            name,
        })
    }

    pub async fn drop_scratch(&self, s: &Scratch) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.pg_url).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", s.name))
            .execute(&mut conn)
            .await?;
        conn.close().await.ok();
        self.rabbitmqctl(&["delete_vhost", &s.name])
    }

    /// The postmaster and the RabbitMQ VM, from the script's state files (for CPU figures).
    pub fn pids(&self) -> (Option<u32>, Option<u32>) {
        let read = |p: PathBuf| std::fs::read_to_string(p).ok();
        let pg = read(self.dir.join("postgres/datadir"))
            .and_then(|d| read(PathBuf::from(d.trim()).join("postmaster.pid")))
            .and_then(|s| s.lines().next()?.trim().parse().ok());
        let rabbit =
            read(self.dir.join("rabbitmq/rabbitmq.pid")).and_then(|s| s.trim().parse().ok());
        (pg, rabbit)
    }
}

/// A database and a vhost of the same name, made for one run.
pub struct Scratch {
    pub name: String,
    pub pg_url: String,
    pub amqp_url: String,
}
