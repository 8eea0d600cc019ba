//! The HTTP API (`/v1`), health, metrics and the ingest routes, as DESIGN.md lists them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clm_contracts::ChannelId;
use clm_contracts::api::{
    CancelResponse, ChannelLimits, ChannelView, ChannelsResponse, ErrorBody, MAX_BATCH,
    SubmitResponse,
};
use serde::Deserialize;
use tracing::{error, info, warn};

use crate::state::Shared;

/// Errors the API answers with; they say what was wrong and hide internals.
pub enum ApiError {
    BadRequest(String),
    NotFound(String),
    TooLarge(String),
    Unauthorized,
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            ),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        };
        let mut r = (status, Json(ErrorBody { error: msg })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        r
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        let error_id = crate::batcher::error_id();
        error!(%error_id, error = %e, "store error in API");
        ApiError::Unavailable(format!(
            "store unavailable; try again (error id {error_id})"
        ))
    }
}

/// 1000 communications of a few KiB each, with room.
const MAX_BODY: usize = 16 * 1024 * 1024;

pub fn router(shared: Arc<Shared>) -> Router {
    let v1 = Router::new()
        .route("/communications", post(submit))
        .route("/communications/{id}", get(view))
        .route("/campaigns/{id}/cancel", post(cancel))
        .route("/channels", get(channels))
        .route("/channels/{id}/pause", post(pause))
        .route("/channels/{id}/resume", post(resume))
        .route("/events", get(events))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&shared), bearer));
    Router::new()
        .nest("/v1", v1)
        .route(
            "/ingest/{channel}",
            get(crate::ingest::ingest).post(crate::ingest::ingest),
        )
        .route(
            "/soap/{service}",
            get(crate::soap::get).post(crate::soap::post),
        )
        .route("/t/o/{token}", get(crate::email::open))
        .route("/t/c/{token}", get(crate::email::click))
        .route(
            "/u/{token}",
            get(crate::email::unsubscribe_page).post(crate::email::unsubscribe),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

async fn bearer(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some(token) = &shared.config.server.api_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0_u8, |a, (x, y)| a | (x ^ y))
                    == 0
        });
        if !ok {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// `POST /v1/communications`: one object, or `{"communications": [...]}` with up to 1000.
async fn submit(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("body is not JSON: {e}")))?;
    let items = match value {
        serde_json::Value::Object(mut map) if map.contains_key("communications") => {
            match map.remove("communications") {
                Some(serde_json::Value::Array(items)) => {
                    if items.len() > MAX_BATCH {
                        return Err(ApiError::TooLarge(format!(
                            "communications: {} items; at most {MAX_BATCH} per request",
                            items.len()
                        )));
                    }
                    items
                }
                _ => {
                    return Err(ApiError::BadRequest(
                        "communications: must be an array".into(),
                    ));
                }
            }
        }
        v @ serde_json::Value::Object(_) => vec![v],
        _ => {
            return Err(ApiError::BadRequest(
                "body must be a communication object or {\"communications\": [...]}".into(),
            ));
        }
    };
    let results = crate::intake::submit(&shared, items)
        .await
        .map_err(|e| ApiError::Unavailable(format!("could not store: {e}")))?;
    Ok((StatusCode::ACCEPTED, Json(SubmitResponse { results })).into_response())
}

async fn view(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::BadRequest(format!("`{id}` is not a UUID")))?;
    match shared.store.view(id).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(ApiError::NotFound(format!("no communication {id}"))),
    }
}

async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id.trim().is_empty() {
        return Err(ApiError::BadRequest("campaign id is empty".into()));
    }
    // In memory first, so this instance's dispatchers stop at once; then the store, which
    // remembers it for every instance. If the store fails, the cancel did not happen.
    shared.mark_cancelled([id.clone()]);
    let cancelled = match shared.store.cancel_campaign(&id, chrono::Utc::now()).await {
        Ok(n) => n,
        Err(e) => {
            shared.unmark_cancelled(&id);
            return Err(e.into());
        }
    };
    shared.outbox_wake.notify_one();
    info!(campaign = %id, cancelled, "campaign cancelled");
    Ok(Json(CancelResponse {
        campaign_id: id,
        cancelled,
    })
    .into_response())
}

