//! Ingest: responses coming back from channels (`/ingest/{channel}`: SMS delivery reports, Wink and
//! ELK webhooks, e-mail events), authenticated here, parsed by the channel family's plug-in
//! ([`crate::channels::Plugin::parse_report`], with the parsers of `clm-connectors`, strictly
//! against the contract), correlated, deduplicated and recorded through the store (group-committed), which
//! advances the status and writes the events. Answers: 200 recorded or duplicate, 400 malformed,
//! 401 unauthenticated, 404 unknown communication, 503 store unavailable (retry later).
//!
//! Authentication, per channel (`channels.<id>.ingest`): a shared token (`?token=`, header
//! `X-CLM-Token` or `Authorization: Bearer`; Kannel's `dlr-url` can only carry a query token) or an HMAC-SHA256 signature
//! (`X-CLM-Signature: sha256=<hex>`) of the body, or of the raw query string for a GET. With
//! neither configured the route is open, which start-up allows on loopback only.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clm_contracts::ChannelId;
use clm_contracts::api::ErrorBody;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

use crate::channels::ReportRequest;
use crate::config::IngestAuthConfig;
use crate::state::Shared;
use crate::store::{IncomingResponse, ResponseOutcome};

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: msg.into() })).into_response()
}

/// The user and password of `Authorization: Basic …`, if well-formed (RFC 7617).
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let b64 = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from response times.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn query_param(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The `token` parameter of a request: in the query, or in a form body (Kannel's POSTed reports
/// carry the `dlr-url`'s query there).
fn token_param(query: &str, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    query_param(query, "token").or_else(|| {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            form_urlencoded::parse(body)
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        } else {
            None
        }
    })
}

/// `Ok` when the caller proved itself, or when nothing is configured.
fn authenticate(
    auth: &IngestAuthConfig,
    headers: &HeaderMap,
    token_param: Option<String>,
    signed: &[u8],
) -> Result<(), &'static str> {
    if auth.is_open() {
        return Ok(());
    }
    if let (Some(user), Some(password)) = (&auth.basic_username, &auth.basic_password)
        && let Some((u, p)) = basic_credentials(headers)
        && same(u.as_bytes(), user.as_bytes()) & same(p.as_bytes(), password.as_bytes())
    {
        return Ok(());
    }
    if let Some(token) = &auth.token {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
        let given = headers
            .get("x-clm-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or(bearer)
            .or(token_param);
        if given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            return Ok(());
        }
    }
    if let Some(secret) = &auth.hmac_secret
        && let Some(sig) = headers.get("x-clm-signature").and_then(|v| v.to_str().ok())
    {
        let hex_sig = sig.strip_prefix("sha256=").unwrap_or(sig);
        if let Ok(given) = hex::decode(hex_sig) {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
            mac.update(signed);
            if mac.verify_slice(&given).is_ok() {
                return Ok(());
            }
        }
    }
    Err("missing or wrong ingest token or signature")
}

