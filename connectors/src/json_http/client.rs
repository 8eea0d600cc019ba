//! The HTTP client of one channel: TLS roots and client identity from PEM files, and the auth
//! header, all checked once when the connector is built.
//!
//! Trusted server roots: the operating system's trust store (read by `rustls-platform-verifier`
//! through `rustls-native-certs`: `/etc/ssl/certs` and friends, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`), plus every certificate in `ca_file` when it is set. Public CAs keep working
//! next to a private one.

use std::path::Path;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{Auth, BuildError, Endpoint, TlsFiles};

/// Idle connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn build(endpoint: &Endpoint) -> Result<reqwest::Client, BuildError> {
    crate::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(endpoint.connect_timeout)
        .pool_max_idle_per_host(endpoint.pool_size)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        // A redirect of a POST is a configuration error (wrong base_url), not something to follow
        // with the message and the credentials: the 3xx is classified like any other answer.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("clm-channel-hub/", env!("CARGO_PKG_VERSION")));
    let TlsFiles {
        ca_file,
        client_cert_file,
        client_key_file,
    } = &endpoint.tls;
    if let Some(path) = ca_file {
        let roots = load_ca(path)?;
        builder = builder.tls_certs_merge(roots);
    }
    match (client_cert_file, client_key_file) {
        (Some(cert), Some(key)) => builder = builder.identity(load_identity(cert, key)?),
        (None, None) => {}
        (Some(_), None) => {
            return Err(BuildError::Tls(
                "client_cert_file is set without client_key_file: set both or neither".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(BuildError::Tls(
                "client_key_file is set without client_cert_file: set both or neither".into(),
            ));
        }
    }
    builder
        .build()
        .map_err(|e| BuildError::Client(error_chain(&e)))
}

/// The header carrying the credentials, checked once; marked sensitive so that it is never
/// printed by the HTTP stack.
pub(super) fn auth_header(auth: &Auth) -> Result<Option<(HeaderName, HeaderValue)>, BuildError> {
    let bad = |what: &str| {
        BuildError::Auth(format!(
            "{what} is not a valid header value (control or non-ASCII characters)"
        ))
    };
    let (name, mut value) = match auth {
        // WS-Security travels in the SOAP header, not in HTTP.
        Auth::None | Auth::WsSecurity { .. } => return Ok(None),
        Auth::Bearer { token } => {
            if token.trim().is_empty() {
                return Err(BuildError::Auth("bearer token is empty".into()));
            }
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| bad("bearer token"))?;
            (AUTHORIZATION, value)
        }
        Auth::Basic { username, password } => {
            if username.contains(':') {
                // RFC 7617: the user-id cannot contain a colon.
                return Err(BuildError::Auth(
                    "basic username must not contain `:`".into(),
                ));
            }
            let credentials = base64(format!("{username}:{password}").as_bytes());
            let value = HeaderValue::from_str(&format!("Basic {credentials}"))
                .map_err(|_| bad("basic credentials"))?;
            (AUTHORIZATION, value)
        }
        Auth::ApiKey { header, value } => {
            let name = HeaderName::from_bytes(header.trim().as_bytes()).map_err(|_| {
                BuildError::Auth(format!("`{header}` is not a valid HTTP header name"))
            })?;
            if value.trim().is_empty() {
                return Err(BuildError::Auth(format!(
                    "the value of header `{name}` is empty"
                )));
            }
            let value = HeaderValue::from_str(value).map_err(|_| bad("API key"))?;
            (name, value)
        }
    };
    value.set_sensitive(true);
    Ok(Some((name, value)))
}

fn read_file(setting: &'static str, path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|e| file_error(setting, path, format!("cannot read it: {e}")))
}

fn file_error(setting: &'static str, path: &Path, problem: impl Into<String>) -> BuildError {
    BuildError::File {
        setting,
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, BuildError> {
    let pem = read_file(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(setting, path, format!("not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(
            setting,
            path,
            "no certificate in it (expected PEM `BEGIN CERTIFICATE` blocks)",
        ));
    }
    Ok(certs)
}

/// The CA certificates of `ca_file`, each checked to be usable as a trust anchor.
fn load_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, BuildError> {
    const SETTING: &str = "ca_file";
    let certs = certificates(SETTING, path)?;
    let mut store = rustls::RootCertStore::empty();
    let mut roots = Vec::with_capacity(certs.len());
    for (i, der) in certs.into_iter().enumerate() {
        store.add(der.clone()).map_err(|e| {
            file_error(
                SETTING,
                path,
                format!("certificate #{} is not a usable CA certificate: {e}", i + 1),
            )
        })?;
        roots.push(
            reqwest::Certificate::from_der(&der)
                .map_err(|e| file_error(SETTING, path, error_chain(&e)))?,
        );
    }
    Ok(roots)
}

/// The client identity for mutual TLS: the chain of `client_cert_file` (leaf first) and the key of
/// `client_key_file`, which must belong to the leaf.
fn load_identity(cert_path: &Path, key_path: &Path) -> Result<reqwest::Identity, BuildError> {
    const CERT: &str = "client_cert_file";
    const KEY: &str = "client_key_file";
    let chain = certificates(CERT, cert_path)?;
    let key_pem = read_file(KEY, key_path)?;
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(file_error(
                KEY,
                key_path,
                "no private key in it (expected PEM `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` \
                 or `BEGIN EC PRIVATE KEY`)",
            ));
        }
        Err(e) => {
            return Err(file_error(
                KEY,
                key_path,
                format!("not a valid PEM file: {e}"),
            ));
        }
    };
    let provider = rustls::crypto::ring::default_provider();
    if let Err(e) = rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
    {
        let problem = match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the private key does not belong to the first certificate of client_cert_file `{}`",
                cert_path.display()
            ),
            other => format!("the private key is not usable: {other}"),
        };
        return Err(file_error(KEY, key_path, problem));
    }
    // Hand reqwest exactly one key and the chain, re-encoded, whatever else the files held.
    let mut pem = String::new();
    for cert in &chain {
        pem_block(&mut pem, "CERTIFICATE", cert.as_ref());
    }
    let label = match &key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    pem_block(&mut pem, label, key.secret_der());
    reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| {
        BuildError::Tls(format!(
            "client_cert_file / client_key_file: not a usable client identity: {}",
            error_chain(&e)
        ))
    })
}

fn pem_block(out: &mut String, label: &str, der: &[u8]) {
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let encoded = base64(der);
    for line in encoded.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

/// Standard base64 with padding (RFC 4648 §4).
pub(super) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(chunk[0]) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An error and its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn pem_blocks_read_back() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut pem = String::new();
        pem_block(&mut pem, "CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
    }
}
