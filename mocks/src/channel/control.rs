//! The control API under `/control/<channel>/`: what the mock received, its counters, its faults
//! and response settings (changeable mid-run), a reset, and one response on demand.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clm_contracts::ChannelId;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::ResponsesConfig;
use super::state::Shared;
use super::wire;
use crate::faults::Faults;

/// Records `GET received` returns without a `limit`.
const DEFAULT_LIMIT: usize = 1000;

pub(crate) fn routes(channel: ChannelId) -> Router<Arc<Shared>> {
    let path = |leaf: &str| format!("/control/{channel}/{leaf}");
    Router::new()
        .route(&path("received"), get(received))
        .route(&path("stats"), get(stats))
        .route(&path("faults"), get(faults).put(put_faults))
        .route(&path("responses"), get(responses).put(put_responses))
        .route(&path("reset"), post(reset))
        .route(&path("respond"), post(respond))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn received(State(shared): State<Arc<Shared>>, Query(q): Query<Limit>) -> Response {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    Json(shared.recorder.received(Some(limit))).into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.stats()).into_response()
}

async fn faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.faults()).into_response()
}

async fn put_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<Faults>(&body).and_then(|f| f.validate().map(|()| f)) {
        Ok(faults) => {
            tracing::info!(channel = %shared.channel, ?faults, "channel mock faults changed");
            shared.set_faults(faults);
            Json(shared.faults()).into_response()
        }
        Err(reason) => bad_request(reason),
    }
}

/// `GET responses`: the settings, `token` and `hmac_secret` shown as `"***"` when set: the
/// control API never hands out a secret.
async fn responses(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.responses().redacted()).into_response()
}

/// `PUT responses`: replaces the settings; an omitted field takes its default (no token, no
/// secret), and a `token` or `hmac_secret` of `"***"` keeps the one in force. Answers like `GET`.
async fn put_responses(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let channel = shared.channel;
    match parse::<ResponsesConfig>(&body).and_then(|r| r.validate(channel).map(|()| r)) {
        Ok(responses) => {
            let now = shared.put_responses(responses);
            // `Debug` hides the token and secret.
            tracing::info!(%channel, responses = ?now, "channel mock responses changed");
            Json(now.redacted()).into_response()
        }
        Err(reason) => bad_request(reason),
    }
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.reset();
    tracing::info!(channel = %shared.channel, "channel mock reset");
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Respond {
    message_id: Uuid,
    kind: String,
}

/// `POST respond` `{"message_id": "…", "kind": "clicked"}`: 202 `{"id": "<event or response
/// id>"}`, 400 for a bad body or kind, 409 when responses have no destination.
async fn respond(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request = match parse::<Respond>(&body) {
        Ok(request) => request,
        Err(reason) => return bad_request(reason),
    };
    if let Err(reason) = wire::Kind::parse(shared.channel, &request.kind) {
        return bad_request(reason);
    }
    match shared.respond_now(request.message_id, &request.kind) {
        Ok(id) => {
            tracing::info!(channel = %shared.channel, message_id = %request.message_id, kind = %request.kind, %id, "response on demand");
            (StatusCode::ACCEPTED, Json(serde_json::json!({ "id": id }))).into_response()
        }
        Err(reason) => wire::error(StatusCode::CONFLICT, "no_destination", reason),
    }
}

/// Parses a JSON body whatever its `Content-Type`, so `curl -d` works too. An empty body means
/// all defaults.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
}

fn bad_request(reason: String) -> Response {
    wire::error(StatusCode::BAD_REQUEST, "invalid_request", reason)
}
