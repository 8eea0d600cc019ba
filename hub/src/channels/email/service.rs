//! The hub's side of the e-mail channel: the suppression list, the `/ingest/email` events, and
//! the tracking the hub serves itself for relays that report nothing.
//!
//! - **Suppression**: a hard bounce (a 5.1.x answer at send time, or a hard `bounced` event), a
//!   complaint or an unsubscribe puts the address on the list (store table `suppressions`); the
//!   plug-in's gate fails a communication to a suppressed address with reason `suppressed` before
//!   any SMTP session.
//! - `GET /t/o/{token}`: the open pixel (a 1×1 GIF), records `opened` once.
//! - `GET /t/c/{token}`: records `clicked` (once per link) and redirects to the link.
//! - `GET /u/{token}`: a page with a button; `POST /u/{token}`: unsubscribes (RFC 8058 one-click:
//!   the mail client POSTs `List-Unsubscribe=One-Click`), records `unsubscribed`, suppresses.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Utc;
use clm_contracts::{ChannelId, ResponseKind};
use sha2::{Digest, Sha256};
use tracing::warn;
use uuid::Uuid;

use super::EmailPlugin;
use super::tracking::Token;
use crate::state::Shared;
use crate::store::{Correlation, IncomingResponse, ResponseOutcome};

/// Suppression reasons, as stored.
pub const HARD_BOUNCE: &str = "hard_bounce";
pub const COMPLAINT: &str = "complaint";
pub const UNSUBSCRIBE: &str = "unsubscribe";

/// A response of an e-mail communication, as the hub saw it or was told.
pub struct Seen {
    pub id: Uuid,
    pub kind: ResponseKind,
    /// What makes a second report of the same response a duplicate.
    pub dedupe_key: String,
    pub detail: Option<String>,
    pub occurred_at: Option<chrono::DateTime<Utc>>,
    /// The suppression reason, when the response puts the address on the list.
    pub suppress: Option<&'static str>,
}

/// Records a response the hub saw itself (pixel, click, unsubscribe) or got by webhook, and
/// suppresses the address when the response says so.
pub async fn record(
    shared: &Shared,
    plugin: &EmailPlugin,
    seen: Seen,
) -> Result<ResponseOutcome, String> {
    let Seen {
        id,
        kind,
        dedupe_key,
        detail,
        occurred_at,
        suppress,
    } = seen;
    let item = IncomingResponse {
        channel: ChannelId::Email,
        correlation: Correlation::Id(id),
        kind,
        occurred_at,
        detail,
        dedupe_key,
        whole_message: true,
    };
    let outcome = shared
        .ingest
        .call(vec![item])
        .await?
        .pop()
        .unwrap_or(ResponseOutcome::NotFound);
    if outcome == ResponseOutcome::Recorded {
        shared.outbox_wake.notify_one();
        if let Some(ch) = shared.channels.get(&ChannelId::Email) {
            ch.counters.responses.fetch_add(1, Ordering::Relaxed);
        }
    }
    // A duplicate suppresses too: the first delivery of the event may have been recorded while
    // its suppression failed, and the sender retried because we answered 503.
    if let (Some(reason), ResponseOutcome::Recorded | ResponseOutcome::Duplicate) =
        (suppress, outcome)
    {
        suppress_recipient(shared, plugin, id, reason).await?;
    }
    Ok(outcome)
}

/// Puts the recipient of communication `id` on the suppression list. An error is the caller's
/// to answer with 503, so that the event (or the unsubscribe) is sent again.
pub async fn suppress_recipient(
    shared: &Shared,
    plugin: &EmailPlugin,
    id: Uuid,
    reason: &str,
) -> Result<(), String> {
    match shared.store.recipient_of(id).await {
        Ok(Some((ChannelId::Email, address))) => {
            shared
                .store
                .suppress(&address, reason, Some(id), Utc::now())
                .await
                .map_err(|e| {
                    warn!(communication_id = %id, error = %e, "could not suppress the address");
                    e.to_string()
                })?;
            plugin.suppressed.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            warn!(communication_id = %id, error = %e, "could not look up the address to suppress");
            Err(e.to_string())
        }
    }
}

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn pixel() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store, max-age=0"),
        ],
        PIXEL,
    )
        .into_response()
}

