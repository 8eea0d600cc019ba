//! Automatic feedback to the hub for accepted messages: JSON webhooks to its `/ingest/email`
//! (delivered, bounced, opened, clicked, unsubscribed, complained), correlated by the message's
//! `Message-ID`, signed (HMAC) or with HTTP Basic, retried with backoff, counted. Never blocks a
//! reply; bounded in requests in flight.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use clm_contracts::channels::SIGNATURE_HEADER;
use clm_contracts::channels::email::{Bounce, BounceType, Webhook, WebhookKind};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::{REDACTED, redact_url};
use crate::util::{base64, signature};

/// The event names [`EmailFeedback::events`] takes.
pub const FEEDBACK_EVENTS: [&str; 7] = [
    "delivered",
    "opened",
    "clicked",
    "bounced_hard",
    "bounced_soft",
    "unsubscribed",
    "complained",
];

/// The diagnostic of a hard bounce.
const HARD_DIAGNOSTIC: &str = "smtp; 550 5.1.1 Recipient address rejected: User unknown";
/// The diagnostic of a soft bounce.
const SOFT_DIAGNOSTIC: &str = "smtp; 452 4.2.2 Mailbox full";

/// Attempts per webhook, and the backoff before the second one (then doubled): 5 attempts over
/// some 7.5 s, longer when the receiver asks for it with `Retry-After` (up to
/// [`MAX_RETRY_AFTER`]).
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Requests in flight at once, so a slow hub cannot make the mock open unbounded connections.
const CONCURRENCY: usize = 32;

/// Feedback sent for every accepted message (and every message held by a `hang` after its final
/// `.`: the relay has it). Every field has a default, so a control request may send only the
/// fields it changes. `Debug` and [`EmailFeedback::redacted`] hide the secrets.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmailFeedback {
    /// Where the webhooks go, normally the hub's `http://HUB/ingest/email`. Without it nothing
    /// is sent (what would have been is counted as failed).
    pub url: Option<String>,
    /// When set, webhooks carry `X-CLM-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    pub hmac_secret: Option<String>,
    /// `(username, password)` sent as HTTP Basic.
    pub basic: Option<(String, String)>,
    /// Sent for every message, in order: `delivered`, `opened`, `clicked`, `bounced_hard`,
    /// `bounced_soft`, `unsubscribed`, `complained`. Empty: no feedback.
    pub events: Vec<String>,
    /// Before the first webhook of a message (counted from its reply), then between webhooks.
    /// 50 by default.
    pub delay_ms: u64,
    /// Messages to any of these recipients (case-insensitive) get one hard `bounced` instead of
    /// `events`, even when `events` is empty.
    pub bounce_recipients: Vec<String>,
}

impl Default for EmailFeedback {
    fn default() -> Self {
        EmailFeedback {
            url: None,
            hmac_secret: None,
            basic: None,
            events: Vec::new(),
            delay_ms: 50,
            bounce_recipients: Vec::new(),
        }
    }
}

impl fmt::Debug for EmailFeedback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailFeedback")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("hmac_secret", &self.hmac_secret.as_ref().map(|_| REDACTED))
            .field(
                "basic",
                &self.basic.as_ref().map(|(user, _)| (user, REDACTED)),
            )
            .field("events", &self.events)
            .field("delay_ms", &self.delay_ms)
            // Addresses stay out of logs: only how many.
            .field("bounce_recipients", &self.bounce_recipients.len())
            .finish()
    }
}

impl EmailFeedback {
    /// The usual life of a good message: `delivered`, `opened`, `clicked`. No URL.
    pub fn typical() -> Self {
        EmailFeedback {
            events: ["delivered", "opened", "clicked"]
                .map(str::to_owned)
                .to_vec(),
            ..EmailFeedback::default()
        }
    }