/// `GET|POST /ingest/{channel}`.
pub async fn ingest(
    State(shared): State<Arc<Shared>>,
    Path(channel): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(channel) = channel.parse::<ChannelId>() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no ingest route for `{channel}`"),
        );
    };
    // Enabled channels only: the hub built a channel for each.
    let Some(ch) = shared.channels.get(&channel) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("channel `{channel}` is not enabled on this hub"),
        );
    };
    let cfg = shared.config.channel(channel);
    let Some(ingest_auth) = cfg.ingest() else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "channel `{channel}` has no ingest route: its responses come over SOAP or from its DWH table"
            ),
        );
    };
    let query = query.unwrap_or_default();
    let signed: &[u8] = if method == Method::GET {
        query.as_bytes()
    } else {
        &body
    };
    if let Err(msg) = authenticate(
        ingest_auth,
        &headers,
        token_param(&query, &headers, &body),
        signed,
    ) {
        shared
            .metrics
            .ingest_unauthorized
            .fetch_add(1, Ordering::Relaxed);
        return error(StatusCode::UNAUTHORIZED, msg);
    }
    let req = ReportRequest {
        channel,
        method: &method,
        query: &query,
        headers: &headers,
        body: &body,
    };
    if let Some(answer) = ch.plugin.ingest(&shared, &req).await {
        return answer;
    }
    let parsed = ch.plugin.parse_report(&req);
    let report = match parsed {
        Ok(r) => r,
        Err(msg) => {
            shared
                .metrics
                .ingest_malformed
                .fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::BAD_REQUEST, msg);
        }
    };
    let mut incoming = IncomingResponse::from_report(channel, report);
    if let Err(e) = incoming.check() {
        shared
            .metrics
            .ingest_malformed
            .fetch_add(1, Ordering::Relaxed);
        let field = ch.plugin.reported_field(channel, e.field);
        return error(StatusCode::BAD_REQUEST, format!("{field}: {}", e.message));
    }
    let outcome = match shared.ingest.call_each(vec![incoming]).await {
        Ok(mut v) => match v.pop() {
            Some(Ok(o)) => o,
            None => ResponseOutcome::NotFound,
            // The store will never take it: a 4xx, so the gateway stops resending it.
            Some(Err(refused)) => {
                shared
                    .metrics
                    .ingest_malformed
                    .fetch_add(1, Ordering::Relaxed);
                return error(StatusCode::UNPROCESSABLE_ENTITY, refused.to_string());
            }
        },
        Err(e) => {
            // 503 makes a gateway retry the report later: nothing is lost.
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store unavailable: {e}"),
            );
        }
    };
    let m = &shared.metrics;
    match outcome {
        ResponseOutcome::Recorded => {
            m.ingest_recorded.fetch_add(1, Ordering::Relaxed);
            ch.counters.responses.fetch_add(1, Ordering::Relaxed);
            shared.outbox_wake.notify_one();
            (
                StatusCode::OK,
                Json(serde_json::json!({"outcome": "recorded"})),
            )
                .into_response()
        }
        ResponseOutcome::Duplicate => {
            m.ingest_duplicate.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::OK,
                Json(serde_json::json!({"outcome": "duplicate"})),
            )
                .into_response()
        }
        ResponseOutcome::NotFound => {
            m.ingest_unknown.fetch_add(1, Ordering::Relaxed);
            error(
                StatusCode::NOT_FOUND,
                "no communication matches this report",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: Option<&str>, secret: Option<&str>) -> IngestAuthConfig {
        IngestAuthConfig {
            token: token.map(Into::into),
            hmac_secret: secret.map(Into::into),
            ..IngestAuthConfig::default()
        }
    }

    #[test]
    fn tokens_are_checked_from_query_or_header() {
        let a = auth(Some("s3cret"), None);
        let h = HeaderMap::new();
        let q = |query: &str| token_param(query, &HeaderMap::new(), b"");
        assert!(authenticate(&a, &h, q("id=1&token=s3cret"), b"").is_ok());
        assert!(authenticate(&a, &h, q("id=1&token=wrong"), b"").is_err());
        assert!(authenticate(&a, &h, q("id=1"), b"").is_err());
        let mut form = HeaderMap::new();
        form.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let from_body = token_param("", &form, b"id=1&type=1&token=s3cret");
        assert!(authenticate(&a, &form, from_body, b"").is_ok());
        let mut h = HeaderMap::new();
        h.insert("x-clm-token", "s3cret".parse().unwrap());
        assert!(authenticate(&a, &h, None, b"").is_ok());
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authenticate(&a, &h, None, b"").is_ok());
        h.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert!(authenticate(&a, &h, None, b"").is_err());
    }

    #[test]
    fn hmac_signatures_cover_the_body() {
        let a = auth(None, Some("k"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"{\"a\":1}");
        let sig = hex::encode(mac.finalize().into_bytes());
        let mut h = HeaderMap::new();
        h.insert("x-clm-signature", format!("sha256={sig}").parse().unwrap());
        assert!(authenticate(&a, &h, None, b"{\"a\":1}").is_ok());
        assert!(authenticate(&a, &h, None, b"{\"a\":2}").is_err());
    }

    #[test]
    fn basic_credentials_are_checked() {
        use base64::Engine;
        let a = IngestAuthConfig {
            basic_username: Some("relay".into()),
            basic_password: Some("p4ss".into()),
            ..IngestAuthConfig::default()
        };
        let with = |user_pass: &str| {
            let mut h = HeaderMap::new();
            let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
            h.insert(
                header::AUTHORIZATION,
                format!("Basic {b64}").parse().unwrap(),
            );
            h
        };
        assert!(authenticate(&a, &with("relay:p4ss"), None, b"").is_ok());
        assert!(authenticate(&a, &with("relay:wrong"), None, b"").is_err());
        assert!(authenticate(&a, &with("other:p4ss"), None, b"").is_err());
        assert!(authenticate(&a, &HeaderMap::new(), None, b"").is_err());
    }

    #[test]
    fn nothing_configured_means_open() {
        assert!(authenticate(&auth(None, None), &HeaderMap::new(), None, b"").is_ok());
    }
}