/// `GET /t/o/{token}`: always the pixel (a bad token must not break the mail's rendering).
pub async fn open(
    State(shared): State<Arc<Shared>>,
    Extension(plugin): Extension<Arc<EmailPlugin>>,
    Path(token): Path<String>,
) -> Response {
    let token = token.trim_end_matches(".gif");
    if let Some(Token::Open(id)) = plugin.sealer.as_ref().and_then(|s| s.open(token))
        && let Err(e) = record(
            &shared,
            &plugin,
            Seen {
                id,
                kind: ResponseKind::Opened,
                dedupe_key: "track:opened".into(),
                detail: None,
                occurred_at: Some(Utc::now()),
                suppress: None,
            },
        )
        .await
    {
        warn!(communication_id = %id, error = %e, "open not recorded");
    }
    pixel()
}

/// `GET /t/c/{token}`: records the click and redirects; a bad token gets 404 (no open redirect).
pub async fn click(
    State(shared): State<Arc<Shared>>,
    Extension(plugin): Extension<Arc<EmailPlugin>>,
    Path(token): Path<String>,
) -> Response {
    let Some(Token::Click(id, url)) = plugin.sealer.as_ref().and_then(|s| s.open(&token)) else {
        return (StatusCode::NOT_FOUND, "unknown link\n").into_response();
    };
    let key = format!(
        "track:clicked:{}",
        hex::encode(&Sha256::digest(url.as_bytes())[..8])
    );
    if let Err(e) = record(
        &shared,
        &plugin,
        Seen {
            id,
            kind: ResponseKind::Clicked,
            dedupe_key: key,
            detail: Some(url.clone()),
            occurred_at: Some(Utc::now()),
            suppress: None,
        },
    )
    .await
    {
        warn!(communication_id = %id, error = %e, "click not recorded");
    }
    Redirect::to(&url).into_response()
}

/// `GET /u/{token}`: a confirmation page (link scanners follow GETs; only a POST unsubscribes).
pub async fn unsubscribe_page(
    Extension(plugin): Extension<Arc<EmailPlugin>>,
    Path(token): Path<String>,
) -> Response {
    if !matches!(
        plugin.sealer.as_ref().and_then(|s| s.open(&token)),
        Some(Token::Unsubscribe(_))
    ) {
        return (StatusCode::NOT_FOUND, "unknown link\n").into_response();
    }
    Html(format!(
        "<!doctype html><html lang=\"ru\"><meta charset=\"utf-8\"><title>Отписка</title>\
         <body><form method=\"post\" action=\"{token}\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <p>Отписаться от рассылки? / Unsubscribe from these messages?</p>\
         <button type=\"submit\">Отписаться / Unsubscribe</button></form></body></html>"
    ))
    .into_response()
}

/// `POST /u/{token}`: RFC 8058 one-click unsubscribe (or the page's button).
pub async fn unsubscribe(
    State(shared): State<Arc<Shared>>,
    Extension(plugin): Extension<Arc<EmailPlugin>>,
    Path(token): Path<String>,
) -> Response {
    let Some(Token::Unsubscribe(id)) = plugin.sealer.as_ref().and_then(|s| s.open(&token)) else {
        return (StatusCode::NOT_FOUND, "unknown link\n").into_response();
    };
    match record(
        &shared,
        &plugin,
        Seen {
            id,
            kind: ResponseKind::Unsubscribed,
            dedupe_key: "track:unsubscribed".into(),
            detail: None,
            occurred_at: Some(Utc::now()),
            suppress: Some(UNSUBSCRIBE),
        },
    )
    .await
    {
        Ok(_) => Html(
            "<!doctype html><html lang=\"ru\"><meta charset=\"utf-8\"><title>Готово</title>\
             <body><p>Вы отписаны. / You are unsubscribed.</p></body></html>",
        )
        .into_response(),
        Err(e) => {
            warn!(communication_id = %id, error = %e, "unsubscribe not recorded");
            (StatusCode::SERVICE_UNAVAILABLE, "try again in a moment\n").into_response()
        }
    }
}

