//! The DKIM signing key and signer settings (RFC 6376) from [`super::DkimConfig`].
//!
//! lettre's signer reads RSA keys as PKCS#1 PEM and Ed25519 keys as the base64 of the 32-byte
//! seed; operators have PEM files from `openssl genpkey` (PKCS#8) or `opendkim-genkey` (PKCS#1).
//! So PKCS#8 RSA keys are re-encoded to PKCS#1 and Ed25519 seeds are taken out of their PKCS#8
//! structure (RFC 8410). No error message quotes any part of a key.

use base64::Engine as _;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig as LettreDkim, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;

use super::DkimConfig;

/// Headers covered by the signature (`h=`). One that a message lacks is signed as absent
/// (RFC 6376 §5.4), so nobody can add a `List-Unsubscribe` to a message that had none.
pub(crate) const SIGNED_HEADERS: [&str; 7] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits (and SHOULD use 2048).
const MIN_RSA_BITS: usize = 1024;

/// The signer for `config`, relaxed/relaxed canonicalization (RFC 6376 §3.4.2, §3.4.4): it
/// survives the re-folding and whitespace changes relays make.
pub(crate) fn signer(config: &DkimConfig) -> Result<LettreDkim, String> {
    let domain = config.domain.trim();
    let selector = config.selector.trim();
    if domain.is_empty()
        || !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
    {
        return Err("domain must be an ASCII domain name (d=)".into());
    }
    if selector.is_empty()
        || !selector
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err("selector must be an ASCII DNS label (s=)".into());
    }
    let key = signing_key(&config.private_key_pem)?;
    Ok(LettreDkim::new(
        selector.to_owned(),
        domain.to_owned(),
        key,
        SIGNED_HEADERS
            .iter()
            .map(|h| HeaderName::new_from_ascii_str(h))
            .collect(),
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    ))
}

/// DER prefix of an Ed25519 PKCS#8 key (RFC 8410 §7): `OneAsymmetricKey { version 0 or 1,
/// AlgorithmIdentifier { 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }`.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
const ED25519_SEED_PREFIX: [u8; 4] = [0x04, 0x22, 0x04, 0x20];

fn signing_key(pem: &str) -> Result<DkimSigningKey, String> {
    let pem = pem.trim();
    let label = pem
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.split_once("-----"))
        .map(|(label, _)| label)
        .ok_or("private_key_pem is not PEM (no -----BEGIN … ----- line)")?;
    match label {
        "RSA PRIVATE KEY" => {
            let key = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                .map_err(|_| "private_key_pem: unreadable PKCS#1 RSA key".to_owned())?;
            rsa_key(&key)
        }
        "PRIVATE KEY" => {
            let der = pem_body(pem)?;
            if let Some(at) = find(&der, &ED25519_OID) {
                let rest = &der[at + ED25519_OID.len()..];
                let seed = find(rest, &ED25519_SEED_PREFIX)
                    .and_then(|i| rest.get(i + 4..i + 4 + 32))
                    .ok_or("private_key_pem: unreadable PKCS#8 Ed25519 key")?;
                let b64 = base64::engine::general_purpose::STANDARD.encode(seed);
                return DkimSigningKey::new(&b64, DkimSigningAlgorithm::Ed25519)
                    .map_err(|_| "private_key_pem: unusable Ed25519 key".to_owned());
            }
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|_| {
                "private_key_pem: a PKCS#8 key that is neither RSA nor Ed25519, or unreadable"
                    .to_owned()
            })?;
            rsa_key(&key)
        }
        "ENCRYPTED PRIVATE KEY" => {
            Err("private_key_pem is encrypted; give the key without a passphrase".into())
        }
        other => Err(format!(
            "private_key_pem: `{other}` is not a supported key (RSA PKCS#1 or PKCS#8, Ed25519 PKCS#8)"
        )),
    }
}

fn rsa_key(key: &rsa::RsaPrivateKey) -> Result<DkimSigningKey, String> {
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "the RSA key has {bits} bits; RFC 8301 requires {MIN_RSA_BITS} at least (2048 recommended)"
        ));
    }
    let pkcs1 = key
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .map_err(|_| "cannot re-encode the RSA key".to_owned())?;
    DkimSigningKey::new(&pkcs1, DkimSigningAlgorithm::Rsa)
        .map_err(|_| "private_key_pem: unusable RSA key".to_owned())
}

fn pem_body(pem: &str) -> Result<Vec<u8>, String> {
    let b64: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----") && !l.contains(':'))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "private_key_pem: the PEM body is not base64".to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::testutil;

    fn cfg(pem: &str) -> DkimConfig {
        DkimConfig {
            domain: "example.ru".into(),
            selector: "s2025".into(),
            private_key_pem: pem.into(),
        }
    }

    #[test]
    fn rsa_pkcs1_rsa_pkcs8_and_ed25519_keys_are_read() {
        for pem in [
            testutil::RSA_PKCS1_PEM,
            testutil::RSA_PKCS8_PEM,
            testutil::ED25519_PKCS8_PEM,
        ] {
            signer(&cfg(pem)).unwrap();
        }
    }

    #[test]
    fn unusable_keys_are_refused_without_quoting_them() {
        let short = testutil::RSA_512_PEM;
        for (pem, want) in [
            ("not a key", "not PEM"),
            (short, "RFC 8301"),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----",
                "encrypted",
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----",
                "not a supported key",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----",
                "not base64",
            ),
        ] {
            let err = signer(&cfg(pem)).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
            assert!(!err.contains("MII") && !err.contains("AAAA"), "{err}");
        }
        let mut bad = cfg(testutil::RSA_PKCS1_PEM);
        bad.selector = "s 1".into();
        assert!(signer(&bad).unwrap_err().contains("selector"));
        let mut bad = cfg(testutil::RSA_PKCS1_PEM);
        bad.domain = String::new();
        assert!(signer(&bad).unwrap_err().contains("domain"));
    }
}
