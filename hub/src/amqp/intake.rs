//! AMQP intake: consume `clm.hub.communications` with manual acks and a bounded prefetch, store
//! in batches (the same validation and group commit as HTTP intake), ack only after the commit.
//! Invalid input is republished to `clm.communications.rejected` (publisher-confirmed) and only
//! then acked: never dropped, never requeued forever. A store outage keeps the batch unacked and
//! retries it; a broker outage reconnects with backoff, and what was unacked is redelivered and
//! answered `duplicate` by the idempotent store, so nothing is lost or stored twice.

use std::sync::Arc;
use std::time::Duration;

use clm_contracts::api::SubmitOutcome;
use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{COMMUNICATIONS_QUEUE, REJECT_REASON_HEADER, REJECTED_EXCHANGE, SharedBrokerState};
use crate::state::Shared;

/// Deliveries handled in one store commit at most.
const BATCH: usize = 500;
/// How long a batch waits for more deliveries after its first.
const GATHER: Duration = Duration::from_millis(5);

/// Consumes until `shutdown`, reconnecting as needed.
pub async fn run(
    shared: Arc<Shared>,
    url: String,
    prefetch: u16,
    broker: SharedBrokerState,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match consume(&shared, &url, prefetch, &broker, &shutdown, &mut backoff).await {
            Ok(()) => break,
            Err(e) => {
                broker.set_intake(false);
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "AMQP intake lost its broker; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = super::next_backoff(backoff);
            }
        }
    }
    broker.set_intake(false);
    info!("AMQP intake stopped");
}

async fn consume(
    shared: &Shared,
    url: &str,
    prefetch: u16,
    broker: &SharedBrokerState,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
) -> lapin::Result<()> {
    let conn = super::connect(url, &format!("clm-hub intake {}", shared.instance)).await?;
    let ch = conn.create_channel().await?;
    super::declare_topology(&ch).await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let rejects = conn.create_channel().await?;
    rejects
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            COMMUNICATIONS_QUEUE.into(),
            format!("clm-hub-{}", shared.instance).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    broker.set_intake(true);
    *backoff = Duration::from_millis(100);
    info!(
        queue = COMMUNICATIONS_QUEUE,
        prefetch, "AMQP intake consuming"
    );
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            d = consumer.next() => Some(d),
        };
        let Some(first) = first else {
            // Unacked deliveries go back to the queue when the channel closes.
            let _ = ch.close(200, "hub shutting down".into()).await;
            let _ = conn.close(200, "hub shutting down".into()).await;
            return Ok(());
        };
        let Some(first) = first else {
            return Err(lapin::Error::from(
                lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed),
            ));
        };
        let mut batch = vec![first?];
        while batch.len() < BATCH {
            match tokio::time::timeout(GATHER, consumer.next()).await {
                Ok(Some(d)) => batch.push(d?),
                Ok(None) | Err(_) => break,
            }
        }
        if !handle_batch(shared, &rejects, batch, shutdown).await? {
            // Stopped before the batch was stored: it stays unacked, and no later ack (they
            // are `multiple`) may cover it, so the channel closes now and the broker
            // redelivers it.
            let _ = ch.close(200, "hub shutting down".into()).await;
            let _ = conn.close(200, "hub shutting down".into()).await;
            return Ok(());
        }
    }
}

/// How often the broker delivered this message before (quorum queues count redeliveries).
fn delivery_count(d: &Delivery) -> i64 {
    let Some(headers) = d.properties.headers().as_ref() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortUInt(n)) => i64::from(*n),
        _ => 0,
    }
}

/// Why a delivery cannot be taken, before it reaches validation.
fn pre_check(d: &Delivery) -> Result<serde_json::Value, String> {
    let count = delivery_count(d);
    if count >= super::DEAD_LETTER_AT {
        return Err(format!(
            "delivered {count} times without being stored; dead-lettered before the queue's \
             x-delivery-limit would drop it"
        ));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&d.data).map_err(|e| format!("body is not JSON: {e}"))?;
    if !value.is_object() {
        return Err("body must be a communication object".into());
    }
    let key = d.routing_key.as_str();
    if let Some(ch) = value.get("channel").and_then(|c| c.as_str())
        && !key.is_empty()
        && key != ch
    {
        return Err(format!("routing key `{key}` does not match channel `{ch}`"));
    }
    Ok(value)
}

/// Stores, rejects and acks one batch; `false` when shutdown came first and nothing was acked.
async fn handle_batch(
    shared: &Shared,
    rejects: &Channel,
    batch: Vec<Delivery>,
    shutdown: &CancellationToken,
) -> lapin::Result<bool> {
    let mut reasons: Vec<Option<String>> = vec![None; batch.len()];
    let mut items = Vec::with_capacity(batch.len());
    let mut idx = Vec::with_capacity(batch.len());
    for (i, d) in batch.iter().enumerate() {
        match pre_check(d) {
            Ok(v) => {
                idx.push(i);
                items.push(v);
            }
            Err(reason) => reasons[i] = Some(reason),
        }
    }
    if !items.is_empty() {
        // Store outages: keep the deliveries unacked and try again; the broker holds them.
        let mut delay = Duration::from_millis(100);
        let results = loop {
            match crate::intake::submit(shared, items.clone()).await {
                Ok(r) => break r,
                Err(e) => {
                    warn!(error = %e, count = items.len(), "AMQP intake cannot store; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        // Not acked: redelivered to whichever instance consumes next.
                        _ = shutdown.cancelled() => return Ok(false),
                    }
                    delay = super::next_backoff(delay);
                }
            }
        };
        for (i, r) in idx.into_iter().zip(results) {
            if r.outcome == SubmitOutcome::Rejected {
                reasons[i] = r.error.or_else(|| Some("rejected".into()));
            }
        }
    }
    // Rejects are confirmed by the broker before their originals are acked.
    let mut confirms = Vec::new();
    for (d, reason) in batch.iter().zip(&reasons) {
        if let Some(reason) = reason {
            confirms.push(publish_reject(rejects, d, reason).await?);
        }
    }
    for c in confirms {
        if let Confirmation::Nack(_) = c.await? {
            return Err(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                lapin::ChannelState::Error,
                "the broker refused (nacked) a reject",
            )));
        }
    }
    if let Some(last) = batch.last() {
        // One ack for the whole batch: this consumer's deliveries arrive in tag order.
        last.acker.ack(BasicAckOptions { multiple: true }).await?;
    }
    Ok(true)
}

async fn publish_reject(
    ch: &Channel,
    d: &Delivery,
    reason: &str,
) -> lapin::Result<lapin::PublisherConfirm> {
    let mut headers = FieldTable::default();
    headers.insert(
        REJECT_REASON_HEADER.into(),
        AMQPValue::LongString(reason.into()),
    );
    headers.insert(
        "x-clm-routing-key".into(),
        AMQPValue::LongString(d.routing_key.as_str().into()),
    );
    let body = serde_json::json!({
        "reason": reason,
        "routing_key": d.routing_key.as_str(),
        "original": String::from_utf8_lossy(&d.data),
    });
    ch.basic_publish(
        REJECTED_EXCHANGE.into(),
        d.routing_key.clone(),
        BasicPublishOptions::default(),
        body.to_string().as_bytes(),
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(headers),
    )
    .await
}
