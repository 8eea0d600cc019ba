//! `[channels.eissd]`: the endpoint offers go to, and the DWH table responses are read from.

use std::str::FromStr;

use clm_contracts::ChannelId;
use serde::{Deserialize, Serialize};

use crate::config::channel::channel_settings;
use crate::config::{Config, ConfigError, EndpointConfig, PolicyConfig, invalid};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EissdChannelConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    pub policy: PolicyConfig,
    /// Base URL, auth and TLS of EISSD's API.
    pub endpoint: Option<EndpointConfig>,
    /// Where EISSD's responses are read from (it has no webhook).
    pub responses: Option<DwhConfig>,
}

channel_settings!(EissdChannelConfig);

/// The DWH table EISSD writes its responses to, polled incrementally.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DwhConfig {
    /// `postgres://…` (Greenplum or PostgreSQL) or `sqlite://PATH`. Sandbox mode always reads
    /// `<data_dir>/eissd-dwh.db`, the file the bundled EISSD mock writes (a source here is refused).
    pub source: Option<String>,
    /// Pause between polls when the last one found nothing new.
    pub poll_ms: u64,
    /// Rows read per query.
    pub batch: u32,
    /// How long after its `created_at` a row may still become visible (the writer's transaction
    /// commits late). Rows younger than this are read again on the next poll (and recognised);
    /// the persisted watermark only moves past rows older than it.
    pub settle_ms: u64,
    /// How far behind the watermark the periodic rescan reads again (0: no rescan).
    pub lookback_ms: u64,
    /// How often the rescan runs (0: never). Rows it finds were late: recorded and counted.
    pub rescan_ms: u64,
}

impl Default for DwhConfig {
    fn default() -> Self {
        DwhConfig {
            source: None,
            poll_ms: 1_000,
            batch: 500,
            settle_ms: 30_000,
            lookback_ms: 900_000,
            rescan_ms: 300_000,
        }
    }
}

impl EissdChannelConfig {
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
            e.validate(key, false)?;
        }
        if let Some(r) = &self.responses {
            r.validate(key)?;
            if config.sandbox && r.source.is_some() {
                return Err(invalid(
                    key("responses.source"),
                    "is not used in sandbox mode (the bundled EISSD mock writes <data_dir>/eissd-dwh.db); set sandbox = false to read a real DWH",
                ));
            }
        }
        if self.enabled == Some(true)
            && !config.sandbox
            && self.endpoint.is_some()
            && self.responses.as_ref().is_none_or(|r| r.source.is_none())
        {
            return Err(invalid(
                key("responses.source"),
                "is required: EISSD's responses come only from its DWH table",
            ));
        }
        Ok(())
    }
}

impl DwhConfig {
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if let Some(src) = &self.source
            && !(src.starts_with("postgres://")
                || src.starts_with("postgresql://")
                || src.starts_with("sqlite:"))
        {
            return Err(invalid(
                key("responses.source"),
                "must be a postgres:// URL (Greenplum, PostgreSQL) or sqlite://PATH",
            ));
        }
        if let Some(src) = &self.source
            && src.starts_with("postgres")
            && let Err(e) = sqlx::postgres::PgConnectOptions::from_str(src)
        {
            return Err(invalid(
                key("responses.source"),
                format!("is not a usable PostgreSQL URL: {e}"),
            ));
        }
        const HOUR: u64 = 3_600_000;
        if !(1..=HOUR).contains(&self.poll_ms) {
            return Err(invalid(
                key("responses.poll_ms"),
                "must be between 1 and 3600000 (an hour)",
            ));
        }
        if !(100..=HOUR).contains(&self.settle_ms) {
            return Err(invalid(
                key("responses.settle_ms"),
                "must be between 100 and 3600000: rows whose writers commit later than this after created_at are only found by the rescan",
            ));
        }
        if self.lookback_ms > 7 * 24 * HOUR || self.rescan_ms > 24 * HOUR {
            return Err(invalid(
                key("responses.lookback_ms"),
                "lookback_ms is at most a week and rescan_ms at most a day",
            ));
        }
        if self.lookback_ms != 0 && self.lookback_ms < self.settle_ms {
            return Err(invalid(
                key("responses.lookback_ms"),
                "must be 0 (no rescan) or at least settle_ms",
            ));
        }
        if self.batch == 0 || self.batch > 10_000 {
            return Err(invalid(
                key("responses.batch"),
                "must be between 1 and 10000",
            ));
        }
        Ok(())
    }
}
