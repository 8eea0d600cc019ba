//! `[channels.sap_crm]`, `[channels.amdocs]`, `[channels.crm_b2c]`: the SOAP service, its
//! bundling, beside what every channel has. Their responses come over SOAP (`[soap]` callers).

use std::time::Duration;

use clm_contracts::ChannelId;
use serde::{Deserialize, Serialize};

use crate::config::channel::{channel_settings, unknown_on_timeout};
use crate::config::{Config, ConfigError, EndpointConfig, PolicyConfig, invalid};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrmChannelConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    pub policy: PolicyConfig,
    /// The SOAP service URL, auth (`basic` or `ws_security`) and TLS.
    pub endpoint: Option<EndpointConfig>,
    /// SOAP version and bundling.
    pub soap: SoapChannelConfig,
}

channel_settings!(CrmChannelConfig);

impl Default for CrmChannelConfig {
    fn default() -> Self {
        // Room for the bundles in flight, and a per-item timeout that covers the wait for a
        // bundle, the call and the reconciliation after a lost answer.
        let soap = SoapChannelConfig::default();
        let policy = PolicyConfig {
            concurrency: u32::try_from(soap.bundle_size * soap.parallel_bundles)
                .unwrap_or(u32::MAX),
            rate: 500.0,
            burst: 500,
            timeout_ms: soap.worst_case_ms() + 5_000,
            ..PolicyConfig::default()
        };
        CrmChannelConfig {
            enabled: None,
            policy,
            endpoint: None,
            soap,
        }
    }
}

/// How a CRM channel bundles and talks SOAP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoapChannelConfig {
    /// `"1.1"` or `"1.2"`.
    pub version: String,
    /// Most items per `SendCommunications` bundle (SAP's own services take 100 to 500; at most
    /// 1000).
    pub bundle_size: usize,
    /// Longest the first item of a bundle waits for more.
    pub bundle_wait_ms: u64,
    /// Bundles in flight at once.
    pub parallel_bundles: usize,
    /// One SOAP call's time limit (a send or a status query).
    pub request_timeout_ms: u64,
    /// Status queries made after a send whose answer was lost, before the items are left
    /// `unknown`.
    pub reconcile_attempts: u32,
    /// How often items left `unknown` (every status query failed) are asked about again, by one
    /// instance; 0: never.
    pub reconcile_every_ms: u64,
}

impl Default for SoapChannelConfig {
    fn default() -> Self {
        SoapChannelConfig {
            version: "1.1".into(),
            bundle_size: 100,
            bundle_wait_ms: 200,
            parallel_bundles: 4,
            request_timeout_ms: 10_000,
            reconcile_attempts: 3,
            reconcile_every_ms: 60_000,
        }
    }
}

impl SoapChannelConfig {
    /// The longest one item can spend in the connector ([`clm_connectors::crm::worst_case`]):
    /// the channel's per-attempt timeout must be longer.
    pub fn worst_case_ms(&self) -> u64 {
        let worst = clm_connectors::crm::worst_case(
            Duration::from_millis(self.bundle_wait_ms),
            Duration::from_millis(self.request_timeout_ms),
            self.reconcile_attempts,
        );
        u64::try_from(worst.as_millis()).unwrap_or(u64::MAX)
    }

    fn validate(
        &self,
        policy: &PolicyConfig,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        if self.version != "1.1" && self.version != "1.2" {
            return Err(invalid(key("soap.version"), "must be \"1.1\" or \"1.2\""));
        }
        if !(1..=clm_contracts::soap::MAX_BUNDLE).contains(&self.bundle_size) {
            return Err(invalid(
                key("soap.bundle_size"),
                "must be between 1 and 1000",
            ));
        }
        if self.reconcile_attempts == 0 {
            return Err(invalid(
                key("soap.reconcile_attempts"),
                "must be at least 1: a bundle whose answer was lost is asked about, never resent blindly",
            ));
        }
        if self.parallel_bundles == 0 || self.request_timeout_ms == 0 {
            return Err(invalid(
                key("soap.parallel_bundles"),
                "parallel_bundles and request_timeout_ms must be at least 1",
            ));
        }
        if (policy.concurrency as usize) < self.bundle_size {
            return Err(invalid(
                key("policy.concurrency"),
                format!(
                    "must be at least soap.bundle_size ({}): every item waiting for its bundle holds a slot",
                    self.bundle_size
                ),
            ));
        }
        let worst = self.worst_case_ms();
        if policy.timeout_ms <= worst {
            return Err(invalid(
                key("policy.timeout_ms"),
                format!(
                    "must be above {worst} ms: the wait for a bundle, the call and the status queries after a lost answer (soap.*) must fit in one attempt"
                ),
            ));
        }
        Ok(())
    }
}

impl CrmChannelConfig {
    fn unconfigured(&self) -> Option<&'static str> {
        self.endpoint.is_none().then_some("endpoint")
    }

    fn check(
        &self,
        _id: ChannelId,
        config: &Config,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        if let Some(e) = &self.endpoint {
            e.validate(key, true)?;
        }
        unknown_on_timeout(&self.policy, key, "e-mail and the CRM channels")?;
        self.soap.validate(&self.policy, key)?;
        if self.enabled == Some(true) && !config.is_loopback() && config.soap.callers.is_empty() {
            return Err(invalid(
                "soap.callers",
                "are required when a CRM channel is enabled and server.listen is not a loopback address: the CRMs' callbacks would all be refused",
            ));
        }
        Ok(())
    }
}
