//! One communication's message (RFC 5322, MIME RFC 2045/2046), ready for `DATA`.
//!
//! lettre writes the headers: non-ASCII words (a Cyrillic subject or display name) become RFC 2047
//! encoded words, long lines are folded, and CR/LF inside a value can never start a new header.
//! Bodies are UTF-8 (`charset=utf-8`), quoted-printable or base64 as lettre finds shorter, so the
//! message itself is 7-bit and needs no 8BITMIME.

use std::sync::Arc;
use std::time::SystemTime;

use clm_contracts::Communication;
use lettre::message::dkim::DkimConfig as LettreDkim;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};

use super::{EmailBuildError, SmtpConfig, Tracking, dkim, message_id};

/// RFC 8058 §3.1: the value of `List-Unsubscribe-Post` for one-click unsubscription.
pub(crate) const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

/// The attribute that carries the recipient's display name.
const NAME_ATTRIBUTE: &str = "name";

/// Builds messages: the sender, the id domain, the DKIM signer and the hub's tracking links.
pub(crate) struct Composer {
    from: Mailbox,
    message_id_domain: String,
    dkim: Option<LettreDkim>,
    tracking: Option<Arc<dyn Tracking>>,
}

/// A message ready for the relay.
#[derive(Debug)]
pub(crate) struct Built {
    /// Envelope sender (`MAIL FROM`) and recipient (`RCPT TO`).
    pub from: Address,
    pub to: Address,
    pub message_id: String,
    /// Headers and body, CRLF line ends, not yet dot-stuffed.
    pub bytes: Vec<u8>,
}

impl Composer {
    pub fn new(
        config: &SmtpConfig,
        tracking: Option<Arc<dyn Tracking>>,
    ) -> Result<Self, EmailBuildError> {
        let from: Mailbox = config.from.trim().parse().map_err(|_| {
            EmailBuildError::From(format!(
                "`{}` is not a mailbox like `CLM <offers@example.ru>`",
                config.from
            ))
        })?;
        let domain = config.message_id_domain.trim();
        if domain.is_empty()
            || !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
        {
            return Err(EmailBuildError::MessageIdDomain(
                "must be an ASCII domain name such as `mail.example.ru`".into(),
            ));
        }
        let dkim = config
            .dkim
            .as_ref()
            .map(dkim::signer)
            .transpose()
            .map_err(EmailBuildError::Dkim)?;
        Ok(Composer {
            from,
            message_id_domain: domain.to_owned(),
            dkim,
            tracking,
        })
    }

    /// The message of `comm`, dated `date`. The error says what is wrong with the communication.
    pub fn build(&self, comm: &Communication, date: SystemTime) -> Result<Built, String> {
        let to: Address = comm
            .recipient
            .trim()
            .parse()
            .map_err(|_| "recipient is not an e-mail address".to_owned())?;
        let name = comm
            .attributes
            .get(NAME_ATTRIBUTE)
            .map(|n| {
                n.chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect::<String>()
            })
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        let html = comm
            .content
            .html
            .as_deref()
            .map(|html| match &self.tracking {
                Some(t) => t.rewrite_html(comm, html),
                None => html.to_owned(),
            });
        let text = comm.content.text.clone();
        let message_id = message_id(comm.id, &self.message_id_domain);

        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(name, to.clone()))
            .subject(comm.content.subject.clone().unwrap_or_default())
            .date(date)
            .message_id(Some(message_id.clone()));
        if let Some(url) = self.tracking.as_ref().and_then(|t| t.unsubscribe_url(comm)) {
            match unsubscribe_target(&url) {
                Some(url) => {
                    // RFC 2369 §3.2 (angle brackets), RFC 8058 §3.1 (one-click POST).
                    builder = builder
                        .raw_header(HeaderValue::new(
                            HeaderName::new_from_ascii_str("List-Unsubscribe"),
                            format!("<{url}>"),
                        ))
                        .raw_header(HeaderValue::new(
                            HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                            ONE_CLICK.to_owned(),
                        ));
                }
                None => tracing::warn!(
                    communication = %comm.id,
                    "the unsubscribe URL is not a plain ASCII http(s) URL; sending without List-Unsubscribe"
                ),
            }
        }
        let message = match (text, html) {
            (Some(text), Some(html)) => {
                builder.multipart(MultiPart::alternative_plain_html(text, html))
            }
            (Some(text), None) => builder.singlepart(SinglePart::plain(text)),
            (None, Some(html)) => builder.singlepart(SinglePart::html(html)),
            (None, None) => {
                return Err(
                    "content has no text or html (templates are rendered before the hub)".into(),
                );
            }
        };
        let mut message = message.map_err(|e| format!("invalid message: {e}"))?;
        if let Some(dkim) = &self.dkim {
            message.sign(dkim);
        }
        Ok(Built {
            from: self.from.email.clone(),
            to,
            message_id,
            bytes: message.formatted(),
        })
    }
}

