//! The control API under `/control/email/`: what the mock received, its counters, its faults and
//! feedback settings (changeable mid-run), and a reset.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::CONTROL_PREFIX;
use super::faults::SmtpFaults;
use super::feedback::EmailFeedback;
use super::state::Shared;

/// Records `GET received` returns without a `limit`.
const DEFAULT_LIMIT: usize = 1000;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    let path = |leaf: &str| format!("{CONTROL_PREFIX}/{leaf}");
    Router::new()
        .route(&path("received"), get(received))
        .route(&path("stats"), get(stats))
        .route(&path("faults"), get(faults).put(put_faults))
        .route(&path("feedback"), get(feedback).put(put_feedback))
        .route(&path("reset"), post(reset))
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

/// `PUT faults`: replaces the faults (an omitted field is off); the script starts over. Answers
/// like `GET`.
async fn put_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<SmtpFaults>(&body).and_then(|f| f.validate().map(|()| f)) {
        Ok(faults) => {
            // `Debug` counts the addresses of `per_recipient`, never shows them.
            tracing::info!(?faults, "smtp mock faults changed");
            shared.set_faults(faults);
            Json(shared.faults()).into_response()
        }
        Err(reason) => bad_request(reason),
    }
}

/// `GET feedback`: the settings, `hmac_secret` and the Basic password shown as `"***"` when set:
/// the control API never hands out a secret.
async fn feedback(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.feedback().redacted()).into_response()
}

/// `PUT feedback`: replaces the settings; an omitted field takes its default (no secret), and a
/// secret of `"***"` keeps the one in force. Answers like `GET`.
async fn put_feedback(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<EmailFeedback>(&body).and_then(|f| f.validate().map(|()| f)) {
        Ok(feedback) => {
            let now = shared.put_feedback(feedback);
            // `Debug` hides the secrets and the addresses.
            tracing::info!(feedback = ?now, "smtp mock feedback changed");
            Json(now.redacted()).into_response()
        }
        Err(reason) => bad_request(reason),
    }
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.reset();
    tracing::info!("smtp mock reset");
    StatusCode::NO_CONTENT
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
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": "invalid_request", "message": reason })),
    )
        .into_response()
}
