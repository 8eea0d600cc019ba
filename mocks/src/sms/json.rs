//! The JSON dialect: `POST /api/sms` with a `JsonSendRequest`, answered with a
//! `JsonSendResponse` or a `JsonError`; one `JsonDlr` per message POSTed to `dlr_url`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use clm_contracts::sms::segment;
use clm_contracts::sms::wire::{JsonDlr, JsonError, JsonSendRequest, JsonSendResponse};

use super::dlr::{DlrJob, DlrOutcome};
use super::kannel::status_code;
use super::record::{Dialect, ReceivedSms};
use super::state::{Shared, Verdict};

/// `POST /api/sms`.
pub(crate) async fn send(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request = serde_json::from_slice::<JsonSendRequest>(&body);
    let decision = shared.decide(None);
    let verdict = Verdict::new(decision.outcome, || match &request {
        Err(error) => Err((400, format!("invalid JSON: {error}").into())),
        Ok(r) if r.to.trim().is_empty() => Err((400, Cow::Borrowed("missing receiver number"))),
        Ok(r) if r.text.is_empty() => Err((400, Cow::Borrowed("empty text"))),
        Ok(_) => Ok(()),
    });

    let mut record = ReceivedSms {
        at: Utc::now(),
        dialect: Dialect::Json,
        status: verdict.status(200),
        ..ReceivedSms::default()
    };
    if let Ok(r) = request {
        let segmentation = segment(&r.text);
        record.coding = segmentation.coding;
        record.parts = u32::try_from(segmentation.parts).unwrap_or(u32::MAX);
        record.from = r.from;
        record.to = r.to;
        record.text = r.text;
        record.client_ref = Some(r.client_ref).filter(|c| !c.is_empty());
        record.validity_minutes = r.validity_minutes;
        record.dlr_url = r.dlr_url;
    }

    if let Verdict::Hold = verdict {
        shared.recorder.record(record);
        shared.hold().await;
        return error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable");
    }
    shared.pause(decision.latency).await;
    let response = match verdict {
        Verdict::Accept => {
            let message_id = super::new_message_id();
            record.message_id = Some(message_id.clone());
            if let (Some(url), Some(outcome)) = (&record.dlr_url, decision.dlr.draw()) {
                let report = JsonDlr {
                    message_id: message_id.clone(),
                    client_ref: record.client_ref.clone(),
                    status: match outcome {
                        DlrOutcome::Delivered => "delivered",
                        DlrOutcome::Undelivered => "undelivered",
                    }
                    .to_owned(),
                    error_code: (outcome == DlrOutcome::Undelivered).then(|| "001".to_owned()),
                    done_at: Some(Utc::now()),
                };
                let job = DlrJob::Json {
                    url: url.clone(),
                    report,
                };
                shared.dlr.spawn(
                    Duration::from_millis(decision.dlr.delay_ms),
                    Duration::from_millis(decision.dlr.retry_for_ms),
                    job,
                );
            }
            let parts = record.parts;
            (StatusCode::OK, Json(JsonSendResponse { message_id, parts })).into_response()
        }
        Verdict::Reject(status, reason) => error(status_code(status), &reason),
        Verdict::Throttle(secs) => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "throttled, retry later");
            if let Ok(value) = secs.to_string().parse() {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
            response
        }
        Verdict::Fail(status) => {
            let code = status_code(status);
            let reason = code
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase();
            error(code, &reason)
        }
        Verdict::Hold => error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable"),
    };
    shared.recorder.record(record);
    response
}

fn error(status: StatusCode, reason: &str) -> Response {
    let body = JsonError {
        error: reason.to_owned(),
    };
    (status, Json(body)).into_response()
}