fn channel_id(id: &str) -> Result<ChannelId, ApiError> {
    id.parse()
        .map_err(|e: clm_contracts::channel::UnknownChannel| ApiError::NotFound(e.to_string()))
}

async fn channels(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let depth = shared.store.depth_by_channel().await?;
    let mut out = Vec::new();
    for id in ChannelId::ALL {
        let cfg = shared.config.channel(id);
        let p = &cfg.policy;
        let d = depth
            .iter()
            .find(|(c, _)| *c == id)
            .map(|(_, d)| *d)
            .unwrap_or_default();
        let limits = ChannelLimits {
            rate: p.rate,
            burst: p.burst,
            concurrency: p.concurrency,
            timeout_ms: p.timeout_ms,
            max_attempts: p.max_attempts,
        };
        let view = match shared.channels.get(&id) {
            Some(ch) => ChannelView {
                id,
                state: ch.state().into(),
                enabled: true,
                paused: ch.is_paused(),
                queue_depth: d.pending,
                in_flight: ch.in_flight.load(Ordering::Relaxed),
                limits,
                breaker: ch
                    .breaker
                    .state(tokio::time::Instant::now())
                    .as_str()
                    .into(),
                throttled_until: ch.throttled_for().map(|w| {
                    chrono::Utc::now() + chrono::Duration::from_std(w).unwrap_or_default()
                }),
                counters: ch.counters.view(),
            },
            None => ChannelView {
                id,
                state: "disabled".into(),
                enabled: false,
                paused: false,
                queue_depth: d.pending,
                in_flight: 0,
                limits,
                breaker: "closed".into(),
                throttled_until: None,
                counters: Default::default(),
            },
        };
        out.push(view);
    }
    Ok(Json(ChannelsResponse { channels: out }).into_response())
}

async fn set_paused(shared: &Shared, id: &str, paused: bool) -> Result<Response, ApiError> {
    let id = channel_id(id)?;
    let Some(ch) = shared.channels.get(&id) else {
        return Err(ApiError::NotFound(format!(
            "channel `{id}` is not enabled on this hub"
        )));
    };
    shared
        .store
        .set_paused(id, paused, chrono::Utc::now())
        .await?;
    ch.set_paused(paused);
    // Other instances see it within a second through Redis (within two through the store).
    if let Err(e) = shared.coord.set_paused(id, paused).await {
        tracing::warn!(channel = %id, error = %e, "pause flag not mirrored to Redis; the store carries it");
    }
    info!(channel = %id, paused, "channel pause changed");
    Ok(Json(serde_json::json!({"channel": id, "paused": paused})).into_response())
}

async fn pause(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(&shared, &id, true).await
}

async fn resume(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(&shared, &id, false).await
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    1000
}

/// `GET /v1/events?after=SEQ&limit=N`: recent events published by this instance (the
/// in-process queue of the embedded default).
async fn events(State(shared): State<Arc<Shared>>, Query(q): Query<EventsQuery>) -> Response {
    let events = shared.events.recent_after(q.after, q.limit.min(10_000));
    Json(serde_json::json!({ "events": events })).into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let store = shared.store.ping().await;
    // Unauthenticated: states only; the errors themselves go to the log.
    let store_state = match &store {
        Ok(()) => "ok".to_owned(),
        Err(e) => {
            let error_id = crate::batcher::error_id();
            warn!(%error_id, error = %e, "readiness: store unavailable");
            format!("unavailable (error id {error_id})")
        }
    };
    let mut body = serde_json::json!({
        "store": store_state,
        "backend": shared.store.backend(),
    });
    let mut ready = store.is_ok();
    if shared.config.queue.is_amqp() {
        let b = &shared.broker;
        let up = |v: bool| if v { "connected" } else { "disconnected" };
        body["broker"] = serde_json::json!({
            "intake": up(b.intake_connected()),
            "events": up(b.publisher_connected()),
        });
        ready &= b.intake_connected();
    }
    let (coord, coord_error) = shared.coord.readiness();
    // Degraded coordination still sends (at the conservative local share), so it stays ready.
    if let Some(e) = coord_error {
        tracing::debug!(error = %e, "readiness: coordination degraded");
    }
    body["coordination"] = serde_json::json!({"state": coord});
    body["ready"] = serde_json::json!(ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let depth = shared.store.depth_by_channel().await.unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&shared, &depth),
    )
        .into_response()
}
