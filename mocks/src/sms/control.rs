//! The control API under `/control/sms/`: what the mock received, its counters, and its faults
//! and delivery-report settings, changeable mid-run.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clm_contracts::sms::wire::JsonError;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::dlr::DlrConfig;
use super::state::Shared;
use crate::faults::Faults;

/// Records `GET received` returns without a `limit`.
const DEFAULT_LIMIT: usize = 1000;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/control/sms/received", get(received))
        .route("/control/sms/stats", get(stats))
        .route("/control/sms/faults", get(faults).put(put_faults))
        .route("/control/sms/dlr", get(dlr).put(put_dlr))
        .route("/control/sms/reset", post(reset))
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
            tracing::info!(?faults, "sms mock faults changed");
            shared.set_faults(faults);
            Json(shared.faults()).into_response()
        }
        Err(reason) => bad_request(reason),
    }
}

async fn dlr(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.dlr_config()).into_response()
}

async fn put_dlr(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<DlrConfig>(&body).and_then(|d| d.validate().map(|()| d)) {
        Ok(dlr) => {
            tracing::info!(?dlr, "sms mock delivery reports changed");
            shared.set_dlr(dlr);
            Json(dlr).into_response()
        }
        Err(reason) => bad_request(reason),
    }
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.reset();
    tracing::info!("sms mock reset");
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

fn bad_request(error: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(JsonError { error })).into_response()
}
