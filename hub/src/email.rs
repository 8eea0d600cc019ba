//! The hub's side of the e-mail channel: the suppression list, the `/ingest/email` webhook, and
//! the tracking the hub serves itself for relays that report nothing.
//!
//! - **Suppression**: a hard bounce (a 5.1.x answer at send time, or a hard `bounced` event), a
//!   complaint or an unsubscribe puts the address on the list (store table `suppressions`); the
//!   dispatcher fails a communication to a suppressed address with reason `suppressed` before any
//!   SMTP session.
//! - **Tracking tokens** name a communication (and, for a click, the link) sealed with
//!   ChaCha20-Poly1305 under `channels.email.tracking.secret`: they reveal nothing (not even the
//!   communication id) and cannot be forged or altered.
//! - `GET /t/o/{token}`: the open pixel (a 1×1 GIF), records `opened` once.
//! - `GET /t/c/{token}`: records `clicked` (once per link) and redirects to the link.
//! - `GET /u/{token}`: a page with a button; `POST /u/{token}`: unsubscribes (RFC 8058 one-click:
//!   the mail client POSTs `List-Unsubscribe=One-Click`), records `unsubscribed`, suppresses.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use clm_contracts::{ChannelId, Communication, ResponseKind};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use tracing::warn;
use uuid::Uuid;

use crate::state::Shared;
use crate::store::{Correlation, IncomingResponse, ResponseOutcome};

/// Suppression reasons, as stored.
pub const HARD_BOUNCE: &str = "hard_bounce";
pub const COMPLAINT: &str = "complaint";
pub const UNSUBSCRIBE: &str = "unsubscribe";

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Open(Uuid),
    Click(Uuid, String),
    Unsubscribe(Uuid),
}

/// Seals and opens tracking tokens.
#[derive(Clone)]
pub struct Sealer {
    key: Arc<LessSafeKey>,
}

impl Sealer {
    /// A key derived from the configured secret (any length; SHA-256 makes it 32 bytes).
    pub fn new(secret: &str) -> Sealer {
        let digest = Sha256::digest(secret.as_bytes());
        let key = UnboundKey::new(&CHACHA20_POLY1305, &digest).expect("32-byte key");
        Sealer {
            key: Arc::new(LessSafeKey::new(key)),
        }
    }

    pub fn seal(&self, token: &Token) -> String {
        let mut plain = Vec::with_capacity(64);
        let (tag, id, url) = match token {
            Token::Open(id) => (b'o', id, None),
            Token::Click(id, url) => (b'c', id, Some(url.as_str())),
            Token::Unsubscribe(id) => (b'u', id, None),
        };
        plain.push(tag);
        plain.extend_from_slice(id.as_bytes());
        if let Some(u) = url {
            plain.extend_from_slice(u.as_bytes());
        }
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        self.key
            .seal_in_place_append_tag(nonce, Aad::empty(), &mut plain)
            .expect("sealing cannot fail for these sizes");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&plain);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn open(&self, text: &str) -> Option<Token> {
        let raw = URL_SAFE_NO_PAD.decode(text.as_bytes()).ok()?;
        if raw.len() < NONCE_LEN + 17 + CHACHA20_POLY1305.tag_len() {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut sealed)
            .ok()?;
        let (&tag, rest) = plain.split_first()?;
        let id = Uuid::from_slice(rest.get(..16)?).ok()?;
        match tag {
            b'o' => Some(Token::Open(id)),
            b'u' => Some(Token::Unsubscribe(id)),
            b'c' => Some(Token::Click(
                id,
                String::from_utf8(rest[16..].to_vec()).ok()?,
            )),
            _ => None,
        }
    }
}

/// The links the e-mail connector puts into a message.
pub struct Tracker {
    pub sealer: Sealer,
    /// `server.public_url`, without a trailing slash.
    pub base: String,
    pub open_pixel: bool,
    pub click_tracking: bool,
}

impl clm_connectors::email::Tracking for Tracker {
    fn unsubscribe_url(&self, comm: &Communication) -> Option<String> {
        Some(format!(
            "{}/u/{}",
            self.base,
            self.sealer.seal(&Token::Unsubscribe(comm.id))
        ))
    }

    fn rewrite_html(&self, comm: &Communication, html: &str) -> String {
        let mut out = if self.click_tracking {
            rewrite_links(html, |url| {
                format!(
                    "{}/t/c/{}",
                    self.base,
                    self.sealer.seal(&Token::Click(comm.id, url.to_owned()))
                )
            })
        } else {
            html.to_owned()
        };
        if self.open_pixel {
            let pixel = format!(
                "<img src=\"{}/t/o/{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">",
                self.base,
                self.sealer.seal(&Token::Open(comm.id))
            );
            match out.to_ascii_lowercase().rfind("</body>") {
                Some(i) => out.insert_str(i, &pixel),
                None => out.push_str(&pixel),
            }
        }
        out
    }
}

/// Replaces every `href="http…"` / `href='http…'` target with `rewrite(url)`; other links
/// (`mailto:`, anchors) stay as they are.
pub fn rewrite_links(html: &str, rewrite: impl Fn(&str) -> String) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len() + 256);
    let mut i = 0;
    while let Some(found) = lower[i..].find("href=") {
        let at = i + found + "href=".len();
        out.push_str(&html[i..at]);
        let quote = html[at..].chars().next();
        match quote {
            Some(q @ ('"' | '\'')) => {
                let start = at + 1;
                let Some(len) = html[start..].find(q) else {
                    i = at;
                    continue;
                };
                let url = &html[start..start + len];
                let decoded = url.replace("&amp;", "&");
                out.push(q);
                if decoded.starts_with("http://") || decoded.starts_with("https://") {
                    out.push_str(&rewrite(&decoded));
                } else {
                    out.push_str(url);
                }
                out.push(q);
                i = start + len + 1;
            }
            _ => i = at,
        }
    }
    out.push_str(&html[i..]);
    out
}

