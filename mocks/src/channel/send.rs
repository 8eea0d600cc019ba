//! `POST {SEND_PATH}`: faults → auth → strict body → accept. Every non-2xx answer carries the
//! contract's `ErrorBody`; 429 and 503 come with `Retry-After`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::Utc;

use super::record::{Class, Record};
use super::state::Shared;
use super::wire;
use crate::faults::Outcome;

pub(crate) async fn send(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let channel = shared.channel;
    let decision = shared.decide(&headers);
    let mut record = Record {
        at: Utc::now(),
        status: 0,
        class: Class::Held,
        message_id: None,
        external_id: None,
        duplicate: false,
        error: None,
        body: body.clone(),
    };

    if decision.outcome == Outcome::Hold {
        record.message_id = loose_message_id(&body);
        shared.recorder.record(record);
        shared.hold().await;
        return wire::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "shutting down",
        );
    }
    shared.pause(decision.latency).await;

    let (status, class, response) = match decision.outcome {
        Outcome::Throttled { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            Class::Throttled,
            with_retry_after(
                wire::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests, retry after the Retry-After interval",
                ),
                retry_after_secs,
            ),
        ),
        Outcome::Error(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let response = wire::error(status, &wire::error_code(status), "injected fault");
            let response = if status == StatusCode::SERVICE_UNAVAILABLE {
                with_retry_after(response, 1)
            } else {
                response
            };
            (status, Class::Error, response)
        }
        // (`Hold` was answered above.)
        Outcome::Normal | Outcome::Hold if !decision.authorized => (
            StatusCode::UNAUTHORIZED,
            Class::Rejected,
            wire::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong credentials",
            ),
        ),
        Outcome::Normal | Outcome::Hold => match wire::parse(channel, &body) {
            Err(reason) => (
                StatusCode::BAD_REQUEST,
                Class::Rejected,
                wire::error(StatusCode::BAD_REQUEST, "invalid_request", reason),
            ),
            Ok(parsed) => {
                let (external_id, accepted_at, duplicate) =
                    shared
                        .recorder
                        .accept(parsed.message_id, parsed.surface, || {
                            wire::new_external_id(channel)
                        });
                tracing::debug!(
                    %channel,
                    message_id = %parsed.message_id,
                    %external_id,
                    duplicate,
                    "send accepted"
                );
                if !duplicate {
                    let target = wire::Target {
                        message_id: parsed.message_id,
                        external_id: Some(external_id.clone()),
                        surface: parsed.surface,
                    };
                    shared.responder.schedule(&decision.responses, target);
                }
                let response = wire::answer(channel, &external_id, accepted_at);
                record.message_id = Some(parsed.message_id);
                record.external_id = Some(external_id);
                record.duplicate = duplicate;
                (StatusCode::OK, Class::Accepted, response)
            }
        },
    };
    if record.message_id.is_none() {
        record.message_id = loose_message_id(&body);
    }
    if class != Class::Accepted {
        record.error = Some(wire::error_code(status));
        tracing::debug!(%channel, message_id = ?record.message_id, status = status.as_u16(), "send refused");
    }
    record.status = status.as_u16();
    record.class = class;
    shared.recorder.record(record);
    response
}

fn loose_message_id(body: &[u8]) -> Option<uuid::Uuid> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .as_ref()
        .and_then(wire::loose_message_id)
}

fn with_retry_after(mut response: Response, secs: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}
