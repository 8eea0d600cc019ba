//! The CRM mocks' faults: what a SOAP request gets instead of (or before) its normal answer.
//!
//! Order, fixed: the script of the request's operation (`status_script` for
//! `GetCommunicationStatus`, `script` for everything else), then the fault of the request's
//! target system (ESB), then `error_rate`. `latency_ms` comes on top of every answer. The
//! rejection rules (`reject_customers`, `reject_share`) apply per item to the bundles answered
//! normally.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use clm_contracts::soap::TargetSystem;
use serde::{Deserialize, Serialize};

/// Longest `slow` fault accepted: longer would only pile up requests.
const MAX_SLOW_MS: u64 = 600_000;

/// One fault, as a script entry or a target system's fault. In JSON: `"ok"`, `"client_fault"`,
/// `"server_fault"`, `"http_500"`, `{"slow": {"ms": 1500}}`, `"accept_then_hang"`, `"hang"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrmFault {
    /// A normal answer.
    Ok,
    /// A SOAP `Client` (1.2 `Sender`) fault with a `ClmFault` detail, not retryable: HTTP 500
    /// (1.1) or 400 (1.2). Nothing is recorded.
    ClientFault,
    /// A SOAP `Server` (1.2 `Receiver`) fault, retryable, HTTP 500. Nothing is recorded.
    ServerFault,
    /// HTTP 500 with a plain-text body, no SOAP at all (a proxy or a crashed runtime).
    #[serde(rename = "http_500")]
    Http500,
    /// Waits `ms` (on top of `latency_ms`), then answers normally.
    Slow { ms: u64 },
    /// Handles the request normally (a bundle is recorded and its items accepted, so the status
    /// operation reports them), but never answers: held until the client gives up or the mock
    /// shuts down. The timeout with an unknown outcome.
    AcceptThenHang,
    /// Never answers, records nothing: held until the client gives up or the mock shuts down.
    Hang,
}

/// The faults a CRM mock injects. Every field has a default (all off), so a control request may
/// send only the fields it changes. `Debug` shows how many customer ids `reject_customers` holds,
/// never the ids.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CrmFaults {
    /// Faults the next `SendCommunications` requests get, in order (unreadable requests take
    /// from it too), before any other fault applies.
    pub script: Vec<CrmFault>,
    /// Faults the next `GetCommunicationStatus` requests get, in order. `accept_then_hang` is
    /// `hang` here (a query accepts nothing).
    pub status_script: Vec<CrmFault>,
    /// ESB: a fault every request for that target system gets while it is set, both operations,
    /// e.g. `{"AMDOCS": "server_fault"}` (keys: `AMDOCS`, `CRM_B2C`). The SAP mock takes none.
    pub target_faults: BTreeMap<String, CrmFault>,
    /// Share (0..=1) of requests answered with a `Server` fault.
    pub error_rate: f64,
    /// Added before every answer.
    pub latency_ms: u64,
    /// Items for these `CustomerId`s are answered `Rejected` (with `ErrorCode`/`ErrorText`)
    /// instead of accepted. An item accepted before stays `Duplicate`.
    pub reject_customers: Vec<String>,
    /// Share (0..=1) of message ids answered `Rejected`, chosen by a hash of the id: the same id
    /// always gets the same verdict.
    pub reject_share: f64,
}

impl fmt::Debug for CrmFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrmFaults")
            .field("script", &self.script)
            .field("status_script", &self.status_script)
            .field("target_faults", &self.target_faults)
            .field("error_rate", &self.error_rate)
            .field("latency_ms", &self.latency_ms)
            // Customer ids stay out of logs: only how many.
            .field("reject_customers", &self.reject_customers.len())
            .field("reject_share", &self.reject_share)
            .finish()
    }
}

