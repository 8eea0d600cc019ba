//! The SMS family (`sms`): its settings ([`config`]), how its connector is built from them
//! (Kannel or a JSON gateway; the bundled SMS mock in sandbox mode), and its plug-in: the segment
//! count at intake and the delivery-report parser of `/ingest/sms`.

pub mod config;

use std::sync::Arc;

use anyhow::Context;
use axum::http::{Method, header};
use clm_connectors::sms::{Dialect, SmsConfig, SmsConnector, json as sms_json, kannel};
use clm_connectors::{Connector, Report};
use clm_contracts::{ChannelId, Communication};
use clm_mocks::SmsMock;
use futures_util::future::BoxFuture;

use super::{Build, Built, Family, Mocks, Plugin, ReportRequest};
use crate::config::{Config, SmsDialect};

/// The SMS family.
pub static FAMILY: Family = Family::new("sms", &[ChannelId::Sms], start_mocks, build);

fn start_mocks<'a>(m: &'a mut Mocks<'_>) -> BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        let (_, _, sandbox) = m.parts();
        let mock = SmsMock::start(([127, 0, 0, 1], 0).into())
            .await
            .context("starting the bundled SMS mock")?;
        sandbox.sms = Some(mock);
        Ok(())
    })
}

fn build(b: &Build<'_>) -> anyhow::Result<Built> {
    let mut connectors = Vec::new();
    if b.config.channel(ChannelId::Sms).is_enabled() {
        let mock = b.sandbox.and_then(|s| s.sms.as_ref());
        connectors.push((ChannelId::Sms, connector(b.config, b.public_url, mock)?));
    }
    Ok(Built {
        plugin: Arc::new(SmsPlugin),
        connectors,
    })
}

/// The SMS hooks: segments at intake, delivery reports at ingest.
pub struct SmsPlugin;

impl Plugin for SmsPlugin {
    /// A long text goes as several segments (GSM 03.38 or UCS-2), each billed and reported.
    fn parts(&self, comm: &Communication) -> u32 {
        let text = comm.content.text.as_deref().unwrap_or_default();
        u32::try_from(clm_contracts::sms::segment(text).parts).unwrap_or(1)
    }

    /// Kannel reports come as GET query parameters or as a POSTed form; the JSON dialect as a
    /// POSTed JSON body.
    fn parse_report(&self, req: &ReportRequest<'_>) -> Result<Report, String> {
        let is_json = req
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if *req.method == Method::POST && is_json {
            let route_id = form_urlencoded::parse(req.query.as_bytes())
                .find(|(k, _)| k == "id")
                .map(|(_, v)| v.into_owned());
            return sms_json::parse_report(req.body, route_id.as_deref())
                .map_err(|e| e.to_string());
        }
        let mut params: Vec<(String, String)> = form_urlencoded::parse(req.query.as_bytes())
            .into_owned()
            .collect();
        if *req.method == Method::POST {
            params.extend(form_urlencoded::parse(req.body).into_owned());
        }
        kannel::parse_report(&params).map_err(|e| e.to_string())
    }

    fn reported_field(&self, _channel: ChannelId, field: &'static str) -> String {
        match field {
            "report id" => "smsc_id (or message_id)",
            "detail" => "answer",
            "message id" => "message_id",
            other => other,
        }
        .to_owned()
    }
}

/// The SMS connector: the configured gateway, or (sandbox) the bundled SMS mock.
pub fn connector(
    config: &Config,
    public_url: &str,
    sandbox: Option<&SmsMock>,
) -> anyhow::Result<Arc<dyn Connector>> {
    let ch = &config.channels.sms;
    let g = ch.gateway.as_ref();
    let dialect = match g.map(|g| g.dialect) {
        Some(SmsDialect::Json) => Dialect::Json,
        _ => Dialect::Kannel,
    };
    let url = match (sandbox, dialect) {
        (Some(m), Dialect::Kannel) => m.kannel_url(),
        (Some(m), Dialect::Json) => m.json_url(),
        (None, _) => g.context("channels.sms.gateway is required")?.url.clone(),
    };
    let (username, password) = match (sandbox, g) {
        (None, Some(g)) => (g.username.clone(), g.password.clone()),
        _ => (None, None),
    };
    let reports = g.is_none_or(|g| g.delivery_reports);
    let cfg = SmsConfig {
        dialect,
        url,
        username,
        password,
        from: g.map_or_else(|| "CLM".to_owned(), |g| g.from.clone()),
        dlr_mask: g.map_or(clm_contracts::sms::wire::kannel::DLR_MASK_ALL, |g| {
            g.dlr_mask
        }),
        dlr_url: reports.then(|| format!("{}/ingest/sms", public_url.trim_end_matches('/'))),
        dlr_token: ch.ingest.token.clone(),
        connect_timeout: crate::config::endpoint::connect_timeout(ch.policy.timeout_ms),
        pool_size: ch.policy.concurrency as usize,
    };
    Ok(Arc::new(
        SmsConnector::new(cfg).context("building the SMS HTTP client")?,
    ))
}
