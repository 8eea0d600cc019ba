//! Every SMTP failure classified once, by the stage of the dialogue it happened in, the reply code
//! (RFC 5321 §4.2) and the enhanced status code (RFC 3463).
//!
//! | stage | what happened | outcome |
//! |---|---|---|
//! | any | `421` (RFC 5321 §3.8: the relay is closing the channel) | retry; connection discarded |
//! | connect (TCP, TLS, greeting, EHLO) | any failure or negative reply | retry |
//! | AUTH | `535` (credentials refused) or any other failure | retry: wrong for every message |
//! | MAIL … end of data | `4xx` | retry; greylisting (`4.7.1` / "greylist") after `greylist_delay` |
//! | MAIL | `530` (RFC 4954: authentication required) | retry: wrong for every message |
//! | RCPT, end of data | `5.1.x` but `5.1.7`/`5.1.8` (bad mailbox or domain) | fail, hard bounce |
//! | MAIL … end of data | `5.7.x` (security or policy) | fail, policy rejection |
//! | MAIL … end of data | other `5xx` | fail |
//! | MAIL … DATA, content | connection broken or timed out (no final `.` sent) | retry |
//! | end of data | no reply: broken, timed out, unreadable (the relay may have it) | unknown |
//! | end of data | `2xx` | sent |
//!
//! Answers kept for the attempt log carry the reply code and text with every e-mail address and
//! the recipient's local part masked: relays echo the recipient (`550 5.1.1 <ivan@…>: unknown`).

use std::time::Duration;

use crate::outcome::{ANSWER_EXCERPT, Outcome};

/// Where in the SMTP dialogue (RFC 5321 §3.3) a failure happened. Only at [`Stage::EndOfData`]
/// can the relay have taken the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// TCP connect, implicit TLS or STARTTLS, the greeting, EHLO.
    Connect,
    Auth,
    Mail,
    Rcpt,
    /// The `DATA` command, until its `354`.
    Data,
    /// Writing the message content; the final `.` has not gone out.
    Content,
    /// The final `.` went out (RFC 5321 §4.1.1.4): the next reply decides the message.
    EndOfData,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Auth => "AUTH",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::Content => "message content",
            Stage::EndOfData => "end of data",
        }
    }
}

/// One SMTP reply: the basic code and, when the text starts with one, the enhanced status code
/// `class.subject.detail` (RFC 3463 §2; RFC 2034 puts it first in the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub code: u16,
    pub enhanced: Option<(u16, u16, u16)>,
    /// The text after the code, lines joined with spaces (enhanced code included).
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, text: &str) -> Reply {
        let text = text.trim().to_owned();
        let enhanced = text
            .split_whitespace()
            .next()
            .and_then(parse_enhanced)
            // RFC 3463 §2: the class agrees with the first digit of the reply code.
            .filter(|(class, _, _)| *class == code / 100);
        Reply {
            code,
            enhanced,
            text,
        }
    }

    fn enhanced_is(&self, class: u16, subject: u16) -> bool {
        matches!(self.enhanced, Some((c, s, _)) if c == class && s == subject)
    }

    /// `550 5.1.1`, or `550` without an enhanced code.
    fn codes(&self) -> String {
        match self.enhanced {
            Some((c, s, d)) => format!("{} {c}.{s}.{d}", self.code),
            None => self.code.to_string(),
        }
    }
}

