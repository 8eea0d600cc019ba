//! The SMTP mock's faults: what a stage of a mail transaction gets instead of (or before) its
//! normal reply.
//!
//! Stages: `rcpt` (the reply to each `RCPT TO`), `data` (the reply to the `DATA` command) and
//! `end_of_data` (the reply after the final `.`). At `RCPT` the order is fixed: the recipient's
//! own fault (`per_recipient`), then the transaction's script step, then the standing `rcpt`
//! fault, then greylisting. At `DATA` and after the final `.`: the script step, then the standing
//! fault. A `slow` fault waits and lets the next rule decide; `latency_ms` comes on top of every
//! reply.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest `slow` fault and `latency_ms` accepted: longer would only pile up connections.
pub(crate) const MAX_SLOW_MS: u64 = 600_000;

/// What one stage gets. In JSON: `{"reply": {"code": 450, "enhanced": "4.7.1", "text":
/// "Greylisted, try again later"}}`, `"disconnect"`, `{"slow": {"ms": 1500}}`, `"hang"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpStageFault {
    /// This reply (4xx or 5xx) instead of the normal one. The enhanced status code (RFC 3463,
    /// e.g. `"5.1.1"`) is sent to clients that said `EHLO`. A 421 closes the connection after the
    /// reply, as RFC 5321 says. At `RCPT` the recipient is refused, at `DATA` no data phase
    /// starts, after the final `.` the message is refused (not recorded).
    Reply {
        code: u16,
        #[serde(default)]
        enhanced: Option<String>,
        text: String,
    },
    /// The connection is closed without a reply. After the final `.` the message is not
    /// recorded.
    Disconnect,
    /// Waits `ms` (on top of `latency_ms`), then the next rule decides (normally: the normal
    /// reply).
    Slow { ms: u64 },
    /// Never replies: the connection is held until the client closes it or the mock shuts down.
    /// After the final `.` the message counts as received (recorded, with feedback): the client
    /// times out without knowing whether the relay has it.
    Hang,
}

impl SmtpStageFault {
    /// `Reply` with an enhanced status code.
    pub fn reply(code: u16, enhanced: &str, text: &str) -> Self {
        SmtpStageFault::Reply {
            code,
            enhanced: Some(enhanced.to_owned()),
            text: text.to_owned(),
        }
    }

    /// `450 4.7.1` greylisting.
    pub fn greylisted() -> Self {
        Self::reply(450, "4.7.1", "Greylisted, please try again later")
    }

    /// `550 5.1.1` user unknown: a hard bounce at `RCPT`.
    pub fn user_unknown() -> Self {
        Self::reply(550, "5.1.1", "Recipient address rejected: User unknown")
    }

    /// `554 5.7.1` policy rejection.
    pub fn policy() -> Self {
        Self::reply(554, "5.7.1", "Message rejected due to local policy")
    }

    /// `452 4.2.2` mailbox full: a soft bounce.
    pub fn mailbox_full() -> Self {
        Self::reply(452, "4.2.2", "Mailbox full, try again later")
    }

    /// Checks the values; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            SmtpStageFault::Reply {
                code,
                enhanced,
                text,
            } => {
                if !(400..=599).contains(code) {
                    return Err(format!("reply code must be 400..=599, got {code}"));
                }
                if let Some(enhanced) = enhanced
                    && !enhanced_matches(enhanced, *code)
                {
                    return Err(format!(
                        "enhanced status code must be like \"{}.1.1\" (RFC 3463, class of the \
                         reply code), got {enhanced:?}",
                        code / 100
                    ));
                }
                if text.contains(['\r', '\n']) {
                    return Err("reply text must be one line".to_owned());
                }
                Ok(())
            }
            SmtpStageFault::Slow { ms } if *ms > MAX_SLOW_MS => {
                Err(format!("slow: ms must be at most {MAX_SLOW_MS}, got {ms}"))
            }
            _ => Ok(()),
        }
    }

    /// In range, for callers of the library that skip validation: codes clamped into 4xx/5xx,
    /// a wrong enhanced code dropped, line breaks in the text replaced, `slow` capped.
    fn sanitized(self) -> Self {
        match self {
            SmtpStageFault::Reply {
                code,
                enhanced,
                text,
            } => {
                let code = code.clamp(400, 599);
                SmtpStageFault::Reply {
                    code,
                    enhanced: enhanced.filter(|e| enhanced_matches(e, code)),
                    text: text.replace(['\r', '\n'], " "),
                }
            }
            SmtpStageFault::Slow { ms } => SmtpStageFault::Slow {
                ms: ms.min(MAX_SLOW_MS),
            },
            other => other,
        }
    }
}

