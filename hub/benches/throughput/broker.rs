//! AMQP helpers for the bench (pipelined confirmed publishing, counting consumers) and ceiling B:
//! RabbitMQ alone, publish → consume.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::json;
use uuid::Uuid;

use crate::cpu::{Cpu, CpuShares, Procs};
use crate::{RECIPIENT, TEXT};

/// Unconfirmed publishes at most (the publisher awaits the oldest confirm beyond that).
pub const WINDOW: usize = 1000;
/// Consumer prefetch of ceiling B and of the event tap.
pub const PREFETCH: u16 = 1000;
/// One `basic.ack` with `multiple` per this many deliveries.
const ACK_EVERY: u64 = 100;
/// No progress for this long fails the run.
pub const STALL: Duration = Duration::from_secs(30);

pub async fn connect(url: &str, name: &str) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, props)
        .await
        .with_context(|| format!("connect to RabbitMQ ({name})"))
}

/// Publishes every body with confirms, at most [`WINDOW`] unconfirmed; counts the confirmed.
pub async fn publish_confirmed(
    ch: Channel,
    exchange: String,
    key: String,
    bodies: Arc<Vec<Vec<u8>>>,
    confirmed: Arc<AtomicU64>,
) -> anyhow::Result<Instant> {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    let mut window = VecDeque::with_capacity(WINDOW);
    for body in bodies.iter() {
        if window.len() == WINDOW {
            settle(window.pop_front().expect("a full window"), &confirmed).await?;
        }
        window.push_back(
            ch.basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                body,
                props.clone(),
            )
            .await?,
        );
    }
    for c in window {
        settle(c, &confirmed).await?;
    }
    Ok(Instant::now())
}

pub async fn settle(c: lapin::PublisherConfirm, confirmed: &AtomicU64) -> anyhow::Result<()> {
    match c.await? {
        Confirmation::Ack(_) => {
            confirmed.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Confirmation::Nack(_) => bail!("RabbitMQ nacked a publish"),
        Confirmation::NotRequested => bail!("publisher confirms are not enabled"),
    }
}

/// Consumes until `n` deliveries were seen (acked with `multiple` every [`ACK_EVERY`]); the
/// instant the n-th arrived.
pub async fn consume(
    mut consumer: lapin::Consumer,
    n: u64,
    seen: Arc<AtomicU64>,
) -> anyhow::Result<Instant> {
    let mut count = 0_u64;
    while let Some(d) = consumer.next().await {
        let d = d?;
        count += 1;
        seen.store(count, Ordering::Relaxed);
        if count >= n {
            let at = Instant::now();
            d.acker.ack(BasicAckOptions { multiple: true }).await?;
            return Ok(at);
        }
        if count.is_multiple_of(ACK_EVERY) {
            d.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    bail!("the consumer ended after {count} of {n} deliveries")
}

pub async fn consumer_on(ch: &Channel, queue: &str, tag: &str) -> anyhow::Result<lapin::Consumer> {
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    Ok(ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?)
}

/// N communications as the campaign engine would publish them, each about 300 bytes of JSON.
pub fn bodies(n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            json!({
                "id": Uuid::new_v4().to_string(),
                "campaign_id": "bench-production",
                "customer_id": format!("cust-{i:08}"),
                "channel": "sms",
                "recipient": RECIPIENT,
                "content": {"text": TEXT},
                "priority": 5,
                "timezone": "Europe/Moscow",
                "attributes": {"segment": "b2c-mass", "offer": "offer-2026-11", "source": "throughput-bench"},
            })
            .to_string()
            .into_bytes()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Ceiling B: RabbitMQ alone

pub struct BrokerCeiling {
    pub kind: &'static str,
    pub rate: f64,
    pub wall: f64,
    /// First publish → all N confirmed.
    pub confirmed: f64,
    pub cpu: CpuShares,
}

pub async fn broker_ceiling(
    url: &str,
    bodies: &Arc<Vec<Vec<u8>>>,
    quorum: bool,
    procs: &Procs,
) -> anyhow::Result<BrokerCeiling> {
    let n = bodies.len() as u64;
    let kind = if quorum { "quorum" } else { "classic" };
    let queue = format!("clm.bench.ceiling.{kind}");
    let pub_conn = connect(url, "throughput bench: ceiling publisher").await?;
    let con_conn = connect(url, "throughput bench: ceiling consumer").await?;
    let pch = pub_conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut args = FieldTable::default();
    if quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    pch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await?;
    let cch = con_conn.create_channel().await?;
    let consumer = consumer_on(&cch, &queue, "throughput-bench-ceiling").await?;

    let (seen, confirmed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let cpu0 = Cpu::take(procs);
    let t0 = Instant::now();
    let consuming = tokio::spawn(consume(consumer, n, seen.clone()));
    let publishing = tokio::spawn(publish_confirmed(
        pch.clone(),
        String::new(),
        queue.clone(),
        bodies.clone(),
        confirmed.clone(),
    ));
    let mut last = (0_u64, Instant::now());
    while !(consuming.is_finished() && publishing.is_finished()) {
        let progress = seen.load(Ordering::Relaxed) + confirmed.load(Ordering::Relaxed);
        if progress != last.0 {
            last = (progress, Instant::now());
        } else if last.1.elapsed() > STALL {
            consuming.abort();
            publishing.abort();
            bail!(
                "ceiling B ({kind}): stalled for 30 s at {} confirmed, {} consumed of {n}",
                confirmed.load(Ordering::Relaxed),
                seen.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = consuming.await??;
    let all_confirmed = publishing.await??;
    let cpu = Cpu::take(procs).since(&cpu0);
    pch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = pub_conn.close(200, "done".into()).await;
    let _ = con_conn.close(200, "done".into()).await;
    let wall = (done - t0).as_secs_f64();
    Ok(BrokerCeiling {
        kind,
        rate: n as f64 / wall,
        wall,
        confirmed: (all_confirmed - t0).as_secs_f64(),
        cpu,
    })
}