impl Default for CrmFaults {
    fn default() -> Self {
        CrmFaults {
            script: Vec::new(),
            status_script: Vec::new(),
            target_faults: BTreeMap::new(),
            error_rate: 0.0,
            latency_ms: 0,
            reject_customers: Vec::new(),
            reject_share: 0.0,
        }
    }
}

impl CrmFaults {
    /// Checks the values; the error names the field that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("reject_share", self.reject_share),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        for key in self.target_faults.keys() {
            if key.parse::<TargetSystem>().is_err() {
                return Err(format!(
                    "target_faults: {key:?} is no TargetSystem (AMDOCS, CRM_B2C)"
                ));
            }
        }
        let all = self
            .script
            .iter()
            .chain(&self.status_script)
            .chain(self.target_faults.values());
        for fault in all {
            if let CrmFault::Slow { ms } = fault
                && *ms > MAX_SLOW_MS
            {
                return Err(format!("slow: ms must be at most {MAX_SLOW_MS}, got {ms}"));
            }
        }
        Ok(())
    }

    /// Brings every value into range, for callers of the library that skip
    /// [`CrmFaults::validate`]: rates clamped, unknown target systems and overlong `slow` faults
    /// dropped.
    fn sanitized(mut self) -> Self {
        let clamp = |r: f64| if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        self.error_rate = clamp(self.error_rate);
        self.reject_share = clamp(self.reject_share);
        self.target_faults
            .retain(|key, _| key.parse::<TargetSystem>().is_ok());
        let fits = |f: &CrmFault| !matches!(f, CrmFault::Slow { ms } if *ms > MAX_SLOW_MS);
        self.script.retain(fits);
        self.status_script.retain(fits);
        self.target_faults.retain(|_, f| fits(f));
        self
    }
}

/// Which script a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `SendCommunications`, and anything that is not a status query.
    Send,
    Status,
}

/// The rejection rules, as a request reads them.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    pub(crate) customers: HashSet<String>,
    pub(crate) share: f64,
}

/// The faults in force and what is left of the scripts.
pub(crate) struct FaultState {
    faults: CrmFaults,
    script: VecDeque<CrmFault>,
    status_script: VecDeque<CrmFault>,
    /// Behind an `Arc`: every bundle takes a copy.
    rules: Arc<Rules>,
}

impl FaultState {
    pub(crate) fn new(faults: CrmFaults) -> Self {
        let mut state = FaultState {
            faults: CrmFaults::default(),
            script: VecDeque::new(),
            status_script: VecDeque::new(),
            rules: Arc::default(),
        };
        state.set(faults);
        state
    }

    /// Replaces the faults; the scripts start over.
    pub(crate) fn set(&mut self, faults: CrmFaults) {
        let mut faults = faults.sanitized();
        self.script = std::mem::take(&mut faults.script).into();
        self.status_script = std::mem::take(&mut faults.status_script).into();
        self.rules = Arc::new(Rules {
            customers: faults.reject_customers.iter().cloned().collect(),
            share: faults.reject_share,
        });
        self.faults = faults;
    }

    pub(crate) fn rules(&self) -> Arc<Rules> {
        self.rules.clone()
    }

    /// The faults in force, with what is left of the scripts.
    pub(crate) fn current(&self) -> CrmFaults {
        CrmFaults {
            script: self.script.iter().copied().collect(),
            status_script: self.status_script.iter().copied().collect(),
            ..self.faults.clone()
        }
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(self.faults.latency_ms)
    }

