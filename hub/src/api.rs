//! The HTTP API (`/v1`), health, metrics and the ingest routes, as DESIGN.md lists them.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clm_contracts::ChannelId;
use clm_contracts::api::{
    CancelResponse, ChannelLimits, ChannelView, ChannelsResponse, ErrorBody, MAX_BATCH,
    SubmitResponse,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;
use tracing::{debug, error, info, warn};

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

// The HTTP server's limits, in the order a request meets them (DESIGN.md, "Policy stack"):
//
// 1. hyper, per connection: the request line and headers must arrive within
//    [`HEADER_READ_TIMEOUT`] (slowloris), counted from when the connection is ready for a request,
//    so an idle keep-alive connection is closed after that long too.
// 2. Headers named in [`SENSITIVE_HEADERS`] are marked sensitive, so no `Debug` of a request
//    or response (a trace, a panic message) prints the credentials they carry.
//    Then tower-http's trace layer: a span per request with the method and the path only (a
//    query may carry an ingest token, and a Kannel report's carries the recipient), the answer's
//    status and latency at debug level (server errors too: `/readyz` answers 503 by design).
// 3. [`REQUEST_TIMEOUT`] around everything after: reading the body and the handler.
// 4. The route's body limit: a `Content-Length` over it is answered 413 before anything else
//    runs (authentication included), and a body without one is cut off at the limit as it is
//    read. The limits are per route group, each sized to what its callers legitimately send.
// 5. Authentication (the `/v1` bearer check, the ingest token or signature, SOAP callers), then
//    the handler.

/// `/v1`: 1000 communications of a few KiB each, with room.
const API_MAX_BODY: usize = 16 * 1024 * 1024;

/// `/ingest/{channel}`: one delivery report or webhook, a few hundred bytes; an e-mail relay's
/// event a few KiB. A MiB is far more than any of them and still cheap to hold.
const INGEST_MAX_BODY: usize = 1024 * 1024;

/// What `/soap/{service}` accepts beyond `soap.max_bytes` before refusing at the door. Between
/// the two the handler reads up to `soap.max_bytes` and answers a SOAP fault naming the limit
/// (what a CRM's SOAP stack understands); beyond it the caller gets a bare 413 unread.
pub(crate) const SOAP_BODY_SLACK: usize = 64 * 1024;

/// Everything else (`/t`, `/u`, health, metrics): GETs and an unsubscribe form of a few fields.
pub(crate) const SMALL_MAX_BODY: usize = 16 * 1024;

/// The request line and headers must arrive within this long (slowloris); also how long an
/// idle keep-alive connection is kept.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a request may take from its headers to the answer (its body and the handler). Answered
/// 503, like a store that did not answer in time, so that channels and API clients retry.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers carrying credentials: the API's bearer token, HTTP Basic of SOAP callers, the ingest
/// token and signature, cookies.
const SENSITIVE_HEADERS: [HeaderName; 6] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::SET_COOKIE,
    HeaderName::from_static("x-clm-token"),
    HeaderName::from_static("x-clm-signature"),
];

/// A route group's body limit: tower-http's, with axum's own default (2 MiB on `Bytes`) off so
/// that the group's limit is the only one.
pub(crate) fn body_limit(router: Router<Arc<Shared>>, max: usize) -> Router<Arc<Shared>> {
    router
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(max))
}

pub fn router(shared: Arc<Shared>) -> Router {
    // `layer` after `route_layer`: the body limit runs before the bearer check.
    let v1 = Router::new()
        .route("/communications", post(submit).get(search))
        .route("/communications/{id}", get(view))
        .route("/campaigns/{id}/cancel", post(cancel))
        .route("/channels", get(channels))
        .route("/channels/{id}/pause", post(pause))
        .route("/channels/{id}/resume", post(resume))
        .route("/events", get(events))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&shared), bearer));
    let ingest = Router::new().route(
        "/ingest/{channel}",
        get(crate::ingest::ingest).post(crate::ingest::ingest),
    );
    let small = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    let mut app = Router::new()
        .nest("/v1", body_limit(v1, API_MAX_BODY))
        .merge(body_limit(ingest, INGEST_MAX_BODY))
        .merge(body_limit(small, SMALL_MAX_BODY));
    // The families' own routes (`/soap/…`, `/t/…`, `/u/…`), each group with its body limit.
    for plugin in &shared.plugins {
        if let Some(routes) = Arc::clone(plugin).routes(&shared.config) {
            app = app.merge(routes);
        }
    }
    app.layer(TimeoutLayer::with_status_code(
        StatusCode::SERVICE_UNAVAILABLE,
        REQUEST_TIMEOUT,
    ))
    .layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &Request| {
                tracing::debug_span!("http", method = %req.method(), path = %req.uri().path())
            })
            .on_request(())
            .on_response(DefaultOnResponse::new().level(Level::DEBUG))
            .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
    )
    .layer(SetSensitiveHeadersLayer::new(SENSITIVE_HEADERS))
    .with_state(shared)
}