/// `class.subject.detail` (RFC 3463) with the class of `code` (4 or 5).
fn enhanced_matches(enhanced: &str, code: u16) -> bool {
    let parts: Vec<&str> = enhanced.split('.').collect();
    parts.len() == 3
        && parts[0] == (code / 100).to_string()
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The faults of one transaction in a script; an empty step (`{}`) is a normal transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmtpScriptStep {
    /// For every `RCPT TO` of the transaction.
    pub rcpt: Option<SmtpStageFault>,
    /// For the `DATA` command.
    pub data: Option<SmtpStageFault>,
    /// After the final `.`.
    pub end_of_data: Option<SmtpStageFault>,
}

/// The faults an SMTP mock injects. Every field has a default (all off), so a control request
/// may send only the fields it changes. `Debug` shows how many addresses `per_recipient` holds,
/// never the addresses.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmtpFaults {
    /// Every `RCPT TO` gets this while it is set.
    pub rcpt: Option<SmtpStageFault>,
    /// Every `DATA` command gets this while it is set.
    pub data: Option<SmtpStageFault>,
    /// Every message gets this after its final `.` while it is set.
    pub end_of_data: Option<SmtpStageFault>,
    /// Steps the next transactions get, in order, one per accepted `MAIL FROM`, before the
    /// standing faults above.
    pub script: Vec<SmtpScriptStep>,
    /// The fault a recipient address gets at `RCPT TO` (case-insensitive), before anything
    /// else: e.g. `{"gone@example.com": {"reply": {"code": 550, "enhanced": "5.1.1", …}}}`.
    pub per_recipient: BTreeMap<String, SmtpStageFault>,
    /// The first `RCPT TO` of each sender and recipient pair gets `450 4.7.1`; later ones pass.
    pub greylist_first: bool,
    /// Added before every reply.
    pub latency_ms: u64,
}

impl fmt::Debug for SmtpFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpFaults")
            .field("rcpt", &self.rcpt)
            .field("data", &self.data)
            .field("end_of_data", &self.end_of_data)
            .field("script", &self.script)
            // Addresses stay out of logs: only how many.
            .field("per_recipient", &self.per_recipient.len())
            .field("greylist_first", &self.greylist_first)
            .field("latency_ms", &self.latency_ms)
            .finish()
    }
}

impl SmtpFaults {
    /// Checks the values; the error names the field that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, fault: &Option<SmtpStageFault>| match fault {
            Some(fault) => fault.validate().map_err(|e| format!("{name}: {e}")),
            None => Ok(()),
        };
        check("rcpt", &self.rcpt)?;
        check("data", &self.data)?;
        check("end_of_data", &self.end_of_data)?;
        for (i, step) in self.script.iter().enumerate() {
            check(&format!("script[{i}].rcpt"), &step.rcpt)?;
            check(&format!("script[{i}].data"), &step.data)?;
            check(&format!("script[{i}].end_of_data"), &step.end_of_data)?;
        }
        for (address, fault) in &self.per_recipient {
            if address.trim().is_empty() {
                return Err("per_recipient: an address is empty".to_owned());
            }
            // The address stays out of the error, which may be logged.
            fault
                .validate()
                .map_err(|e| format!("per_recipient: {e}"))?;
        }
        if self.latency_ms > MAX_SLOW_MS {
            return Err(format!(
                "latency_ms must be at most {MAX_SLOW_MS}, got {}",
                self.latency_ms
            ));
        }
        Ok(())
    }

    /// Brings every value into range, for callers of the library that skip
    /// [`SmtpFaults::validate`].
    fn sanitized(self) -> Self {
        let fix = |fault: Option<SmtpStageFault>| fault.map(SmtpStageFault::sanitized);
        SmtpFaults {
            rcpt: fix(self.rcpt),
            data: fix(self.data),
            end_of_data: fix(self.end_of_data),
            script: self
                .script
                .into_iter()
                .map(|step| SmtpScriptStep {
                    rcpt: fix(step.rcpt),
                    data: fix(step.data),
                    end_of_data: fix(step.end_of_data),
                })
                .collect(),
            per_recipient: self
                .per_recipient
                .into_iter()
                .filter(|(address, _)| !address.trim().is_empty())
                .map(|(address, fault)| (address.trim().to_ascii_lowercase(), fault.sanitized()))
                .collect(),
            greylist_first: self.greylist_first,
            latency_ms: self.latency_ms.min(MAX_SLOW_MS),
        }
    }
}