fn parse_enhanced(word: &str) -> Option<(u16, u16, u16)> {
    let mut parts = word.split('.');
    let mut next = || -> Option<u16> {
        let p = parts.next()?;
        // RFC 3463 §2: class one digit, subject and detail one to three digits.
        (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    let triple = (next()?, next()?, next()?);
    parts.next().is_none().then_some(triple)
}

/// What went wrong at a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A negative (or unexpected) reply.
    Reply(Reply),
    /// No usable reply: refused, reset or closed connection, TLS failure, unreadable reply.
    Broken(String),
    /// No reply within the command timeout.
    Timeout,
    /// The relay lacks what this message needs (STARTTLS, an AUTH mechanism, SMTPUTF8).
    Unsupported(String),
}

impl Failure {
    /// The connection cannot carry another transaction: discard it, do not pool it.
    pub fn ends_connection(&self) -> bool {
        match self {
            Failure::Reply(r) => r.code == 421,
            Failure::Broken(_) | Failure::Timeout => true,
            Failure::Unsupported(_) => false,
        }
    }
}

/// Start of the reason of a 5.1.x rejection of the recipient; read by [`super::suppression_of`].
pub(crate) const HARD_BOUNCE: &str = "hard bounce";
/// Start of the reason of a 5.7.x rejection; read by [`super::is_policy_rejection`].
pub(crate) const POLICY_REJECTION: &str = "policy rejection";

/// Classifies a failure at `stage`. `recipient` is masked out of the answer.
pub(crate) fn classify(
    stage: Stage,
    failure: &Failure,
    greylist_delay: Duration,
    recipient: &str,
) -> Outcome {
    let retry = |after: Option<Duration>, reason: String, answer: String| Outcome::Retry {
        after,
        reason,
        answer,
        throttled: false,
    };
    let reply = match failure {
        Failure::Broken(detail) if stage == Stage::EndOfData => {
            // RFC 5321 §4.1.1.4 / §6.1: after the final `.` the relay may have taken
            // responsibility for the message although we never saw its reply. Resending could
            // deliver it twice: reconcile instead.
            return Outcome::Unknown {
                reason: "the connection broke after the end of the message: the relay may have it"
                    .into(),
                answer: mask(detail, recipient),
            };
        }
        Failure::Timeout if stage == Stage::EndOfData => {
            return Outcome::Unknown {
                reason: "no answer to the end of the message in time: the relay may have it".into(),
                answer: "timeout".into(),
            };
        }
        Failure::Timeout => {
            return retry(
                None,
                format!(
                    "SMTP timeout at {} (before the message was complete)",
                    stage.name()
                ),
                "timeout".into(),
            );
        }
        Failure::Broken(detail) => {
            // Before the final `.` the relay cannot have the message (RFC 5321 §4.1.1.4: the
            // transaction completes only with the end-of-data indication).
            let what = match stage {
                Stage::Connect => "could not open an SMTP session with the relay",
                Stage::Auth => "the connection broke during AUTH",
                _ => "the connection broke before the message was complete",
            };
            return retry(
                None,
                format!("{what} ({})", stage.name()),
                mask(detail, recipient),
            );
        }
        Failure::Unsupported(detail) => {
            return match stage {
                // The relay's setup (or ours) is wrong for every message: retry, like an HTTP
                // 401, so that the breaker opens and an operator fixes it.
                Stage::Connect | Stage::Auth => {
                    retry(None, format!("relay unusable: {detail}"), String::new())
                }
                // Something this message needs (SMTPUTF8 for a non-ASCII address).
                _ => Outcome::Fail {
                    reason: format!("the relay cannot take this message: {detail}"),
                    answer: String::new(),
                },
            };
        }
        Failure::Reply(reply) => reply,
    };
    let answer = answer_of(reply, recipient);
    let codes = reply.codes();
    let class = reply.code / 100;

    // RFC 5321 §3.8 / §4.2.2: 421, the relay is shutting the channel, at any stage.
    if reply.code == 421 {
        return retry(
            None,
            format!("relay closing the connection ({codes})"),
            answer,
        );
    }
    match stage {
        Stage::Connect => {
            return retry(
                None,
                format!("relay refused the SMTP session ({codes})"),
                answer,
            );
        }
        // RFC 4954 §6: 535 5.7.8 credentials invalid; 534, 538, 454 …: our credentials or
        // TLS setup are wrong for every message, not this message bad. Retry like HTTP 401.
        Stage::Auth => {
            let what = if reply.code == 535 {
                "relay rejected our credentials; check the e-mail auth settings"
            } else {
                "relay refused AUTH"
            };
            return retry(None, format!("{what} ({codes})"), answer);
        }
        _ => {}
    }
    match class {
        // RFC 5321 §4.2.1: 4yz, transient negative completion; the same transaction may
        // succeed later.
        4 => {
            // Greylisting answers 450/451/452 with 4.7.1 (RFC 3463: delivery not authorized,
            // message refused — for now) or says so; a retry within seconds is refused again and
            // looks like a spam engine, so the first retry waits minutes.
            let greylisted = matches!(reply.code, 450..=452)
                && (reply.enhanced == Some((4, 7, 1)) || mentions_greylisting(&reply.text));
            if greylisted {
                retry(
                    Some(greylist_delay),
                    format!("greylisted ({codes})"),
                    answer,
                )
            } else {
                retry(
                    None,
                    format!("relay deferred the message at {} ({codes})", stage.name()),
                    answer,
                )
            }
        }
        5 => {
            // RFC 4954 §6: 530 5.7.0 authentication required (we did not authenticate).
            if reply.code == 530 && stage == Stage::Mail {
                return retry(
                    None,
                    format!("relay requires authentication; configure e-mail auth ({codes})"),
                    answer,
                );
            }
            // RFC 3463 §3.2: X.1.x addressing status; X.1.7 and X.1.8 are about the sender.
            // 5.1.0 ("other address status") and a text naming the sender are about our
            // envelope sender, not the recipient: Postfix delays sender checks to RCPT, and
            // suppressing every recipient for that would be a disaster.
            let about_sender = matches!(reply.enhanced, Some((_, _, 0)))
                || reply.text.to_ascii_lowercase().contains("sender");
            let bad_recipient = reply.enhanced_is(5, 1)
                && !matches!(reply.enhanced, Some((_, _, 7 | 8)))
                && !about_sender
                && matches!(stage, Stage::Rcpt | Stage::EndOfData);
            if bad_recipient {
                return Outcome::Fail {
                    reason: format!("{HARD_BOUNCE}: bad mailbox or domain ({codes})"),
                    answer,
                };
            }
            // RFC 3463 §3.8: X.7.x security or policy status.
            if reply.enhanced_is(5, 7) {
                return Outcome::Fail {
                    reason: format!("{POLICY_REJECTION} at {} ({codes})", stage.name()),
                    answer,
                };
            }
            let what = if stage == Stage::Mail {
                "relay refused the sender"
            } else {
                "relay refused the message"
            };
            Outcome::Fail {
                reason: format!("{what} at {} ({codes})", stage.name()),
                answer,
            }
        }
        // A positive or malformed reply where a completion was due: the dialogue is out of step.
        _ if stage == Stage::EndOfData => Outcome::Unknown {
            reason: format!("unexpected reply to the end of the message ({codes})"),
            answer,
        },
        _ => retry(
            None,
            format!("unexpected reply at {} ({codes})", stage.name()),
            answer,
        ),
    }
}

/// The outcome of a `2xx` reply to the end of the message.
pub(crate) fn sent(reply: &Reply, message_id: &str, recipient: &str) -> Outcome {
    Outcome::Sent {
        external_id: Some(message_id.to_owned()),
        answer: answer_of(reply, recipient),
    }
}

fn mentions_greylisting(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "greylist",
        "graylist",
        "grey-list",
        "gray-list",
        "grey list",
        "gray list",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// `"550 5.1.1 [address]: Recipient address rejected"`, single line, masked, bounded.
pub(crate) fn answer_of(reply: &Reply, recipient: &str) -> String {
    let line = if reply.text.is_empty() {
        reply.code.to_string()
    } else {
        format!("{} {}", reply.code, reply.text)
    };
    mask(&line, recipient)
}

/// What replaces an e-mail address in answers.
const MASK: &str = "[address]";

/// `text` on one line, at most [`ANSWER_EXCERPT`] characters, with every `local@domain` and the
/// recipient's local part (relays say `unknown user: ivan`) replaced by [`MASK`].
pub(crate) fn mask(text: &str, recipient: &str) -> String {
    let chars: Vec<char> = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let local_char =
        |c: char| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.\"".contains(c) || !c.is_ascii();
    let domain_char = |c: char| c.is_alphanumeric() || "-.[]:".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut start = 0;
    while i < chars.len() {
        if chars[i] == '@' {
            let mut l = i;
            while l > start && local_char(chars[l - 1]) {
                l -= 1;
            }
            let mut r = i + 1;
            while r < chars.len() && domain_char(chars[r]) {
                r += 1;
            }
            // Sentence punctuation after the domain is not part of it.
            while r > i + 1 && matches!(chars[r - 1], '.' | ':' | ']') {
                r -= 1;
            }
            if l < i || r > i + 1 {
                out.extend(&chars[start..l]);
                out.push_str(MASK);
                start = r;
                i = r;
                continue;
            }
        }
        i += 1;
    }
    out.extend(&chars[start..]);
    let local = recipient.rsplit_once('@').map_or(recipient, |(l, _)| l);
    if local.chars().count() >= 3 {
        out = replace_ignore_case(&out, local, MASK);
    }
    let mut s: String = out.chars().take(ANSWER_EXCERPT).collect();
    s.truncate(s.trim_end().len());
    s
}

fn replace_ignore_case(haystack: &str, needle: &str, with: &str) -> String {
    let lower_h = haystack.to_lowercase();
    let lower_n = needle.to_lowercase();
    // Lowercasing can change byte lengths (rare scripts): then do not try to be clever.
    if lower_h.len() != haystack.len() || lower_n.len() != needle.len() {
        return haystack.replace(needle, with);
    }
    let mut out = String::with_capacity(haystack.len());
    let mut last = 0;
    for (at, _) in lower_h.match_indices(&lower_n) {
        if at < last {
            continue;
        }
        out.push_str(&haystack[last..at]);
        out.push_str(with);
        last = at + needle.len();
    }
    out.push_str(&haystack[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::{Suppress, is_policy_rejection, suppression_of};

    const GREY: Duration = Duration::from_secs(300);
    const RCPT: &str = "ivan.petrov@example.ru";

    fn at(stage: Stage, code: u16, text: &str) -> Outcome {
        classify(stage, &Failure::Reply(Reply::new(code, text)), GREY, RCPT)
    }

    fn retry_after(o: &Outcome) -> Option<Option<Duration>> {
        match o {
            Outcome::Retry { after, .. } => Some(*after),
            _ => None,
        }
    }

    #[test]
    fn enhanced_codes_are_read_from_the_text() {
        assert_eq!(
            Reply::new(550, "5.1.1 <a@b.c>: unknown").enhanced,
            Some((5, 1, 1))
        );
        assert_eq!(Reply::new(550, "5.1.10 null MX").enhanced, Some((5, 1, 10)));
        // The class must agree with the reply code (RFC 3463 §2), and it must be a code.
        assert_eq!(Reply::new(550, "4.1.1 odd").enhanced, None);
        assert_eq!(Reply::new(550, "User unknown").enhanced, None);
        assert_eq!(Reply::new(550, "5.1 short").enhanced, None);
        assert_eq!(Reply::new(550, "5.1.1.1 long").enhanced, None);
    }

    #[test]
    fn a_2xx_after_the_final_dot_is_sent_with_the_message_id_and_no_address() {
        let o = sent(
            &Reply::new(250, "2.0.0 Ok: queued as 4Xyz for <ivan.petrov@example.ru>"),
            "<abc.clm@example.ru>",
            RCPT,
        );
        let Outcome::Sent {
            external_id,
            answer,
        } = &o
        else {
            panic!("{o:?}")
        };
        assert_eq!(external_id.as_deref(), Some("<abc.clm@example.ru>"));
        assert_eq!(answer, "250 2.0.0 Ok: queued as 4Xyz for <[address]>");
    }

    #[test]
    fn a_sender_rejection_at_rcpt_fails_without_suppressing_the_recipient() {
        // Postfix checks the sender at RCPT by default (smtpd_delay_reject).
        for (code, text) in [
            (
                553,
                "5.1.0 <offers@example.ru>: Sender address rejected: not owned by user",
            ),
            (
                550,
                "5.1.1 <offers@example.ru>: Sender address rejected: User unknown",
            ),
        ] {
            let o = at(Stage::Rcpt, code, text);
            assert!(matches!(o, Outcome::Fail { .. }), "{o:?}");
            assert_eq!(suppression_of(&o), None, "{text}");
        }
        let o = at(
            Stage::Rcpt,
            550,
            "5.1.1 <ivan@example.ru>: Recipient address rejected",
        );
        assert!(suppression_of(&o).is_some());
    }

    #[test]
    fn a_4xx_retries_soon() {
        for stage in [Stage::Mail, Stage::Rcpt, Stage::Data, Stage::EndOfData] {
            let o = at(stage, 450, "4.2.1 Mailbox busy");
            assert_eq!(retry_after(&o), Some(None), "{stage:?}: {o:?}");
            assert_eq!(
                suppression_of(&o),
                None,
                "a transient answer suppresses nothing"
            );
        }
        assert_eq!(
            retry_after(&at(Stage::Rcpt, 452, "4.3.1 Insufficient system storage")),
            Some(None)
        );
    }

    #[test]
    fn greylisting_retries_after_minutes() {
        for (code, text) in [
            (
                450,
                "4.7.1 <ivan.petrov@example.ru>: Recipient address rejected: try later",
            ),
            (451, "4.7.1 Please try again later"),
            (
                450,
                "4.2.0 <ivan.petrov@example.ru>: Recipient address rejected: Greylisted",
            ),
            (452, "Greylisting in action, please come back later"),
        ] {
            let o = at(Stage::Rcpt, code, text);
            assert_eq!(retry_after(&o), Some(Some(GREY)), "{code} {text}: {o:?}");
            assert!(!o.answer().contains("ivan"), "{}", o.answer());
        }
        // 421 with 4.7.1 is a closing channel, not greylisting.
        assert_eq!(
            retry_after(&at(Stage::Rcpt, 421, "4.7.1 Too many errors")),
            Some(None)
        );
    }

    #[test]
    fn a_421_retries_and_ends_the_connection_at_every_stage() {
        for stage in [
            Stage::Connect,
            Stage::Auth,
            Stage::Mail,
            Stage::Rcpt,
            Stage::Data,
            Stage::EndOfData,
        ] {
            let f = Failure::Reply(Reply::new(421, "4.4.2 Timeout exceeded"));
            assert!(f.ends_connection());
            let o = classify(stage, &f, GREY, RCPT);
            assert_eq!(retry_after(&o), Some(None), "{stage:?}: {o:?}");
        }
        assert!(!Failure::Reply(Reply::new(450, "4.2.1 busy")).ends_connection());
        assert!(!Failure::Reply(Reply::new(550, "5.1.1 unknown")).ends_connection());
    }

    #[test]
    fn a_5_1_x_recipient_rejection_fails_as_a_hard_bounce() {
        for (stage, code, text) in [
            (
                Stage::Rcpt,
                550,
                "5.1.1 <ivan.petrov@example.ru>: User unknown",
            ),
            (Stage::Rcpt, 550, "5.1.2 Host unknown"),
            (Stage::Rcpt, 556, "5.1.10 Recipient address has null MX"),
            (Stage::Rcpt, 553, "5.1.3 Bad recipient address syntax"),
            (Stage::EndOfData, 550, "5.1.1 Mailbox does not exist"),
        ] {
            let o = at(stage, code, text);
            let Outcome::Fail { reason, answer } = &o else {
                panic!("{o:?}")
            };
            let enhanced = text.split_whitespace().next().unwrap();
            assert!(
                reason.contains(&format!("{code} {enhanced}")),
                "the reason names the code: {reason}"
            );
            assert!(!answer.contains("ivan"), "{answer}");
            assert_eq!(suppression_of(&o), Some(Suppress::HardBounce), "{text}");
            assert!(!is_policy_rejection(&o));
        }
    }

    #[test]
    fn sender_address_problems_do_not_suppress_the_recipient() {
        // X.1.7 / X.1.8 are about the sender (RFC 3463 §3.2), and so is anything at MAIL.
        for (stage, text) in [
            (
                Stage::Rcpt,
                "5.1.8 Sender address rejected: Domain not found",
            ),
            (Stage::Mail, "5.1.7 Bad sender address syntax"),
            (Stage::Mail, "5.1.1 Sender unknown"),
        ] {
            let o = at(stage, 553, text);
            assert!(matches!(o, Outcome::Fail { .. }), "{o:?}");
            assert_eq!(suppression_of(&o), None, "{text}");
        }
        // Without an enhanced code the reply says too little to suppress an address.
        let o = at(Stage::Rcpt, 550, "User unknown");
        assert!(matches!(o, Outcome::Fail { .. }));
        assert_eq!(suppression_of(&o), None);
    }

    #[test]
    fn a_5_7_x_fails_as_a_policy_rejection() {
        for stage in [Stage::Mail, Stage::Rcpt, Stage::Data, Stage::EndOfData] {
            let o = at(
                stage,
                554,
                "5.7.1 Message rejected as spam by Content Filtering",
            );
            let Outcome::Fail { reason, .. } = &o else {
                panic!("{o:?}")
            };
            assert!(reason.starts_with("policy rejection"), "{reason}");
            assert!(reason.contains("554 5.7.1"), "{reason}");
            assert!(is_policy_rejection(&o));
            assert_eq!(suppression_of(&o), None);
        }
    }

    #[test]
    fn other_5xx_fail_without_suppression() {
        for (stage, code, text) in [
            (Stage::Rcpt, 552, "5.2.2 Mailbox full"),
            (Stage::Data, 554, "5.3.0 Error: command failed"),
            (Stage::EndOfData, 552, "5.3.4 Message too big"),
            (Stage::Mail, 501, "5.5.4 Syntax error"),
        ] {
            let o = at(stage, code, text);
            assert!(matches!(o, Outcome::Fail { .. }), "{o:?}");
            assert_eq!(suppression_of(&o), None);
            assert!(!is_policy_rejection(&o));
        }
    }

    #[test]
    fn session_problems_before_the_message_retry() {
        let broken = Failure::Broken("Connection refused (os error 111)".into());
        for stage in [
            Stage::Connect,
            Stage::Auth,
            Stage::Mail,
            Stage::Rcpt,
            Stage::Data,
            Stage::Content,
        ] {
            let o = classify(stage, &broken, GREY, RCPT);
            assert_eq!(retry_after(&o), Some(None), "{stage:?}: {o:?}");
            let o = classify(stage, &Failure::Timeout, GREY, RCPT);
            assert_eq!(retry_after(&o), Some(None), "{stage:?}: {o:?}");
        }
        // A refusal at the greeting or EHLO, a TLS failure, no STARTTLS, no AUTH: retry.
        assert_eq!(
            retry_after(&at(Stage::Connect, 554, "5.7.1 No SMTP service here")),
            Some(None)
        );
        let no_tls = Failure::Unsupported("the relay does not offer STARTTLS".into());
        assert_eq!(
            retry_after(&classify(Stage::Connect, &no_tls, GREY, RCPT)),
            Some(None)
        );
        let no_auth = Failure::Unsupported("no AUTH mechanism in common".into());
        assert_eq!(
            retry_after(&classify(Stage::Auth, &no_auth, GREY, RCPT)),
            Some(None)
        );
    }

    #[test]
    fn rejected_credentials_retry_like_http_401() {
        let o = at(
            Stage::Auth,
            535,
            "5.7.8 Error: authentication failed: authentication failure",
        );
        let Outcome::Retry { reason, .. } = &o else {
            panic!("{o:?}")
        };
        assert!(
            reason.contains("credentials") && reason.contains("535"),
            "{reason}"
        );
        assert!(!is_policy_rejection(&o), "a 535 is not a policy rejection");
        let o = at(Stage::Mail, 530, "5.7.0 Authentication required");
        assert_eq!(retry_after(&o), Some(None), "{o:?}");
    }

    #[test]
    fn no_answer_after_the_final_dot_is_unknown_never_a_retry() {
        for f in [
            Failure::Timeout,
            Failure::Broken("incomplete response".into()),
            Failure::Broken("Connection reset by peer (os error 104)".into()),
        ] {
            let o = classify(Stage::EndOfData, &f, GREY, RCPT);
            assert!(matches!(o, Outcome::Unknown { .. }), "{f:?}: {o:?}");
        }
        // An answer that is no completion at all is not a verdict either.
        assert!(matches!(
            at(Stage::EndOfData, 354, "go ahead"),
            Outcome::Unknown { .. }
        ));
    }

    #[test]
    fn a_non_ascii_address_on_a_relay_without_smtputf8_fails() {
        let f = Failure::Unsupported("the relay does not support SMTPUTF8".into());
        assert!(matches!(
            classify(Stage::Mail, &f, GREY, RCPT),
            Outcome::Fail { .. }
        ));
    }

    #[test]
    fn answers_mask_addresses_and_the_local_part() {
        assert_eq!(
            mask(
                "550 5.1.1 <Ivan.Petrov@Example.RU>: Recipient address rejected",
                RCPT
            ),
            "550 5.1.1 <[address]>: Recipient address rejected"
        );
        assert_eq!(
            mask("550 unknown user ivan.petrov, sorry", RCPT),
            "550 unknown user [address], sorry"
        );
        assert_eq!(
            mask("250 ok from user@host.example.", RCPT),
            "250 ok from [address]."
        );
        let long = mask(&format!("250 {}\r\nsecond line", "x".repeat(400)), RCPT);
        assert!(long.chars().count() <= ANSWER_EXCERPT && !long.contains('\n'));
        assert_eq!(mask("250 2.0.0 Ok", RCPT), "250 2.0.0 Ok");
    }
}