/// Serves `app` on `listener` until `stop` is cancelled, then stops taking connections and waits
/// for the open ones to finish their requests (idle ones close at once).
///
/// Not `axum::serve`: it sets no header-read timeout, and a client that opens connections and
/// sends its headers a byte at a time (or never) would hold each one for ever. This is the same
/// loop on hyper's HTTP/1 connection with [`HEADER_READ_TIMEOUT`].
pub async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) -> io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // Every connection task holds a receiver; the loop waits for the last one to be dropped.
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let stop = stop.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            // A client that stalled past the header timeout or went away: its own business.
            if let Err(e) = ended {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}

/// What `axum::serve` does with an accept error: the peer's own failures are skipped; anything
/// else (out of file descriptors) is logged and the loop pauses a second so as not to spin.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    error!(error = %e, "accept failed; pausing a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
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

/// `GET /v1/communications` query: every filter given must match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    campaign_id: Option<String>,
    customer_id: Option<String>,
    /// Typed in full, matched exactly (case and surrounding spaces aside).
    recipient: Option<String>,
    channel: Option<String>,
    status: Option<String>,
    /// RFC 3339: received at or after.
    from: Option<String>,
    /// RFC 3339: received before.
    to: Option<String>,
    /// The `next` of the previous page.
    after: Option<String>,
    limit: Option<u32>,
}

/// Most items a search page holds.
const SEARCH_MAX_LIMIT: u32 = 1000;
const SEARCH_DEFAULT_LIMIT: u32 = 100;

/// A page cursor: `<received_at ms>.<id>` of the page's last item.
fn cursor(at: chrono::DateTime<chrono::Utc>, id: uuid::Uuid) -> String {
    format!("{}.{}", crate::store::ms(at), id.simple())
}

fn parse_cursor(v: &str) -> Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)> {
    let (at, id) = v.split_once('.')?;
    Some((
        crate::store::from_ms(at.parse().ok()?),
        uuid::Uuid::parse_str(id).ok()?,
    ))
}

fn parse_time(name: &str, v: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| ApiError::BadRequest(format!("{name}: not an RFC 3339 time ({e})")))
}

impl SearchParams {
    fn query(self) -> Result<crate::store::SearchQuery, ApiError> {
        let non_empty = |name: &str, v: Option<String>| match v {
            Some(v) if v.trim().is_empty() => {
                Err(ApiError::BadRequest(format!("{name}: must not be empty")))
            }
            v => Ok(v),
        };
        let limit = self.limit.unwrap_or(SEARCH_DEFAULT_LIMIT);
        if limit == 0 || limit > SEARCH_MAX_LIMIT {
            return Err(ApiError::BadRequest(format!(
                "limit: between 1 and {SEARCH_MAX_LIMIT}"
            )));
        }
        Ok(crate::store::SearchQuery {
            campaign_id: non_empty("campaign_id", self.campaign_id)?,
            customer_id: non_empty("customer_id", self.customer_id)?,
            recipient: non_empty("recipient", self.recipient)?,
            channel: self
                .channel
                .map(|c| {
                    c.parse::<ChannelId>()
                        .map_err(|_| ApiError::BadRequest(format!("channel: no channel `{c}`")))
                })
                .transpose()?,
            status: self
                .status
                .map(|v| {
                    v.parse::<clm_contracts::Status>()
                        .map_err(|_| ApiError::BadRequest(format!("status: no status `{v}`")))
                })
                .transpose()?,
            from: self.from.map(|v| parse_time("from", &v)).transpose()?,
            to: self.to.map(|v| parse_time("to", &v)).transpose()?,
            before: self
                .after
                .map(|v| {
                    parse_cursor(&v).ok_or_else(|| {
                        ApiError::BadRequest("after: not a cursor this hub gave out".into())
                    })
                })
                .transpose()?,
            limit,
        })
    }
}

/// `GET /v1/communications?…`: a page of communications, newest first, recipients masked.
async fn search(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut q = params.query()?;
    let limit = q.limit;
    // One more than asked tells whether a next page exists.
    q.limit = limit + 1;
    let mut rows = shared.store.search(&q).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = more
        .then(|| rows.last().map(|r| cursor(r.received_at, r.id)))
        .flatten();
    let items = rows
        .into_iter()
        .map(|r| clm_contracts::api::CommunicationSummary {
            id: r.id,
            channel: r.channel,
            campaign_id: r.campaign_id,
            customer_id: r.customer_id,
            recipient: clm_contracts::communication::mask_recipient(&r.recipient),
            status: r.status,
            reason: r.reason,
            attempts: r.attempts,
            parts: r.parts,
            received_at: r.received_at,
            updated_at: r.updated_at,
        })
        .collect();
    Ok(Json(clm_contracts::api::SearchPage { items, next }).into_response())
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
    let depth = shared.depth.get(&shared.store).await?;
    let mut out = Vec::new();
    for id in ChannelId::ALL {
        let cfg = shared.config.channel(id);
        let p = cfg.policy();
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
    // Cached: a scrape costs no count of the store's waiting rows (see `DepthCache`).
    let depth = shared.depth.get(&shared.store).await.unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&shared, &depth),
    )
        .into_response()
}