/// The URL when it can stand between `<` and `>` in a header as it is: ASCII, no spaces, no
/// brackets, http(s).
fn unsubscribe_target(url: &str) -> Option<&str> {
    let url = url.trim();
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    let chars_ok = url
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    (scheme_ok && chars_ok).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::testutil::{self, Parsed};
    use crate::email::{DkimConfig, SmtpConfig};

    struct Links;
    impl Tracking for Links {
        fn unsubscribe_url(&self, comm: &Communication) -> Option<String> {
            Some(format!(
                "https://hub.example.ru/email/unsubscribe/{}?t=abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz",
                comm.id.simple()
            ))
        }
        fn rewrite_html(&self, _comm: &Communication, html: &str) -> String {
            format!("{html}<img src=\"https://hub.example.ru/o.gif\">")
        }
    }

    fn composer(dkim: Option<&str>, tracking: bool) -> Composer {
        let mut config: SmtpConfig = testutil::config("127.0.0.1", 25);
        config.from = "КЛМ Предложения <offers@example.ru>".into();
        config.dkim = dkim.map(|pem| DkimConfig {
            domain: "example.ru".into(),
            selector: "s2025".into(),
            private_key_pem: pem.into(),
        });
        let tracking: Option<Arc<dyn Tracking>> = tracking.then(|| Arc::new(Links) as _);
        Composer::new(&config, tracking).unwrap()
    }

    fn build(c: &Composer, comm: &Communication) -> (Built, Parsed) {
        let built = c.build(comm, SystemTime::now()).unwrap();
        let parsed = Parsed::new(&built.bytes);
        (built, parsed)
    }

    #[test]
    fn headers_carry_sender_recipient_ids_and_encoded_cyrillic() {
        let mut comm = testutil::comm("ivan.petrov@example.ru");
        comm.attributes
            .insert("name".into(), "Иванов, Иван \"Ваня\"".into());
        let (built, m) = build(&composer(None, false), &comm);

        let subject = m.header("Subject").unwrap();
        assert!(
            subject.is_ascii(),
            "RFC 2047 keeps headers ASCII: {subject}"
        );
        assert!(subject.contains("=?utf-8?"), "{subject}");
        assert_eq!(testutil::decode_rfc2047(&subject), testutil::SUBJECT);

        let to = testutil::decode_rfc2047(&m.header("To").unwrap());
        assert!(to.contains("Иванов, Иван"), "{to}");
        assert!(to.ends_with("<ivan.petrov@example.ru>"), "{to}");
        let from = testutil::decode_rfc2047(&m.header("From").unwrap());
        assert_eq!(from, "КЛМ Предложения <offers@example.ru>");

        assert_eq!(m.header("Message-ID").unwrap(), built.message_id);
        assert_eq!(
            crate::email::communication_of_message_id(&built.message_id),
            Some(comm.id)
        );
        chrono::DateTime::parse_from_rfc2822(&m.header("Date").unwrap()).unwrap();
        assert_eq!(built.from.to_string(), "offers@example.ru");
        assert_eq!(built.to.to_string(), "ivan.petrov@example.ru");
        assert!(m.header("List-Unsubscribe").is_none());
        assert!(m.header("DKIM-Signature").is_none());
        assert!(built.bytes.is_ascii(), "7-bit message");
    }

    #[test]
    fn text_and_html_make_a_multipart_alternative() {
        let comm = testutil::comm("ivan@example.ru");
        let (_, m) = build(&composer(None, true), &comm);
        let ct = m.header("Content-Type").unwrap();
        assert!(ct.starts_with("multipart/alternative"), "{ct}");
        let parts = m.parts();
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert!(
            parts[0].0.starts_with("text/plain; charset=utf-8"),
            "{parts:?}"
        );
        assert_eq!(parts[0].1.trim_end(), testutil::TEXT);
        assert!(
            parts[1].0.starts_with("text/html; charset=utf-8"),
            "{parts:?}"
        );
        // The HTML went through the hub's tracking rewrite.
        assert_eq!(
            parts[1].1.trim_end(),
            format!(
                "{}<img src=\"https://hub.example.ru/o.gif\">",
                testutil::HTML
            )
        );
    }

    #[test]
    fn only_one_part_is_sent_when_only_one_is_given() {
        let c = composer(None, false);
        let mut comm = testutil::comm("ivan@example.ru");
        comm.content.html = None;
        let (_, m) = build(&c, &comm);
        assert!(
            m.header("Content-Type")
                .unwrap()
                .starts_with("text/plain; charset=utf-8")
        );
        assert_eq!(m.body_text().trim_end(), testutil::TEXT);

        let mut comm = testutil::comm("ivan@example.ru");
        comm.content.text = None;
        let (_, m) = build(&c, &comm);
        assert!(
            m.header("Content-Type")
                .unwrap()
                .starts_with("text/html; charset=utf-8")
        );
        assert_eq!(m.body_text().trim_end(), testutil::HTML);
    }

    #[test]
    fn the_unsubscribe_url_becomes_one_click_headers() {
        let comm = testutil::comm("ivan@example.ru");
        let (_, m) = build(&composer(None, true), &comm);
        assert_eq!(
            m.header("List-Unsubscribe").unwrap(),
            format!("<{}>", Links.unsubscribe_url(&comm).unwrap())
        );
        assert_eq!(m.header("List-Unsubscribe-Post").unwrap(), ONE_CLICK);
    }

    #[test]
    fn an_unusable_unsubscribe_url_is_left_out() {
        assert_eq!(
            unsubscribe_target(" https://h/u?t=1 "),
            Some("https://h/u?t=1")
        );
        assert_eq!(unsubscribe_target("https://h/u>\r\nBcc: x@y"), None);
        assert_eq!(unsubscribe_target("mailto:u@h"), None);
        assert_eq!(unsubscribe_target("https://h/отписка"), None);
    }

    #[test]
    fn a_bad_recipient_or_no_body_is_refused() {
        let c = composer(None, false);
        let mut comm = testutil::comm("not an address");
        assert!(c.build(&comm, SystemTime::now()).is_err());
        comm.recipient = "ivan@example.ru".into();
        comm.content.text = None;
        comm.content.html = None;
        assert!(
            c.build(&comm, SystemTime::now())
                .unwrap_err()
                .contains("text or html")
        );
    }

    #[test]
    fn dkim_signatures_verify_for_rsa_and_ed25519() {
        for (pem, algo) in [
            (testutil::RSA_PKCS1_PEM, "rsa-sha256"),
            (testutil::RSA_PKCS8_PEM, "rsa-sha256"),
            (testutil::ED25519_PKCS8_PEM, "ed25519-sha256"),
        ] {
            let comm = testutil::comm("ivan.petrov@example.ru");
            let (_, m) = build(&composer(Some(pem), true), &comm);
            let sig = m.header("DKIM-Signature").unwrap();
            let tags = testutil::dkim_tags(&sig);
            assert_eq!(tags["a"], algo);
            assert_eq!(tags["c"], "relaxed/relaxed");
            assert_eq!(tags["d"], "example.ru");
            assert_eq!(tags["s"], "s2025");
            assert_eq!(
                tags["h"],
                "from:to:subject:date:message-id:list-unsubscribe:list-unsubscribe-post"
            );
            testutil::verify_dkim(&m.raw, pem).unwrap_or_else(|e| panic!("{algo}: {e}"));

            // A changed subject breaks it: the verifier is not a rubber stamp.
            let tampered =
                String::from_utf8(m.raw.clone())
                    .unwrap()
                    .replacen("Subject: ", "Subject: Re: ", 1);
            assert!(testutil::verify_dkim(tampered.as_bytes(), pem).is_err());
            let tampered = String::from_utf8(m.raw.clone()).unwrap().replacen(
                "List-Unsubscribe-Post: ",
                "List-Unsubscribe-Post: x",
                1,
            );
            assert!(testutil::verify_dkim(tampered.as_bytes(), pem).is_err());
        }
    }
}