    /// The fault for one request of `op` for `target`.
    pub(crate) fn decide(&mut self, op: Op, target: Option<TargetSystem>) -> CrmFault {
        let scripted = match op {
            Op::Send => self.script.pop_front(),
            Op::Status => self.status_script.pop_front().map(|f| match f {
                CrmFault::AcceptThenHang => CrmFault::Hang,
                other => other,
            }),
        };
        if let Some(fault) = scripted {
            return fault;
        }
        if let Some(fault) = target.and_then(|t| self.faults.target_faults.get(t.as_str())) {
            return *fault;
        }
        if self.faults.error_rate > 0.0 && rand::random::<f64>() < self.faults.error_rate {
            return CrmFault::ServerFault;
        }
        CrmFault::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_are_the_documented_ones() {
        let faults: CrmFaults = serde_json::from_str(
            r#"{"script": ["ok", "client_fault", "server_fault", "http_500", {"slow": {"ms": 5}},
                           "accept_then_hang", "hang"],
                "target_faults": {"AMDOCS": "server_fault"}}"#,
        )
        .unwrap();
        assert_eq!(
            faults.script,
            [
                CrmFault::Ok,
                CrmFault::ClientFault,
                CrmFault::ServerFault,
                CrmFault::Http500,
                CrmFault::Slow { ms: 5 },
                CrmFault::AcceptThenHang,
                CrmFault::Hang
            ]
        );
        assert!(faults.validate().is_ok());
        let back = serde_json::to_value(&faults).unwrap();
        assert_eq!(back["script"][3], "http_500");
        assert_eq!(back["script"][4]["slow"]["ms"], 5);
        assert!(serde_json::from_str::<CrmFaults>(r#"{"script": ["boom"]}"#).is_err());
    }

    #[test]
    fn scripts_per_operation_then_target_then_rate() {
        let mut state = FaultState::new(CrmFaults {
            script: vec![CrmFault::Http500],
            status_script: vec![CrmFault::AcceptThenHang, CrmFault::ServerFault],
            target_faults: BTreeMap::from([("CRM_B2C".to_owned(), CrmFault::ClientFault)]),
            ..CrmFaults::default()
        });
        assert_eq!(state.decide(Op::Status, None), CrmFault::Hang);
        assert_eq!(state.decide(Op::Send, None), CrmFault::Http500);
        assert_eq!(state.decide(Op::Send, None), CrmFault::Ok);
        assert_eq!(
            state.decide(Op::Status, Some(TargetSystem::CrmB2c)),
            CrmFault::ServerFault
        );
        assert_eq!(
            state.decide(Op::Status, Some(TargetSystem::CrmB2c)),
            CrmFault::ClientFault
        );
        assert_eq!(
            state.decide(Op::Send, Some(TargetSystem::Amdocs)),
            CrmFault::Ok
        );
        let mut state = FaultState::new(CrmFaults {
            error_rate: 1.0,
            ..CrmFaults::default()
        });
        assert_eq!(state.decide(Op::Send, None), CrmFault::ServerFault);
    }

    #[test]
    fn validation_names_the_field_and_sanitizing_clamps() {
        let bad = CrmFaults {
            error_rate: 1.5,
            ..CrmFaults::default()
        };
        assert!(bad.validate().unwrap_err().contains("error_rate"));
        let bad = CrmFaults {
            reject_share: -0.1,
            ..CrmFaults::default()
        };
        assert!(bad.validate().unwrap_err().contains("reject_share"));
        let bad = CrmFaults {
            target_faults: BTreeMap::from([("SAP".to_owned(), CrmFault::Hang)]),
            ..CrmFaults::default()
        };
        assert!(bad.validate().unwrap_err().contains("target_faults"));
        let state = FaultState::new(CrmFaults {
            error_rate: 9.0,
            reject_share: f64::NAN,
            reject_customers: vec!["7701234567".into()],
            script: vec![CrmFault::Slow { ms: u64::MAX }, CrmFault::Hang],
            ..bad
        });
        let f = state.current();
        assert_eq!((f.error_rate, f.reject_share), (1.0, 0.0));
        assert!(state.rules().customers.contains("7701234567"));
        let debug = format!("{f:?}");
        assert!(
            !debug.contains("7701234567"),
            "no customer id in Debug: {debug}"
        );
        assert_eq!(f.script, [CrmFault::Hang]);
        assert!(f.target_faults.is_empty());
    }
}
