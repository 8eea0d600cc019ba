//! The endpoint of an HTTP channel (`channels.<id>.endpoint`), shared by the HTTP JSON family
//! (wink, elk, eissd: the base URL) and the CRM family (the SOAP service URL).

use std::path::PathBuf;

use clm_connectors::json_http::Auth;
use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// An HTTP channel's endpoint: URL, auth and TLS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Base URL, e.g. `https://wink.example/api`; `/v1/notifications` (wink), `/v1/messages`
    /// (elk) or `/v1/offers` (eissd) is appended. A CRM channel's is the service URL itself.
    pub url: String,
    /// How the hub authenticates (the connectors' own type, one for every family).
    #[serde(default)]
    pub auth: Option<Auth>,
    /// PEM file of CA certificates trusted for this endpoint (besides the public roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl EndpointConfig {
    /// The connector's endpoint: this one, or (sandbox) the bundled mock's URL without auth.
    pub fn connector_endpoint(
        this: Option<&EndpointConfig>,
        sandbox_url: Option<String>,
        policy: &super::PolicyConfig,
        key: &str,
    ) -> anyhow::Result<clm_connectors::json_http::Endpoint> {
        use clm_connectors::json_http::{Endpoint, TlsFiles};
        let connect_timeout = connect_timeout(policy.timeout_ms);
        let pool_size = policy.concurrency as usize;
        if let Some(url) = sandbox_url {
            return Ok(Endpoint {
                base_url: url,
                auth: Auth::None,
                tls: TlsFiles::default(),
                connect_timeout,
                pool_size,
            });
        }
        let e = this.ok_or_else(|| anyhow::anyhow!("{key} is required"))?;
        Ok(Endpoint {
            base_url: e.url.clone(),
            auth: e.auth.clone().unwrap_or(Auth::None),
            tls: TlsFiles {
                ca_file: e.ca_file.clone(),
                client_cert_file: e.client_cert_file.clone(),
                client_key_file: e.client_key_file.clone(),
            },
            connect_timeout,
            pool_size,
        })
    }

    /// `ws_security`: whether this family may use WS-Security (the SOAP channels).
    pub fn validate(
        &self,
        key: &dyn Fn(&str) -> String,
        ws_security: bool,
    ) -> Result<(), ConfigError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(invalid(
                key("endpoint.url"),
                "must be an http:// or https:// URL",
            ));
        }
        let tls_files = self.ca_file.is_some() || self.client_cert_file.is_some();
        if tls_files && self.url.starts_with("http://") {
            return Err(invalid(
                key("endpoint.url"),
                "is http://: the TLS files would go unused; use https://",
            ));
        }
        // Credentials in clear only to this machine (a local relay or sidecar).
        if self.auth.is_some() && self.url.starts_with("http://") && !is_loopback_url(&self.url) {
            return Err(invalid(
                key("endpoint.url"),
                "is http:// to another host: the auth would travel in clear; use https://",
            ));
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(invalid(
                key("endpoint.client_key_file"),
                "client_cert_file and client_key_file go together",
            ));
        }
        for (k, f) in [
            ("endpoint.ca_file", &self.ca_file),
            ("endpoint.client_cert_file", &self.client_cert_file),
            ("endpoint.client_key_file", &self.client_key_file),
        ] {
            if let Some(path) = f
                && !path.is_file()
            {
                return Err(invalid(
                    key(k),
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        let empty = |v: &str| v.trim().is_empty();
        match &self.auth {
            Some(Auth::WsSecurity { .. }) if !ws_security => Err(invalid(
                key("endpoint.auth"),
                "ws_security is for the SOAP channels (sap_crm, amdocs, crm_b2c)",
            )),
            Some(Auth::Bearer { token }) if empty(token) => {
                Err(invalid(key("endpoint.auth.token"), "must not be empty"))
            }
            Some(Auth::Basic { username, .. } | Auth::WsSecurity { username, .. })
                if empty(username) =>
            {
                Err(invalid(key("endpoint.auth.username"), "must not be empty"))
            }
            Some(Auth::ApiKey { header, value })
                if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err()
                    || empty(value) =>
            {
                Err(invalid(
                    key("endpoint.auth"),
                    "api_key needs a valid header name and a non-empty value",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Below the attempt timeout, so an unreachable channel is a connect error (retry), not an
/// attempt timeout (unknown).
pub fn connect_timeout(attempt_timeout_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis((attempt_timeout_ms / 2).clamp(1, 5_000))
}

/// `http://127.0.0.1…`, `http://[::1]…`, `http://localhost…`.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
