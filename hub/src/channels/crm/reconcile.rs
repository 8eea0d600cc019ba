//! Later reconciliation: communications of a channel with a status operation (the CRMs) that
//! ended `unknown` — the bundle's answer was lost and every status query made within the attempt
//! failed too — are asked about again every `soap.reconcile_every_ms`, by one instance
//! (a singleton lock), until the channel answers: `Sent`, `Failed`, or due again when the channel
//! never got them. Each answer is one more entry in the communication's attempt log; rounds
//! whose query fails change nothing and are only logged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use clm_connectors::Outcome;
use clm_contracts::{Classification, Status};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::dispatcher::Channel;
use crate::state::Shared;
use crate::store::{AttemptRow, Finish};

/// Items asked about per round.
const BATCH: u32 = 1000;

/// Runs the reconciliation of `channel` until `shutdown`, as a singleton among instances.
pub async fn run(
    shared: Arc<Shared>,
    channel: Arc<Channel>,
    every: Duration,
    min_age: Duration,
    shutdown: CancellationToken,
) {
    let name = format!("reconcile-{}", channel.id);
    let coord = shared.coord.clone();
    crate::coordination::run_singleton(&coord, &name, Duration::from_secs(30), shutdown, |stop| {
        let shared = Arc::clone(&shared);
        let channel = Arc::clone(&channel);
        async move {
            let mut cursor = None;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                match round(&shared, &channel, min_age, cursor).await {
                    Ok(r) => cursor = r.next,
                    Err(e) => {
                        warn!(channel = %channel.id, error = %e, "reconciliation round failed; next round later")
                    }
                }
            }
        }
    })
    .await;
}

/// What one round did, and where the next one starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Round {
    pub asked: usize,
    pub settled: usize,
    /// The keyset position after this round's page; `None` after the last page, so the next
    /// round starts from the oldest again.
    pub next: Option<(chrono::DateTime<Utc>, uuid::Uuid)>,
}

/// One round: the next page of unknowns after `after` (the oldest first), one status query,
/// their answers written. Pages move on whatever the channel answers, so communications it
/// never knows cannot hold the others back.
pub async fn round(
    shared: &Shared,
    channel: &Channel,
    min_age: Duration,
    after: Option<(chrono::DateTime<Utc>, uuid::Uuid)>,
) -> anyhow::Result<Round> {
    let before = Utc::now() - chrono::Duration::from_std(min_age).unwrap_or_default();
    let unknown = shared
        .store
        .unknown_before(channel.id, before, after, BATCH)
        .await?;
    let next = if unknown.len() < BATCH as usize {
        None
    } else {
        unknown.last().map(|u| (u.updated_at, u.id))
    };
    if unknown.is_empty() {
        return Ok(Round::default());
    }
    let ids: Vec<uuid::Uuid> = unknown.iter().map(|u| u.id).collect();
    let started_at = Utc::now();
    let t0 = std::time::Instant::now();
    let answers = channel
        .connector
        .reconcile(&ids)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let duration_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut finishes = Vec::new();
    for (id, outcome) in answers {
        let Some(u) = unknown.iter().find(|u| u.id == id) else {
            continue;
        };
        let (campaign, attempts) = (&u.campaign_id, u.attempts);
        let (status, classification, reason, external_id, next) = match &outcome {
            Outcome::Sent { external_id, .. } => (
                Status::Sent,
                Classification::Sent,
                None,
                external_id.clone(),
                None,
            ),
            Outcome::Fail { reason, .. } => (
                Status::Failed,
                Classification::Fail,
                Some(reason.clone()),
                None,
                None,
            ),
            Outcome::Retry { reason, .. } => (
                Status::RetryWait,
                Classification::Retry,
                Some(reason.clone()),
                None,
                Some(Utc::now()),
            ),
            Outcome::Unknown { .. } => continue,
        };
        let number = attempts + 1;
        finishes.push(Finish {
            id,
            claim: String::new(),
            campaign_id: campaign.clone(),
            channel: channel.id,
            attempt: Some(AttemptRow {
                number,
                started_at,
                duration_ms,
                classification,
                answer: outcome.answer().to_owned(),
                reason: reason.clone(),
                external_id: external_id.clone(),
            }),
            status,
            reason,
            external_id,
            next_attempt_at: next,
            attempts: number,
        });
    }
    let settled = shared.store.settle_unknown(&finishes, Utc::now()).await?;
    if !settled.is_empty() {
        info!(channel = %channel.id, settled = settled.len(), asked = ids.len(), "unknown communications reconciled");
        channel
            .counters
            .reconciled
            .fetch_add(settled.len() as u64, Ordering::Relaxed);
        shared.outbox_wake.notify_one();
        channel.wake();
    }
    Ok(Round {
        asked: ids.len(),
        settled: settled.len(),
        next,
    })
}
