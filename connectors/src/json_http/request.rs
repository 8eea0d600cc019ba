//! A communication as the channel's send request (`clm_contracts::channels::{wink, elk, eissd}`).
//!
//! Intake validation makes sure a communication has what its channel needs; the checks here repeat
//! it so that a communication that slipped through fails with a reason instead of sending
//! something the channel would refuse or, worse, show.

use clm_contracts::channels::{eissd, elk, wink};
use clm_contracts::communication::elk_surfaces;
use clm_contracts::{ChannelId, Communication};

/// The send path of a channel of this family.
pub(super) fn send_path(channel: ChannelId) -> Option<&'static str> {
    match channel {
        ChannelId::Wink => Some(wink::SEND_PATH),
        ChannelId::Elk => Some(elk::SEND_PATH),
        ChannelId::Eissd => Some(eissd::SEND_PATH),
        _ => None,
    }
}

/// The JSON body of the send request, or why the communication cannot become one.
pub(super) fn body(channel: ChannelId, comm: &Communication) -> Result<Vec<u8>, String> {
    let json = match channel {
        ChannelId::Wink => serde_json::to_vec(&wink_request(comm)?),
        ChannelId::Elk => serde_json::to_vec(&elk_request(comm)?),
        ChannelId::Eissd => serde_json::to_vec(&eissd_request(comm)?),
        other => return Err(format!("channel `{other}` is not an HTTP JSON channel")),
    };
    json.map_err(|e| format!("cannot encode the request: {e}"))
}

pub(super) fn wink_request(comm: &Communication) -> Result<wink::SendRequest, String> {
    Ok(wink::SendRequest {
        message_id: comm.id,
        account_id: comm.recipient.clone(),
        title: required("content.subject", &comm.content.subject)?,
        body: required("content.text", &comm.content.text)?,
        deep_link: string_param(comm, "deep_link")?,
        image_url: string_param(comm, "image_url")?,
        expires_at: comm.expires_at,
    })
}

pub(super) fn elk_request(comm: &Communication) -> Result<elk::SendRequest, String> {
    let surfaces = elk_surfaces(comm).map_err(|e| e.to_string())?;
    if surfaces.is_empty() {
        return Err("attributes.surfaces: names no surface (web, mobile)".into());
    }
    Ok(elk::SendRequest {
        message_id: comm.id,
        account_id: comm.recipient.clone(),
        title: required("content.subject", &comm.content.subject)?,
        text: required("content.text", &comm.content.text)?,
        offer_code: comm.content.offer_code.clone(),
        surfaces,
        expires_at: comm.expires_at,
    })
}

pub(super) fn eissd_request(comm: &Communication) -> Result<eissd::SendRequest, String> {
    Ok(eissd::SendRequest {
        message_id: comm.id,
        customer_id: comm.customer_id.clone(),
        offer_code: required("content.offer_code", &comm.content.offer_code)?,
        campaign_id: comm.campaign_id.clone(),
        valid_from: comm.not_before,
        valid_until: comm.expires_at,
    })
}

fn required(field: &str, value: &Option<String>) -> Result<String, String> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v.clone()),
        _ => Err(format!("{field}: is required")),
    }
}

/// `content.params.<name>`: absent or null is none, a string is used, anything else is refused.
fn string_param(comm: &Communication, name: &str) -> Result<Option<String>, String> {
    match comm.content.params.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("content.params.{name}: must be a string")),
    }
}
