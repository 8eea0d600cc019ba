//! What the channels send back: Wink and ELK webhooks, EISSD's DWH rows.

use clm_contracts::ChannelId;
use clm_contracts::channels::{eissd, elk, wink};
use serde::de::DeserializeOwned;

use crate::outcome::{Report, ReportError, ReportRef};

/// Longest error message about a webhook body.
const MAX_ERROR: usize = 200;

/// Parses a webhook body of `wink` or `elk` strictly (the contract types refuse unknown fields).
/// The error names the field and the problem, never the body.
pub fn parse_webhook(channel: ChannelId, body: &[u8]) -> Result<Report, ReportError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ReportError(format!(
            "empty body: expected a {channel} webhook (JSON object)"
        )));
    }
    match channel {
        ChannelId::Wink => {
            let hook: wink::Webhook = strict(channel, body)?;
            Ok(Report {
                reference: ReportRef::Ours(hook.message_id),
                kind: hook.response_kind(),
                occurred_at: Some(hook.occurred_at),
                detail: hook.wink_id.as_ref().map(|id| format!("wink_id={id}")),
                dedupe_key: event_id(hook.event_id)?,
                whole_message: true,
            })
        }
        ChannelId::Elk => {
            let hook: elk::Webhook = strict(channel, body)?;
            let mut detail = Vec::new();
            if let Some(id) = &hook.elk_id {
                detail.push(format!("elk_id={id}"));
            }
            if let Some(surface) = hook.surface {
                detail.push(format!("surface={}", surface_name(surface)));
            }
            Ok(Report {
                reference: ReportRef::Ours(hook.message_id),
                kind: hook.response_kind(),
                occurred_at: Some(hook.occurred_at),
                detail: (!detail.is_empty()).then(|| detail.join(" ")),
                dedupe_key: event_id(hook.event_id)?,
                whole_message: true,
            })
        }
        other => Err(ReportError(format!(
            "channel `{other}` has no JSON webhook (wink and elk do)"
        ))),
    }
}

/// One row of EISSD's response table as a report.
pub fn row_report(row: &eissd::ResponseRow) -> Report {
    Report {
        reference: ReportRef::Ours(row.message_id),
        kind: row.response_kind(),
        occurred_at: Some(row.created_at),
        detail: row.eissd_id.as_ref().map(|id| format!("eissd_id={id}")),
        dedupe_key: row.response_id.clone(),
        whole_message: true,
    }
}

fn surface_name(surface: elk::Surface) -> &'static str {
    match surface {
        elk::Surface::Web => "web",
        elk::Surface::Mobile => "mobile",
    }
}

fn event_id(id: String) -> Result<String, ReportError> {
    if id.trim().is_empty() {
        return Err(ReportError("`event_id`: must not be empty".into()));
    }
    Ok(id)
}

fn strict<T: DeserializeOwned>(channel: ChannelId, body: &[u8]) -> Result<T, ReportError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ReportError(format!(
            "invalid {channel} webhook: expected a JSON object"
        )));
    }
    let fail = |path: &str, err: &serde_json::Error| {
        let err = err.to_string();
        let mut msg = format!("invalid {channel} webhook: ");
        // serde names an unknown or missing field itself.
        if path != "." && !path.is_empty() && !err.contains(&format!("`{path}`")) {
            msg.push('`');
            msg.push_str(path);
            msg.push_str("`: ");
        }
        msg.push_str(&err);
        ReportError(short(msg))
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| fail(&e.path().to_string(), e.inner()))?;
    de.end().map_err(|e| fail(".", &e))?;
    Ok(value)
}

/// At most [`MAX_ERROR`] characters, on one line.
fn short(msg: String) -> String {
    if msg.chars().count() <= MAX_ERROR && !msg.contains(char::is_control) {
        return msg;
    }
    let mut s: String = msg
        .chars()
        .take(MAX_ERROR)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if msg.chars().count() > MAX_ERROR {
        s.push('…');
    }
    s
}
