//! The control API under `/control/sap_crm/` or `/control/crm_esb/`: the bundles received, the
//! counters, faults (rejection rules included) and callback settings (changeable mid-run), and a
//! reset.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::state::Shared;
use super::{CrmCallbacks, CrmFaults, CrmKind};

/// Bundles `GET received` returns without a `limit`.
const DEFAULT_LIMIT: usize = 100;

pub(crate) fn routes(kind: CrmKind) -> Router<Arc<Shared>> {
    let path = |leaf: &str| format!("/control/{kind}/{leaf}");
    Router::new()
        .route(&path("received"), get(received))
        .route(&path("stats"), get(stats))
        .route(&path("faults"), get(faults).put(put_faults))
        .route(&path("callbacks"), get(callbacks).put(put_callbacks))
        .route(&path("reset"), post(reset))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// `GET received[?limit=N]`: the newest bundles (100 by default), oldest first.
async fn received(State(shared): State<Arc<Shared>>, Query(q): Query<Limit>) -> Response {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    Json(shared.memory.bundles(Some(limit))).into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.stats()).into_response()
}

async fn faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.faults()).into_response()
}

async fn put_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let kind = shared.kind;
    let checked = parse::<CrmFaults>(&body)
        .and_then(|f| f.validate().map(|()| f))
        .and_then(|f| {
            if kind == CrmKind::SapCrm && !f.target_faults.is_empty() {
                Err("target_faults are for the ESB only".to_owned())
            } else {
                Ok(f)
            }
        });
    match checked {
        Ok(faults) => {
            // `Debug` counts the customer ids of the rejection rules, never shows them.
            tracing::info!(%kind, ?faults, "CRM mock faults changed");
            shared.set_faults(faults);
            Json(shared.faults()).into_response()
        }
        Err(reason) => bad_request(reason),
    }
}

/// `GET callbacks`: the settings, the password shown as `"***"`: the control API never hands out
/// a secret.
async fn callbacks(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.callbacks().redacted()).into_response()
}

/// `PUT callbacks`: replaces the settings; an omitted field takes its default (no auth), and a
/// password of `"***"` keeps the one in force. Answers like `GET`.
async fn put_callbacks(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let kind = shared.kind;
    match parse::<CrmCallbacks>(&body).and_then(|c| c.validate().map(|()| c)) {
        Ok(callbacks) => {
            let now = shared.put_callbacks(callbacks);
            // `Debug` hides the password.
            tracing::info!(%kind, callbacks = ?now, "CRM mock callbacks changed");
            Json(now.redacted()).into_response()
        }
        Err(reason) => bad_request(reason),
    }
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.reset();
    tracing::info!(kind = %shared.kind, "CRM mock reset");
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
