//! Tracking tokens: a communication (and, for a click, the link) sealed with ChaCha20-Poly1305
//! under `channels.email.tracking.secret`. They reveal nothing (not even the communication id)
//! and cannot be forged or altered. [`Tracker`] puts them into a message's links.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clm_contracts::Communication;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use uuid::Uuid;

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