/// The faults in force, with what they consume: the rest of the script and the greylist memory.
pub(crate) struct FaultState {
    faults: SmtpFaults,
    script: VecDeque<SmtpScriptStep>,
    /// `(sender, recipient)` pairs greylisted once, lowercased. Kept when the faults change,
    /// cleared by a reset.
    greylisted: HashSet<(String, String)>,
}

/// What decided a stage's fault, for the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Faults to apply in order: `slow` ones first, then at most one final fault.
    pub(crate) faults: Vec<SmtpStageFault>,
    /// The final fault is the greylisting of a first attempt.
    pub(crate) greylisted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Data,
    EndOfData,
}

impl FaultState {
    pub(crate) fn new(faults: SmtpFaults) -> Self {
        let mut state = FaultState {
            faults: SmtpFaults::default(),
            script: VecDeque::new(),
            greylisted: HashSet::new(),
        };
        state.set(faults);
        state
    }

    /// Replaces the faults; the script starts over, the greylist memory stays.
    pub(crate) fn set(&mut self, faults: SmtpFaults) {
        let mut faults = faults.sanitized();
        self.script = std::mem::take(&mut faults.script).into();
        self.faults = faults;
    }

    /// Back to no faults, and the greylist memory forgotten.
    pub(crate) fn reset(&mut self) {
        self.set(SmtpFaults::default());
        self.greylisted.clear();
    }

    /// The faults in force, with what is left of the script.
    pub(crate) fn current(&self) -> SmtpFaults {
        SmtpFaults {
            script: self.script.iter().cloned().collect(),
            ..self.faults.clone()
        }
    }

    pub(crate) fn latency_ms(&self) -> u64 {
        self.faults.latency_ms
    }

    /// The script step of a transaction that starts now (an empty step when the script is done).
    pub(crate) fn begin_transaction(&mut self) -> SmtpScriptStep {
        self.script.pop_front().unwrap_or_default()
    }

    /// The faults of `RCPT TO:<recipient>` in a transaction of `sender` with `step`.
    pub(crate) fn rcpt(
        &mut self,
        step: &SmtpScriptStep,
        sender: &str,
        recipient: &str,
    ) -> Decision {
        let lowered = recipient.to_ascii_lowercase();
        let own = self.faults.per_recipient.get(&lowered).cloned();
        let mut decision = Decision {
            faults: Vec::new(),
            greylisted: false,
        };
        for fault in [own, step.rcpt.clone(), self.faults.rcpt.clone()]
            .into_iter()
            .flatten()
        {
            let slow = matches!(fault, SmtpStageFault::Slow { .. });
            decision.faults.push(fault);
            if !slow {
                return decision;
            }
        }
        if self.faults.greylist_first
            && self
                .greylisted
                .insert((sender.to_ascii_lowercase(), lowered))
        {
            decision.faults.push(SmtpStageFault::greylisted());
            decision.greylisted = true;
        }
        decision
    }

