//! Intake: validate submitted communications and store the valid ones.
//!
//! Shared by every intake route (HTTP now, AMQP next): a raw JSON item becomes accepted,
//! duplicate or rejected. Invalid input is never dropped silently: it is answered with the reason
//! and recorded in the store's rejection log.

use std::sync::atomic::Ordering;

use clm_contracts::Communication;
use clm_contracts::api::{SubmitOutcome, SubmitResult};
use tracing::warn;

use crate::state::Shared;
use crate::store::{InsertOutcome, NewCommunication};

/// Why an item was refused, with the field when serde or validation named one.
fn reject_reason(item: &serde_json::Value) -> Result<Communication, String> {
    let comm: Communication = serde_path_to_error::deserialize(item).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })?;
    comm.validate().map_err(|e| e.to_string())?;
    Ok(comm)
}

/// What the rejection log keeps of an invalid item: its identifying fields only. Recipient and
/// content are personal data, and an invalid submission is no reason to keep them.
fn rejection_record(item: &serde_json::Value) -> String {
    let mut kept = serde_json::Map::new();
    if let Some(obj) = item.as_object() {
        for k in ["id", "channel", "campaign_id", "customer_id"] {
            if let Some(v @ serde_json::Value::String(_)) = obj.get(k) {
                kept.insert(k.to_owned(), v.clone());
            }
        }
    }
    serde_json::Value::Object(kept).to_string()
}

/// Validates, stores and answers a batch of raw items, in order.
pub async fn submit(
    shared: &Shared,
    items: Vec<serde_json::Value>,
) -> Result<Vec<SubmitResult>, String> {
    let mut results: Vec<Option<SubmitResult>> = vec![None; items.len()];
    let mut valid = Vec::with_capacity(items.len());
    let mut valid_idx = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let raw_id = item.get("id").and_then(|v| v.as_str()).map(str::to_owned);
        let checked = reject_reason(item).and_then(|c| {
            if !shared.channels.contains_key(&c.channel) {
                Err(format!(
                    "channel: `{}` is not enabled on this hub",
                    c.channel
                ))
            } else if shared.is_cancelled(&c.campaign_id) {
                Err(format!(
                    "campaign_id: campaign `{}` was cancelled",
                    c.campaign_id
                ))
            } else {
                Ok(c)
            }
        });
        match checked {
            Ok(comm) => {
                valid_idx.push(i);
                let parts = shared
                    .channels
                    .get(&comm.channel)
                    .map_or(1, |ch| ch.plugin.parts(&comm));
                valid.push(NewCommunication { parts, comm });
            }
            Err(reason) => {
                shared
                    .metrics
                    .intake_rejected
                    .fetch_add(1, Ordering::Relaxed);
                let id_for_log = raw_id
                    .as_deref()
                    .filter(|s| uuid::Uuid::parse_str(s).is_ok());
                let payload = rejection_record(item);
                if let Err(e) = shared
                    .store
                    .record_rejection(id_for_log, &reason, &payload, chrono::Utc::now())
                    .await
                {
                    warn!(error = %e, "could not record a rejection; the caller still got the reason");
                }
                results[i] = Some(SubmitResult {
                    id: raw_id,
                    outcome: SubmitOutcome::Rejected,
                    error: Some(reason),
                });
            }
        }
    }
    if !valid.is_empty() {
        let channels: Vec<_> = valid.iter().map(|n| n.comm.channel).collect();
        let ids: Vec<String> = valid.iter().map(|n| n.comm.id.to_string()).collect();
        let payloads: Vec<String> = valid_idx
            .iter()
            .map(|&i| rejection_record(&items[i]))
            .collect();
        let outcomes = shared.intake.call_each(valid).await?;
        for (((i, outcome), id), payload) in
            valid_idx.into_iter().zip(outcomes).zip(ids).zip(payloads)
        {
            let outcome = match outcome {
                Err(refused) => {
                    // Valid, yet the store would not hold it: refused like invalid input, so
                    // the AMQP intake dead-letters it instead of retrying it for ever.
                    let reason = refused.to_string();
                    shared
                        .metrics
                        .intake_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = shared
                        .store
                        .record_rejection(Some(&id), &reason, &payload, chrono::Utc::now())
                        .await
                    {
                        warn!(error = %e, "could not record a rejection; the caller still got the reason");
                    }
                    results[i] = Some(SubmitResult {
                        id: Some(id),
                        outcome: SubmitOutcome::Rejected,
                        error: Some(reason),
                    });
                    continue;
                }
                Ok(InsertOutcome::Accepted) => {
                    shared
                        .metrics
                        .intake_accepted
                        .fetch_add(1, Ordering::Relaxed);
                    SubmitOutcome::Accepted
                }
                Ok(InsertOutcome::Duplicate) => {
                    shared
                        .metrics
                        .intake_duplicate
                        .fetch_add(1, Ordering::Relaxed);
                    SubmitOutcome::Duplicate
                }
            };
            results[i] = Some(SubmitResult {
                id: Some(id),
                outcome,
                error: None,
            });
        }
        for ch in channels
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
        {
            if let Some(c) = shared.channels.get(&ch) {
                c.wake();
            }
        }
        shared.outbox_wake.notify_one();
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every item answered"))
        .collect())
}