/// Records a response the hub saw itself (pixel, click, unsubscribe) or got by webhook, and
/// suppresses the address when the response says so.
pub async fn record(
    shared: &Shared,
    id: Uuid,
    kind: ResponseKind,
    dedupe_key: String,
    detail: Option<String>,
    occurred_at: Option<chrono::DateTime<Utc>>,
    suppress: Option<&'static str>,
) -> Result<ResponseOutcome, String> {
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
        suppress_recipient(shared, id, reason).await?;
    }
    Ok(outcome)
}

/// Puts the recipient of communication `id` on the suppression list. An error is the caller's
/// to answer with 503, so that the event (or the unsubscribe) is sent again.
pub async fn suppress_recipient(shared: &Shared, id: Uuid, reason: &str) -> Result<(), String> {
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
            shared
                .metrics
                .email_suppressed
                .fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            warn!(communication_id = %id, error = %e, "could not look up the address to suppress");
            Err(e.to_string())
        }
    }
}

fn tracker_sealer(shared: &Shared) -> Option<&Sealer> {
    shared.email_tracking.as_ref()
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
pub async fn open(State(shared): State<Arc<Shared>>, Path(token): Path<String>) -> Response {
    let token = token.trim_end_matches(".gif");
    if let Some(Token::Open(id)) = tracker_sealer(&shared).and_then(|s| s.open(token))
        && let Err(e) = record(
            &shared,
            id,
            ResponseKind::Opened,
            "track:opened".into(),
            None,
            Some(Utc::now()),
            None,
        )
        .await
    {
        warn!(communication_id = %id, error = %e, "open not recorded");
    }
    pixel()
}

/// `GET /t/c/{token}`: records the click and redirects; a bad token gets 404 (no open redirect).
pub async fn click(State(shared): State<Arc<Shared>>, Path(token): Path<String>) -> Response {
    let Some(Token::Click(id, url)) = tracker_sealer(&shared).and_then(|s| s.open(&token)) else {
        return (StatusCode::NOT_FOUND, "unknown link\n").into_response();
    };
    let key = format!(
        "track:clicked:{}",
        hex::encode(&Sha256::digest(url.as_bytes())[..8])
    );
    if let Err(e) = record(
        &shared,
        id,
        ResponseKind::Clicked,
        key,
        Some(url.clone()),
        Some(Utc::now()),
        None,
    )
    .await
    {
        warn!(communication_id = %id, error = %e, "click not recorded");
    }
    Redirect::to(&url).into_response()
}

/// `GET /u/{token}`: a confirmation page (link scanners follow GETs; only a POST unsubscribes).
pub async fn unsubscribe_page(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
) -> Response {
    if !matches!(
        tracker_sealer(&shared).and_then(|s| s.open(&token)),
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
pub async fn unsubscribe(State(shared): State<Arc<Shared>>, Path(token): Path<String>) -> Response {
    let Some(Token::Unsubscribe(id)) = tracker_sealer(&shared).and_then(|s| s.open(&token)) else {
        return (StatusCode::NOT_FOUND, "unknown link\n").into_response();
    };
    match record(
        &shared,
        id,
        ResponseKind::Unsubscribed,
        "track:unsubscribed".into(),
        None,
        Some(Utc::now()),
        Some(UNSUBSCRIBE),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_reveal_nothing_and_cannot_be_forged() {
        let s = Sealer::new("secret-1");
        let id = Uuid::new_v4();
        for t in [
            Token::Open(id),
            Token::Unsubscribe(id),
            Token::Click(id, "https://example.ru/тариф?a=1&b=2".into()),
        ] {
            let text = s.seal(&t);
            assert_eq!(s.open(&text), Some(t));
            assert!(!text.contains(&id.simple().to_string()));
            // Another key, or one changed character, opens nothing.
            assert_eq!(Sealer::new("secret-2").open(&text), None);
            let mut bytes = text.into_bytes();
            let last = bytes.len() - 1;
            bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
            assert_eq!(s.open(&String::from_utf8(bytes).unwrap()), None);
        }
        assert_eq!(s.open("not-a-token"), None);
        // Two seals of the same thing differ (random nonce): tokens cannot be correlated.
        assert_ne!(s.seal(&Token::Open(id)), s.seal(&Token::Open(id)));
    }

    #[test]
    fn only_http_links_are_rewritten() {
        let html = "<p><a href=\"https://rt.ru/a?x=1&amp;y=2\">A</a> <A HREF='http://b.ru'>B</A> \
                    <a href=\"mailto:x@y.ru\">m</a> <a href=\"#top\">t</a></p>";
        let out = rewrite_links(html, |u| format!("T[{u}]"));
        assert!(out.contains("href=\"T[https://rt.ru/a?x=1&y=2]\""), "{out}");
        assert!(out.contains("HREF='T[http://b.ru]'"), "{out}");
        assert!(out.contains("href=\"mailto:x@y.ru\""));
        assert!(out.contains("href=\"#top\""));
    }
}