    /// The faults of the `DATA` command or of the end of data, in a transaction with `step`.
    pub(crate) fn stage(&self, step: &SmtpScriptStep, stage: Stage) -> Decision {
        let (scripted, standing) = match stage {
            Stage::Data => (&step.data, &self.faults.data),
            Stage::EndOfData => (&step.end_of_data, &self.faults.end_of_data),
        };
        let mut faults = Vec::new();
        for fault in [scripted, standing].into_iter().flatten() {
            let slow = matches!(fault, SmtpStageFault::Slow { .. });
            faults.push(fault.clone());
            if !slow {
                break;
            }
        }
        Decision {
            faults,
            greylisted: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_recipient_then_script_then_standing_then_greylisting() {
        let mut state = FaultState::new(SmtpFaults {
            rcpt: Some(SmtpStageFault::Slow { ms: 5 }),
            per_recipient: BTreeMap::from([(
                "Gone@Example.com".to_owned(),
                SmtpStageFault::user_unknown(),
            )]),
            greylist_first: true,
            script: vec![SmtpScriptStep {
                rcpt: Some(SmtpStageFault::policy()),
                ..SmtpScriptStep::default()
            }],
            ..SmtpFaults::default()
        });
        let step = state.begin_transaction();
        let d = state.rcpt(&step, "a@x", "gone@example.COM");
        assert_eq!(d.faults, [SmtpStageFault::user_unknown()]);
        let d = state.rcpt(&step, "a@x", "b@x");
        assert_eq!(d.faults, [SmtpStageFault::policy()]);

        let step = state.begin_transaction();
        assert_eq!(step, SmtpScriptStep::default(), "the script is used up");
        let d = state.rcpt(&step, "a@x", "b@x");
        assert_eq!(
            d.faults,
            [SmtpStageFault::Slow { ms: 5 }, SmtpStageFault::greylisted()]
        );
        assert!(d.greylisted);
        let d = state.rcpt(&step, "A@X", "B@X");
        assert_eq!(
            d.faults,
            [SmtpStageFault::Slow { ms: 5 }],
            "second attempt passes"
        );
        let d = state.rcpt(&step, "other@x", "b@x");
        assert!(d.greylisted, "per sender and recipient");
    }

    #[test]
    fn stages_take_the_script_first() {
        let mut state = FaultState::new(SmtpFaults {
            end_of_data: Some(SmtpStageFault::Hang),
            script: vec![SmtpScriptStep {
                data: Some(SmtpStageFault::Disconnect),
                end_of_data: Some(SmtpStageFault::Slow { ms: 1 }),
                ..SmtpScriptStep::default()
            }],
            ..SmtpFaults::default()
        });
        let step = state.begin_transaction();
        assert_eq!(
            state.stage(&step, Stage::Data).faults,
            [SmtpStageFault::Disconnect]
        );
        assert_eq!(
            state.stage(&step, Stage::EndOfData).faults,
            [SmtpStageFault::Slow { ms: 1 }, SmtpStageFault::Hang]
        );
        assert!(state.current().script.is_empty());
    }

    #[test]
    fn validation_and_serde_shape() {
        let faults: SmtpFaults = serde_json::from_str(
            r#"{"rcpt": {"reply": {"code": 450, "enhanced": "4.7.1", "text": "greylisted"}},
                "data": "disconnect", "end_of_data": "hang",
                "script": [{}, {"rcpt": {"slow": {"ms": 10}}}],
                "per_recipient": {"x@y": {"reply": {"code": 550, "text": "no"}}}}"#,
        )
        .unwrap();
        assert!(faults.validate().is_ok());
        assert_eq!(faults.script.len(), 2);
        for (bad, field) in [
            (SmtpStageFault::reply(250, "2.0.0", "ok"), "rcpt"),
            (SmtpStageFault::reply(550, "4.1.1", "x"), "rcpt"),
            (SmtpStageFault::reply(550, "5.1", "x"), "rcpt"),
            (SmtpStageFault::reply(550, "5.1.1", "a\r\nb"), "rcpt"),
            (
                SmtpStageFault::Slow {
                    ms: MAX_SLOW_MS + 1,
                },
                "rcpt",
            ),
        ] {
            let faults = SmtpFaults {
                rcpt: Some(bad),
                ..SmtpFaults::default()
            };
            assert!(faults.validate().unwrap_err().starts_with(field));
        }
        let shown = format!("{faults:?}");
        assert!(!shown.contains("x@y"), "{shown}");
    }

    #[test]
    fn sanitizing_fixes_what_the_library_caller_passed() {
        let state = FaultState::new(SmtpFaults {
            rcpt: Some(SmtpStageFault::reply(250, "5.1.1", "a\nb")),
            ..SmtpFaults::default()
        });
        assert_eq!(
            state.current().rcpt,
            Some(SmtpStageFault::Reply {
                code: 400,
                enhanced: None,
                text: "a b".into()
            })
        );
    }
}