    /// Checks the values; the error names the field (and the event) that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return Err(format!("url is not an http(s) URL: {}", redact_url(url))),
            }
        }
        for event in &self.events {
            if !FEEDBACK_EVENTS.contains(&event.as_str()) {
                return Err(format!(
                    "events: {event:?} is none of {}",
                    FEEDBACK_EVENTS.join(", ")
                ));
            }
        }
        if self.delay_ms > 600_000 {
            return Err(format!(
                "delay_ms must be at most 600000, got {}",
                self.delay_ms
            ));
        }
        Ok(())
    }

    /// A copy with `hmac_secret` and the Basic password shown as [`REDACTED`] when set: what the
    /// control API returns.
    pub fn redacted(&self) -> EmailFeedback {
        EmailFeedback {
            hmac_secret: self.hmac_secret.as_ref().map(|_| REDACTED.to_owned()),
            basic: self
                .basic
                .as_ref()
                .map(|(user, _)| (user.clone(), REDACTED.to_owned())),
            ..self.clone()
        }
    }

    /// `self` with secrets of [`REDACTED`] replaced by `current`'s (none when `current` has
    /// none): how the control API applies a `PUT` of what a `GET` returned.
    pub(crate) fn keeping_secrets_of(self, current: &EmailFeedback) -> EmailFeedback {
        let hmac_secret = match self.hmac_secret {
            Some(given) if given == REDACTED => current.hmac_secret.clone(),
            given => given,
        };
        let basic = match self.basic {
            Some((user, password)) if password == REDACTED => current
                .basic
                .as_ref()
                .map(|(_, current_password)| (user, current_password.clone())),
            basic => basic,
        };
        EmailFeedback {
            hmac_secret,
            basic,
            ..self
        }
    }

    /// The webhooks a message to `recipients` gets, in order.
    fn plan(&self, recipients: &[String]) -> Vec<Event> {
        let bounces = recipients.iter().any(|r| {
            self.bounce_recipients
                .iter()
                .any(|b| b.trim().eq_ignore_ascii_case(r))
        });
        if bounces {
            return vec![Event::BouncedHard];
        }
        self.events.iter().filter_map(|e| Event::parse(e)).collect()
    }
}

/// One feedback event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Delivered,
    Opened,
    Clicked,
    BouncedHard,
    BouncedSoft,
    Unsubscribed,
    Complained,
}

impl Event {
    fn parse(name: &str) -> Option<Event> {
        Some(match name {
            "delivered" => Event::Delivered,
            "opened" => Event::Opened,
            "clicked" => Event::Clicked,
            "bounced_hard" => Event::BouncedHard,
            "bounced_soft" => Event::BouncedSoft,
            "unsubscribed" => Event::Unsubscribed,
            "complained" => Event::Complained,
            _ => return None,
        })
    }

    /// The webhook's `kind`.
    fn kind(self) -> WebhookKind {
        match self {
            Event::Delivered => WebhookKind::Delivered,
            Event::Opened => WebhookKind::Opened,
            Event::Clicked => WebhookKind::Clicked,
            Event::BouncedHard | Event::BouncedSoft => WebhookKind::Bounced,
            Event::Unsubscribed => WebhookKind::Unsubscribed,
            Event::Complained => WebhookKind::Complained,
        }
    }

    /// The contract's webhook of this event for `message_id`, with a fresh `event_id`.
    fn webhook(self, message_id: &str, link: Option<&str>) -> Webhook {
        let bounce = |bounce_type, diagnostic: &str| {
            Some(Bounce {
                bounce_type,
                diagnostic: Some(diagnostic.to_owned()),
            })
        };
        Webhook {
            event_id: uuid::Uuid::new_v4().to_string(),
            message_id: message_id.to_owned(),
            kind: self.kind(),
            occurred_at: Utc::now(),
            bounce: match self {
                Event::BouncedHard => bounce(BounceType::Hard, HARD_DIAGNOSTIC),
                Event::BouncedSoft => bounce(BounceType::Soft, SOFT_DIAGNOSTIC),
                _ => None,
            },
            url: match self {
                Event::Clicked => link.map(str::to_owned),
                _ => None,
            },
        }
    }
}

/// What the feedback of one message needs to know about it.
pub(crate) struct Target {
    /// The queue id, for logs.
    pub(crate) queue_id: String,
    /// The `Message-ID` header value, angle brackets included.
    pub(crate) message_id: Option<String>,
    pub(crate) recipients: Vec<String>,
    /// The first link of the HTML part, for `clicked`.
    pub(crate) link: Option<String>,
}

/// The sender's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) sent: u64,
    pub(crate) failed: u64,
    pub(crate) retries: u64,
}

/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Sender(Arc<Inner>);

