//! Ceiling A: the SMS mock driven directly, without the hub.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clm_mocks::SmsMock;

use crate::procfs::{cpu_secs, machine_cpu};
use crate::{CEILING_CONCURRENCY, RECIPIENT, TEXT};

pub struct Ceiling {
    pub rate: f64,
    pub wall: f64,
    /// CPU seconds of this process (mock + client) during the run.
    pub cpu: f64,
    /// CPU seconds of every other process on the machine meanwhile.
    pub other: f64,
}

pub async fn ceiling(mock: &SmsMock, n: u64) -> anyhow::Result<Ceiling> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CEILING_CONCURRENCY)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = reqwest::Url::parse_with_params(
        &mock.kannel_url(),
        &[("to", RECIPIENT), ("text", TEXT), ("from", "CLM")],
    )?;
    // Warm-up: open the connections.
    drive(&client, &url, (CEILING_CONCURRENCY * 8) as u64).await?;
    mock.reset();
    let (cpu0, busy0) = (cpu_secs("self"), machine_cpu().0);
    let t0 = Instant::now();
    drive(&client, &url, n).await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs("self") - cpu0;
    let other = (machine_cpu().0 - busy0 - cpu).max(0.0);
    let accepted = mock.accepted_count();
    if accepted != n {
        bail!("raw ceiling: the mock accepted {accepted} of {n} requests");
    }
    Ok(Ceiling {
        rate: n as f64 / wall,
        wall,
        cpu,
        other,
    })
}

async fn drive(client: &reqwest::Client, url: &reqwest::Url, n: u64) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(CEILING_CONCURRENCY);
    for _ in 0..CEILING_CONCURRENCY {
        let (client, url, next, failed) =
            (client.clone(), url.clone(), next.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                match client.get(url.clone()).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("raw ceiling: {failed} of {n} requests failed");
    }
    Ok(())
}
