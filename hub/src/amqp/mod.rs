//! RabbitMQ (AMQP 0-9-1, lapin): communications in, rejects and events out.
//!
//! Topology (declared idempotently by every instance at every (re)connect):
//! - exchange `clm.communications` (topic, durable): the campaign engine publishes here with the
//!   channel id as routing key;
//! - queue `clm.hub.communications` (quorum, durable) bound with `#`: all hub instances consume
//!   it. Quorum rather than classic: it is replicated when the broker is a cluster, survives a
//!   broker restart by design, and its `x-delivery-limit` turns a message that keeps crashing
//!   consumers into a dead letter instead of a loop;
//! - exchange `clm.communications.rejected` (fanout, durable) and queue of the same name bound to
//!   it: invalid input, with the reason in header `x-clm-reject-reason` and in the body;
//! - exchange `clm.events` (topic, durable): `status.<channel>.<state>` and
//!   `response.<channel>.<kind>`; consumers bind their own queues.

pub mod intake;
pub mod publisher;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

pub const COMMUNICATIONS_EXCHANGE: &str = "clm.communications";
pub const COMMUNICATIONS_QUEUE: &str = "clm.hub.communications";
pub const REJECTED_EXCHANGE: &str = "clm.communications.rejected";
pub const REJECTED_QUEUE: &str = "clm.communications.rejected";
pub const EVENTS_EXCHANGE: &str = "clm.events";
/// Header carrying why a message was rejected.
pub const REJECT_REASON_HEADER: &str = "x-clm-reject-reason";
/// Deliveries of one message before the quorum queue gives up on it (it is then dropped by the
/// broker unless a dead-letter exchange is configured). Our consumer never lets it get there: a
/// delivery whose `x-delivery-count` reaches [`DEAD_LETTER_AT`] (it came back that often without
/// being stored: crashes, reconnects in a long outage) is published to the reject exchange with
/// that reason and acked, so it is never dropped silently. (A dead-letter argument on the queue
/// would do the same, but changing a declared queue's arguments fails on every existing broker.)
const DELIVERY_LIMIT: i64 = 20;
pub(crate) const DEAD_LETTER_AT: i64 = DELIVERY_LIMIT - 2;

/// Connection state shared with `/readyz`.
#[derive(Debug, Default)]
pub struct BrokerState {
    intake_connected: AtomicBool,
    publisher_connected: AtomicBool,
}

impl BrokerState {
    pub fn intake_connected(&self) -> bool {
        self.intake_connected.load(Ordering::Relaxed)
    }
    pub fn publisher_connected(&self) -> bool {
        self.publisher_connected.load(Ordering::Relaxed)
    }
    pub(crate) fn set_intake(&self, v: bool) {
        self.intake_connected.store(v, Ordering::Relaxed);
    }
    pub(crate) fn set_publisher(&self, v: bool) {
        self.publisher_connected.store(v, Ordering::Relaxed);
    }
}

pub type SharedBrokerState = Arc<BrokerState>;

/// How long opening a connection (TCP, TLS, the AMQP handshake) may take. A broker that is
/// still booting may accept TCP and never finish the handshake; without a bound the reconnect
/// loop would wait on it for ever instead of trying again.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, props)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no AMQP connection within {} s", CONNECT_TIMEOUT.as_secs()),
        )
        .into()),
    }
}

/// Declares everything the hub uses; safe to repeat.
pub async fn declare_topology(ch: &Channel) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(
        COMMUNICATIONS_EXCHANGE.into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        REJECTED_EXCHANGE.into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        EVENTS_EXCHANGE.into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await?;
    let queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    quorum.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    ch.queue_declare(COMMUNICATIONS_QUEUE.into(), queue, quorum.clone())
        .await?;
    ch.queue_bind(
        COMMUNICATIONS_QUEUE.into(),
        COMMUNICATIONS_EXCHANGE.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(REJECTED_QUEUE.into(), queue, quorum)
        .await?;
    ch.queue_bind(
        REJECTED_QUEUE.into(),
        REJECTED_EXCHANGE.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Reconnect delays: 100 ms doubling to 5 s.
pub(crate) fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(Duration::from_secs(5))
}