struct Inner {
    client: reqwest::Client,
    permits: Semaphore,
    sent: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    /// Warned once that feedback has nowhere to go.
    warned: AtomicBool,
    shutdown: CancellationToken,
    /// Cancelled by a reset (pending feedback is dropped) and replaced.
    pending: Mutex<CancellationToken>,
    tasks: TaskTracker,
}

impl Sender {
    /// Needs a rustls crypto provider installed (see `SmtpMock::start`).
    pub(crate) fn new(shutdown: CancellationToken) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .pool_idle_timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()?;
        Ok(Sender(Arc::new(Inner {
            client,
            permits: Semaphore::new(CONCURRENCY),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            pending: Mutex::new(shutdown.child_token()),
            shutdown,
            tasks: TaskTracker::new(),
        })))
    }

    pub(crate) fn counts(&self) -> Counts {
        Counts {
            sent: self.0.sent.load(Relaxed),
            failed: self.0.failed.load(Relaxed),
            retries: self.0.retries.load(Relaxed),
        }
    }

    /// Drops pending feedback and zeroes the counters.
    pub(crate) fn reset(&self) {
        {
            let mut pending = self
                .0
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            pending.cancel();
            *pending = self.0.shutdown.child_token();
        }
        for counter in [&self.0.sent, &self.0.failed, &self.0.retries] {
            counter.store(0, Relaxed);
        }
    }

    /// After shutdown was cancelled: waits (briefly) for the tasks to stop.
    pub(crate) async fn close(&self) {
        self.0.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.0.tasks.wait()).await;
    }

    /// Whether a message to `recipients` gets any feedback under `config` (so the caller can
    /// skip looking for its link).
    pub(crate) fn wants(config: &EmailFeedback, recipients: &[String]) -> bool {
        !config.plan(recipients).is_empty()
    }

    /// Whether `config` may send `clicked` for a message to `recipients`.
    pub(crate) fn wants_link(config: &EmailFeedback, recipients: &[String]) -> bool {
        config.plan(recipients).contains(&Event::Clicked)
    }

    /// Sends the feedback for `target` in the background: the first webhook after `delay_ms`,
    /// then one every `delay_ms`, each after the one before was delivered or given up on.
    pub(crate) fn schedule(&self, config: Arc<EmailFeedback>, target: Target) {
        let events = config.plan(&target.recipients);
        if events.is_empty() {
            return;
        }
        let Some(message_id) = target.message_id.clone() else {
            self.0.failed.fetch_add(events.len() as u64, Relaxed);
            tracing::warn!(queue_id = %target.queue_id, "smtp mock: a message without Message-ID gets no feedback (counted as failed)");
            return;
        };
        let Some(url) = config.url.clone() else {
            self.0.failed.fetch_add(events.len() as u64, Relaxed);
            if !self.0.warned.swap(true, Relaxed) {
                tracing::warn!(
                    "smtp mock: feedback is configured but has no url: counted as failed"
                );
            }
            return;
        };
        let this = self.clone();
        let pending = self
            .0
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.0.tasks.spawn(async move {
            let task = async {
                let delay = Duration::from_millis(config.delay_ms);
                for event in events {
                    tokio::time::sleep(delay).await;
                    this.deliver(&config, &url, &target, &message_id, event)
                        .await;
                }
            };
            tokio::select! {
                () = pending.cancelled() => {}
                () = task => {}
            }
        });
    }

    async fn deliver(
        &self,
        config: &EmailFeedback,
        url: &str,
        target: &Target,
        message_id: &str,
        event: Event,
    ) {
        let webhook = event.webhook(message_id, target.link.as_deref());
        let event_id = webhook.event_id.clone();
        let kind = webhook.kind;
        let body = match serde_json::to_vec(&webhook) {
            Ok(body) => Bytes::from(body),
            Err(error) => {
                tracing::warn!(%error, "smtp mock: feedback not serializable");
                self.0.failed.fetch_add(1, Relaxed);
                return;
            }
        };
        match self.post(config, url, &body).await {
            Ok(()) => {
                self.0.sent.fetch_add(1, Relaxed);
                tracing::debug!(queue_id = %target.queue_id, %message_id, %event_id, ?kind, "smtp mock: feedback sent");
            }
            Err(last) => {
                self.0.failed.fetch_add(1, Relaxed);
                tracing::warn!(queue_id = %target.queue_id, %message_id, %event_id, ?kind, %last, "smtp mock: feedback given up");
            }
        }
    }

    /// One webhook, retried on transport errors, 408, 429 and 5xx with exponential backoff (or
    /// the receiver's `Retry-After`). `Err` holds the last failure.
    async fn post(&self, config: &EmailFeedback, url: &str, body: &Bytes) -> Result<(), String> {
        let signed = config.hmac_secret.as_deref().map(|s| signature(s, body));
        let basic = config.basic.as_ref().map(|(user, password)| {
            format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
        });
        let mut backoff = FIRST_BACKOFF;
        let mut wait = Duration::ZERO;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                self.0.retries.fetch_add(1, Relaxed);
                tokio::time::sleep(wait.max(backoff)).await;
                backoff *= 2;
            }
            let result = {
                // The permit bounds requests in flight, not webhooks waiting for their backoff.
                let Ok(_permit) = self.0.permits.acquire().await else {
                    return Err("closed".to_owned());
                };
                let mut request = self
                    .0
                    .client
                    .post(url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
                if let Some(signed) = &signed {
                    request = request.header(SIGNATURE_HEADER, signed);
                }
                if let Some(basic) = &basic {
                    request = request.header(AUTHORIZATION, basic);
                }
                request.send().await
            };
            match result {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    last = status.to_string();
                    let retryable = status.is_server_error()
                        || status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::REQUEST_TIMEOUT;
                    if !retryable {
                        return Err(last);
                    }
                    wait = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map_or(Duration::ZERO, |secs| {
                            Duration::from_secs(secs).min(MAX_RETRY_AFTER)
                        });
                }
                Err(error) => {
                    last = error.without_url().to_string();
                    wait = Duration::ZERO;
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounce_recipients_get_one_hard_bounce() {
        let config = EmailFeedback {
            bounce_recipients: vec![" Gone@Example.com ".into()],
            ..EmailFeedback::typical()
        };
        assert_eq!(
            config.plan(&["gone@example.com".into()]),
            [Event::BouncedHard]
        );
        assert_eq!(
            config.plan(&["ok@example.com".into()]),
            [Event::Delivered, Event::Opened, Event::Clicked]
        );
        assert!(EmailFeedback::default().plan(&["a@b".into()]).is_empty());
    }

    #[test]
    fn secrets_are_redacted_and_kept() {
        let current = EmailFeedback {
            hmac_secret: Some("s3cret".into()),
            basic: Some(("hub".into(), "pa55".into())),
            bounce_recipients: vec!["gone@example.com".into()],
            ..EmailFeedback::typical()
        };
        let shown = format!("{current:?}");
        for secret in ["s3cret", "pa55", "gone@example.com"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let redacted = current.redacted();
        assert_eq!(redacted.hmac_secret.as_deref(), Some(REDACTED));
        assert_eq!(redacted.basic, Some(("hub".into(), REDACTED.into())));
        assert_eq!(redacted.clone().keeping_secrets_of(&current), current);
        let none = redacted.keeping_secrets_of(&EmailFeedback::default());
        assert_eq!((none.hmac_secret, none.basic), (None, None));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = EmailFeedback {
            events: vec!["bounced".into()],
            ..EmailFeedback::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("events"));
        let bad = EmailFeedback {
            url: Some("ftp://hub".into()),
            ..EmailFeedback::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("url"));
        assert!(EmailFeedback::typical().validate().is_ok());
    }

    #[test]
    fn webhook_shape() {
        let json =
            serde_json::to_value(Event::BouncedHard.webhook("<m@h>", Some("http://x"))).unwrap();
        assert_eq!(json["kind"], "bounced");
        assert_eq!(json["message_id"], "<m@h>");
        assert_eq!(json["bounce"]["type"], "hard");
        assert_eq!(json["bounce"]["diagnostic"], HARD_DIAGNOSTIC);
        assert!(json.get("url").is_none(), "{json}");
        let json = serde_json::to_value(Event::Clicked.webhook("<m@h>", Some("http://x"))).unwrap();
        assert_eq!(json["url"], "http://x");
        assert!(json.get("bounce").is_none(), "{json}");
        let soft = Event::BouncedSoft.webhook("<m@h>", None);
        assert!(!soft.suppresses(), "a soft bounce does not suppress");
    }
}