/// An e-mail event (`clm_contracts::channels::email::Webhook`): correlated by the `Message-ID`
/// the hub gave the message, recorded, and the address suppressed on a hard bounce, a complaint
/// or an unsubscribe.
pub(crate) async fn ingest_event(shared: &Shared, plugin: &EmailPlugin, body: &[u8]) -> Response {
    use clm_contracts::channels::email::{BounceType, Webhook, WebhookKind};
    let malformed = |msg: String| {
        shared
            .metrics
            .ingest_malformed
            .fetch_add(1, Ordering::Relaxed);
        crate::ingest::error(StatusCode::BAD_REQUEST, msg)
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return malformed("empty body: expected an e-mail event".into());
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let hook: Webhook = match serde_path_to_error::deserialize(de) {
        Ok(h) => h,
        Err(e) => {
            let path = e.path().to_string();
            let inner: String = e.into_inner().to_string().chars().take(200).collect();
            return malformed(format!("invalid email event at `{path}`: {inner}"));
        }
    };
    if hook.event_id.trim().is_empty() {
        return malformed("event_id must not be empty".into());
    }
    {
        use clm_contracts::communication::storable;
        let diagnostic = hook.bounce.as_ref().and_then(|b| b.diagnostic.as_deref());
        let checks = [
            storable("event_id", &hook.event_id, crate::store::MAX_REFERENCE_LEN),
            storable(
                "message_id",
                &hook.message_id,
                crate::store::MAX_REFERENCE_LEN,
            ),
            storable("url", hook.url.as_deref().unwrap_or(""), usize::MAX),
            storable("bounce.diagnostic", diagnostic.unwrap_or(""), usize::MAX),
        ];
        if let Some(Err(e)) = checks.into_iter().find(Result::is_err) {
            return malformed(e.to_string());
        }
    }
    let Some(id) = clm_connectors::email::communication_of_message_id(&hook.message_id) else {
        shared
            .metrics
            .ingest_unknown
            .fetch_add(1, Ordering::Relaxed);
        return crate::ingest::error(StatusCode::NOT_FOUND, "message_id is not one the hub sent");
    };
    let detail = match hook.kind {
        WebhookKind::Bounced => hook.bounce.as_ref().map(|b| {
            let kind = match b.bounce_type {
                BounceType::Hard => "hard bounce",
                BounceType::Soft => "soft bounce",
            };
            // A diagnostic usually names the address (`550 5.1.1 <ivan@…>`): masked.
            match &b.diagnostic {
                Some(d) => format!("{kind}: {}", clm_connectors::email::mask_addresses(d)),
                None => kind.to_owned(),
            }
        }),
        WebhookKind::Clicked => hook.url.clone(),
        _ => None,
    };
    let suppress = hook.suppresses().then_some(match hook.kind {
        WebhookKind::Complained => COMPLAINT,
        WebhookKind::Unsubscribed => UNSUBSCRIBE,
        _ => HARD_BOUNCE,
    });
    let outcome = record(
        shared,
        plugin,
        Seen {
            id,
            kind: hook.response_kind(),
            dedupe_key: format!("hook:{}", hook.event_id),
            detail,
            occurred_at: Some(hook.occurred_at),
            suppress,
        },
    )
    .await;
    let m = &shared.metrics;
    match outcome {
        Ok(ResponseOutcome::Recorded) => {
            m.ingest_recorded.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::OK,
                Json(serde_json::json!({"outcome": "recorded"})),
            )
                .into_response()
        }
        Ok(ResponseOutcome::Duplicate) => {
            m.ingest_duplicate.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::OK,
                Json(serde_json::json!({"outcome": "duplicate"})),
            )
                .into_response()
        }
        Ok(ResponseOutcome::NotFound) => {
            m.ingest_unknown.fetch_add(1, Ordering::Relaxed);
            crate::ingest::error(StatusCode::NOT_FOUND, "no communication matches this event")
        }
        Err(e) => crate::ingest::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}"),
        ),
    }
}
