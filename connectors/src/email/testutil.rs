//! Test helpers shared by the unit tests and `tests/smtp_sink.rs` (included there by path):
//! a communication and a config, DKIM test keys, and small independent readers of what was
//! sent: RFC 2047 encoded words, MIME parts, and a DKIM verifier (RFC 6376 relaxed/relaxed,
//! rsa-sha256 and ed25519-sha256 of RFC 8463). Independent of lettre, so they check it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine as _;
use clm_contracts::{ChannelId, Communication, Content};
use sha2::{Digest, Sha256};

use super::{Security, SmtpConfig};

pub const SUBJECT: &str =
    "Ваше персональное предложение: тариф «Максимум» со скидкой 30% — только до 31 декабря";
pub const TEXT: &str =
    "Здравствуйте!\nПодключите тариф «Максимум» со скидкой.\n.\n.. a line with dots\nFrom here on";
pub const HTML: &str =
    "<p>Здравствуйте!</p><p><a href=\"https://example.ru/offer\">Подключить</a></p>";

/// A relay config for `host:port` without TLS, auth or DKIM.
pub fn config(host: &str, port: u16) -> SmtpConfig {
    SmtpConfig {
        host: host.into(),
        port,
        security: Security::Plain,
        auth: None,
        ca_file: None,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        pool_size: 2,
        hello_name: "clm-hub.example.ru".into(),
        from: "CLM <offers@example.ru>".into(),
        message_id_domain: "mail.example.ru".into(),
        dkim: None,
        greylist_delay: Duration::from_secs(300),
    }
}

/// An e-mail communication to `recipient` with a Cyrillic subject, text and HTML.
pub fn comm(recipient: &str) -> Communication {
    Communication {
        id: uuid::Uuid::now_v7(),
        campaign_id: "cmp-1".into(),
        customer_id: "cust-1".into(),
        channel: ChannelId::Email,
        recipient: recipient.into(),
        content: Content {
            subject: Some(SUBJECT.into()),
            text: Some(TEXT.into()),
            html: Some(HTML.into()),
            ..Content::default()
        },
        not_before: None,
        expires_at: None,
        priority: 5,
        timezone: None,
        attributes: BTreeMap::new(),
    }
}

pub const RSA_PKCS1_PEM: &str = concat!(
    "-----BEGIN RSA PRIVATE KEY-----\n",
    "MIIEowIBAAKCAQEA7zTxq15ntqD5qz0dPh/p1IgmVUN5YgxcRqmErQgGr4IQu7ej\n",
    "eq7rX/OrKhlMlqnSysUWZB9F2g8jsCsOSQaTXUVA85DQ0ECIPO/UVM1xC/YQC9oL\n",
    "S+bhEuAlU/H42s3ZlGWKb47zSMDzJ/aaXdwqsCwRlZNnphQ0tcQodH03WtdtmoNV\n",
    "Th5HDw/a56AgJgyWDDpZi2ucEKGAgRCWWtObDyYQZZ3ULVRatdbuqB+xK3mBSXN1\n",
    "u0/IHdJoEO7/nawt36J5FEDjwlKsVjMr4k2KocgCD4fu9Hjs1WqPTtdSKTLya+Ys\n",
    "chmfE3MRO5El45ifhO/I3WstbseCnIpdtSP8DQIDAQABAoIBAAYDgs+QqBphhrt+\n",
    "+ZqxOtspiWei48fyQenI3k+5x4u13rKYOE2MIe0MASB0qtTLdAjRwt2n0+yVlLL0\n",
    "Rdhb/n/7GLxkZAab+fNQFcRmym94UOGSx/0nXI2si4sU9WdcqkHBDep0181lIffR\n",
    "xim6sGrSMgkhet/VeITZBT2Ae8YqJAov88fuo3mCpQMOAdIZNvB/XlxwKvIZHK7g\n",
    "MIWcumVb2vnwKGbGoKEoQgSAtphCLlsAVC3TrCgeKhqLRkRWBEzj1ujbOf1+647K\n",
    "EQa41EgO8PE/ZjmePotIH4oPq2dvujUyKVbljHktmZouspaaV/VB+o2KfC4DfC0y\n",
    "TSU+F6UCgYEA+67G3AKWqOvWPzivMw8dR1zV64fu0zjjm2fdog+6GA2rMBO/FZof\n",
    "1ChxYVVWftG0BqogLxOcSjaGK89x10drA5T09JprydLk70miRCvhWHrmwBOx1SqE\n",
    "oCZlIDTiCJZDkne4k8V3tgU6H4JCTd2USHdChe2mt+Ualid1VkYB1rcCgYEA809h\n",
    "np19ve5CVesd00TQJIDgAvQkfsVNhTKLjW3psMS5iU4xIvhf2S+jhRoLNFO/HukC\n",
    "ujHgoAkAFzCsZbkjIGXh+2jmMU8I5B4WF1B+lumsydAWMpYqP+WfM1AObADQNiI7\n",
    "SCsmXWEJ1vMGgpRpaieoiLQPrj6JmY9WkYnnn1sCgYB1UF55Juu7CVLwXSetERqA\n",
    "rRE5nD8CTb4qLhvs8o+3rodg/ZNQKmszpTZUPEb5Dh5wDNS7nNR48zlPKn7R7gQ/\n",
    "wyr66Q/dH2R+9T+hryJ277KnTYbS6eKwE7WHcZ76ibAtkYiDuMO4IG+bSEhHq0T3\n",
    "Ej/71W6kwTHHU9UpxbANuQKBgQDsHm0t8MjGOSJHHxSionUb97VtKGECZZcFXDfx\n",
    "2GihE0i65xboSQE7U+/si4m0DlG7PYVYDG9g31snJiUn0rM0DatwwCwkTf7i4g+u\n",
    "MH+pFLyKXVYtYW0+9Se6NEbKqT9mSXIeZ0Gj/Tf/UXlP35ctXa9Aev18q1P9ogzw\n",
    "0FPnYQKBgHri7rW0sXQVNdvX+WzmSGpdbR4uDYdA86YIzRbzCddHKzKJbHSEuD40\n",
    "Q1CZXicxZb7edvYtvfn5IaxZHh0/T88Q/TkdlMaLLeOUQ9FGrMj76nQ1hfwPAINx\n",
    "uPhC21N7ktsrESYaYt35zAfghWFq+bWKeZvcPJAxKPR8WqxCEDSA\n",
    "-----END RSA PRIVATE KEY-----\n",
);

/// The same key as [`RSA_PKCS1_PEM`], PKCS#8.
pub const RSA_PKCS8_PEM: &str = concat!(
    "-----BEGIN PRIVATE KEY-----\n",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDvNPGrXme2oPmr\n",
    "PR0+H+nUiCZVQ3liDFxGqYStCAavghC7t6N6rutf86sqGUyWqdLKxRZkH0XaDyOw\n",
    "Kw5JBpNdRUDzkNDQQIg879RUzXEL9hAL2gtL5uES4CVT8fjazdmUZYpvjvNIwPMn\n",
    "9ppd3CqwLBGVk2emFDS1xCh0fTda122ag1VOHkcPD9rnoCAmDJYMOlmLa5wQoYCB\n",
    "EJZa05sPJhBlndQtVFq11u6oH7EreYFJc3W7T8gd0mgQ7v+drC3fonkUQOPCUqxW\n",
    "MyviTYqhyAIPh+70eOzVao9O11IpMvJr5ixyGZ8TcxE7kSXjmJ+E78jday1ux4Kc\n",
    "il21I/wNAgMBAAECggEABgOCz5CoGmGGu375mrE62ymJZ6Ljx/JB6cjeT7nHi7Xe\n",
    "spg4TYwh7QwBIHSq1Mt0CNHC3afT7JWUsvRF2Fv+f/sYvGRkBpv581AVxGbKb3hQ\n",
    "4ZLH/SdcjayLixT1Z1yqQcEN6nTXzWUh99HGKbqwatIyCSF639V4hNkFPYB7xiok\n",
    "Ci/zx+6jeYKlAw4B0hk28H9eXHAq8hkcruAwhZy6ZVva+fAoZsagoShCBIC2mEIu\n",
    "WwBULdOsKB4qGotGRFYETOPW6Ns5/X7rjsoRBrjUSA7w8T9mOZ4+i0gfig+rZ2+6\n",
    "NTIpVuWMeS2Zmi6ylppX9UH6jYp8LgN8LTJNJT4XpQKBgQD7rsbcApao69Y/OK8z\n",
    "Dx1HXNXrh+7TOOObZ92iD7oYDaswE78Vmh/UKHFhVVZ+0bQGqiAvE5xKNoYrz3HX\n",
    "R2sDlPT0mmvJ0uTvSaJEK+FYeubAE7HVKoSgJmUgNOIIlkOSd7iTxXe2BTofgkJN\n",
    "3ZRId0KF7aa35RqWJ3VWRgHWtwKBgQDzT2GenX297kJV6x3TRNAkgOAC9CR+xU2F\n",
    "MouNbemwxLmJTjEi+F/ZL6OFGgs0U78e6QK6MeCgCQAXMKxluSMgZeH7aOYxTwjk\n",
    "HhYXUH6W6azJ0BYylio/5Z8zUA5sANA2IjtIKyZdYQnW8waClGlqJ6iItA+uPomZ\n",
    "j1aRieefWwKBgHVQXnkm67sJUvBdJ60RGoCtETmcPwJNviouG+zyj7euh2D9k1Aq\n",
    "azOlNlQ8RvkOHnAM1Luc1HjzOU8qftHuBD/DKvrpD90fZH71P6GvInbvsqdNhtLp\n",
    "4rATtYdxnvqJsC2RiIO4w7ggb5tISEerRPcSP/vVbqTBMcdT1SnFsA25AoGBAOwe\n",
    "bS3wyMY5IkcfFKKidRv3tW0oYQJllwVcN/HYaKETSLrnFuhJATtT7+yLibQOUbs9\n",
    "hVgMb2DfWycmJSfSszQNq3DALCRN/uLiD64wf6kUvIpdVi1hbT71J7o0RsqpP2ZJ\n",
    "ch5nQaP9N/9ReU/fly1dr0B6/XyrU/2iDPDQU+dhAoGAeuLutbSxdBU129f5bOZI\n",
    "al1tHi4Nh0DzpgjNFvMJ10crMolsdIS4PjRDUJleJzFlvt529i29+fkhrFkeHT9P\n",
    "zxD9OR2Uxost45RD0UasyPvqdDWF/A8Ag3G4+ELbU3uS2ysRJhpi3fnMB+CFYWr5\n",
    "tYp5m9w8kDEo9HxarEIQNIA=\n",
    "-----END PRIVATE KEY-----\n",
);

pub const ED25519_PKCS8_PEM: &str = concat!(
    "-----BEGIN PRIVATE KEY-----\n",
    "MC4CAQAwBQYDK2VwBCIEIPswDmw8j1G03FnjrQ0Wq0Mgk7qiVYG8Dt1xRB0G0/HO\n",
    "-----END PRIVATE KEY-----\n",
);

/// Too short for DKIM (RFC 8301).
pub const RSA_512_PEM: &str = concat!(
    "-----BEGIN RSA PRIVATE KEY-----\n",
    "MIIBPAIBAAJBAMWi6CVy+7GIIQYYctCnhXNkDPm0tlrWWytxJt+ZIPMb27zdpGog\n",
    "Bd7kmXIvUdhHJu3Ig+w97Aq637DtjOzPJrUCAwEAAQJBAJaKgEoGS7Hu/zilZs+I\n",
    "yx4aF8gc3spSfR+aEQJAodiLCPj2GAjog9W4DrXJyyKbqeXq34iQ4eKJIWiQgCsb\n",
    "JAECIQDokvGn93P0n3ykQDL6xr0SbZ3SjZ2JuaQswpBexbKAMwIhANmLE0iYvbmg\n",
    "P2bY6py/nglVZMHYJG7aYtKDHPitiTV3AiEAp7MNPShZHFLD9Uu1ds5HFzqjSmeC\n",
    "6QRLNVs17qBvDbECIB98Bl1yZbsQ2zw6VrI69VdqeXuomZVFnBnVigLfssT/AiEA\n",
    "zTIafa3AKZb7CIBNj4R95pokzAXUSC/VV10r6QOaii8=\n",
    "-----END RSA PRIVATE KEY-----\n",
);

/// Decodes RFC 2047 encoded words (`=?utf-8?B?…?=`, `=?utf-8?Q?…?=`); white space between two
/// encoded words is dropped (RFC 2047 §6.2).
pub fn decode_rfc2047(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    let mut pending_space = String::new();
    while !rest.is_empty() {
        if let Some(word) = rest.strip_prefix("=?") {
            let decoded = (|| {
                let (charset, word) = word.split_once('?')?;
                let (enc, word) = word.split_once('?')?;
                let (text, after) = word.split_once("?=")?;
                assert!(charset.eq_ignore_ascii_case("utf-8"), "charset {charset}");
                let bytes = match enc {
                    "B" | "b" => base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .ok()?,
                    "Q" | "q" => q_decode(text),
                    _ => return None,
                };
                Some((String::from_utf8(bytes).ok()?, after))
            })();
            if let Some((text, after)) = decoded {
                if !last_was_word {
                    out.push_str(&pending_space);
                }
                pending_space.clear();
                out.push_str(&text);
                rest = after;
                last_was_word = true;
                continue;
            }
        }
        let c = rest.chars().next().unwrap();
        if c == ' ' || c == '\t' {
            pending_space.push(c);
        } else {
            out.push_str(&pending_space);
            pending_space.clear();
            out.push(c);
            last_was_word = false;
        }
        rest = &rest[c.len_utf8()..];
    }
    out.push_str(&pending_space);
    out
}

fn q_decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' => out.push(b' '),
            b'=' if i + 2 < b.len() => {
                out.push(hex_byte(&b[i + 1..i + 3]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex_byte(two: &[u8]) -> u8 {
    u8::from_str_radix(std::str::from_utf8(two).unwrap(), 16).expect("=XX hex")
}

/// Quoted-printable bodies (RFC 2045 §6.7): `=XX` octets, `=` at a line end is a soft break.
fn qp_decode(text: &str) -> Vec<u8> {
    let lines: Vec<&str> = text.split("\r\n").collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let line = line.trim_end_matches([' ', '\t']);
        let (line, soft) = match line.strip_suffix('=') {
            Some(l) => (l, true),
            None => (line, false),
        };
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' && i + 2 < b.len() {
                out.push(hex_byte(&b[i + 1..i + 3]));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        if !soft && n + 1 < lines.len() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// A message as the relay got it: CRLF line ends, headers unfolded on lookup.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub raw: Vec<u8>,
    headers: Vec<(String, String)>,
    body: String,
}

impl Parsed {
    /// Parses `raw` (CRLF or LF line ends).
    pub fn new(raw: &[u8]) -> Parsed {
        let text = String::from_utf8(raw.to_vec()).expect("the message is UTF-8 (ASCII)");
        let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let headers = split_headers(head);
        Parsed {
            raw: text.as_bytes().to_vec(),
            headers,
            body: body.to_owned(),
        }
    }

    /// The first header `name`, unfolded (RFC 5322 §2.2.3), value trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| unfold(v).trim().to_owned())
    }

    pub fn count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// The decoded body of a single-part message.
    pub fn body_text(&self) -> String {
        decode_body(
            &self.header("Content-Transfer-Encoding").unwrap_or_default(),
            &self.body,
        )
    }

    /// `(content type, decoded text)` of each part of a multipart message.
    pub fn parts(&self) -> Vec<(String, String)> {
        let ct = self.header("Content-Type").unwrap_or_default();
        let boundary = ct
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("boundary="))
            .next()
            .expect("multipart with a boundary")
            .trim_matches('"')
            .to_owned();
        let delimiter = format!("--{boundary}");
        let mut parts = Vec::new();
        for chunk in self.body.split(&delimiter).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            let chunk = chunk.strip_prefix("\r\n").unwrap_or(chunk);
            let (head, body) = chunk.split_once("\r\n\r\n").unwrap_or((chunk, ""));
            let headers = split_headers(head);
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| unfold(v).trim().to_owned())
                    .unwrap_or_default()
            };
            let body = body.strip_suffix("\r\n").unwrap_or(body);
            parts.push((
                get("Content-Type"),
                decode_body(&get("Content-Transfer-Encoding"), body),
            ));
        }
        parts
    }
}

fn split_headers(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push_str("\r\n");
                last.1.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    headers
}

fn unfold(v: &str) -> String {
    v.replace("\r\n", "")
}

fn decode_body(cte: &str, body: &str) -> String {
    let bytes = match cte.to_ascii_lowercase().as_str() {
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(body.split_whitespace().collect::<String>())
            .expect("base64 body"),
        "quoted-printable" => qp_decode(body),
        _ => body.as_bytes().to_vec(),
    };
    String::from_utf8(bytes)
        .expect("UTF-8 body")
        .replace("\r\n", "\n")
}

/// The tags of a `DKIM-Signature` value (white space removed from values).
pub fn dkim_tags(value: &str) -> HashMap<String, String> {
    unfold(value)
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.chars().filter(|c| !c.is_whitespace()).collect(),
            )
        })
        .collect()
}

/// RFC 6376 §3.4.2: relaxed header canonicalization of one header.
fn relaxed_header(name: &str, value: &str) -> String {
    let value = unfold(value);
    let mut v = String::new();
    let mut ws = false;
    for c in value.chars() {
        if c == ' ' || c == '\t' {
            ws = true;
        } else {
            if ws && !v.is_empty() {
                v.push(' ');
            }
            ws = false;
            v.push(c);
        }
    }
    format!("{}:{}", name.trim().to_ascii_lowercase(), v)
}

/// RFC 6376 §3.4.4: relaxed body canonicalization.
fn relaxed_body(body: &str) -> Vec<u8> {
    let mut lines: Vec<String> = body
        .split("\r\n")
        .map(|l| {
            let mut out = String::new();
            let mut ws = false;
            for c in l.chars() {
                if c == ' ' || c == '\t' {
                    ws = true;
                } else {
                    if ws {
                        out.push(' ');
                    }
                    ws = false;
                    out.push(c);
                }
            }
            out
        })
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Verifies the message's DKIM signature against the public half of `private_pem`.
pub fn verify_dkim(raw: &[u8], private_pem: &str) -> Result<(), String> {
    let m = Parsed::new(raw);
    if m.count("DKIM-Signature") != 1 {
        return Err("not exactly one DKIM-Signature".into());
    }
    let (sig_name, sig_value) = m
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("DKIM-Signature"))
        .unwrap();
    let tags = dkim_tags(sig_value);
    if tags.get("c").map(String::as_str) != Some("relaxed/relaxed") {
        return Err(format!("c={:?}", tags.get("c")));
    }
    let bh =
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(relaxed_body(&m.body)));
    if tags["bh"] != bh {
        return Err(format!("body hash: signed {} computed {bh}", tags["bh"]));
    }
    let mut data = String::new();
    let mut used: HashMap<String, usize> = HashMap::new();
    for name in tags["h"].split(':') {
        // RFC 6376 §5.4.2: instances are taken from the bottom up.
        let instances: Vec<&(String, String)> = m
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .collect();
        let k = used.entry(name.to_ascii_lowercase()).or_default();
        if *k < instances.len() {
            let (n, v) = instances[instances.len() - 1 - *k];
            *k += 1;
            data.push_str(&relaxed_header(n, v));
            data.push_str("\r\n");
        }
    }
    // The signature header itself, b= emptied, no trailing CRLF (RFC 6376 §3.7).
    let canon = relaxed_header(sig_name, sig_value);
    let (head, tag_list) = canon.split_once(':').unwrap();
    let emptied: Vec<String> = tag_list
        .split(';')
        .map(|t| {
            let trimmed = t.trim_start();
            if trimmed.starts_with("b=") {
                format!("{}b=", &t[..t.len() - trimmed.len()])
            } else {
                t.to_owned()
            }
        })
        .collect();
    data.push_str(&format!("{head}:{}", emptied.join(";")));
    let hash = Sha256::digest(data.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&tags["b"])
        .map_err(|e| format!("b= is not base64: {e}"))?;
    match tags["a"].as_str() {
        "rsa-sha256" => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            use rsa::pkcs8::DecodePrivateKey;
            let key = rsa::RsaPrivateKey::from_pkcs1_pem(private_pem)
                .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(private_pem))
                .map_err(|e| e.to_string())?;
            key.to_public_key()
                .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &hash, &sig)
                .map_err(|e| format!("rsa signature: {e}"))
        }
        "ed25519-sha256" => {
            let der = base64::engine::general_purpose::STANDARD
                .decode(
                    private_pem
                        .lines()
                        .filter(|l| !l.starts_with("-----"))
                        .collect::<String>(),
                )
                .unwrap();
            let seed: [u8; 32] = der[der.len() - 32..].try_into().unwrap();
            let key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
            let sig = ed25519_dalek::Signature::from_slice(&sig).map_err(|e| e.to_string())?;
            // RFC 8463 §3: Ed25519 signs the SHA-256 hash of the canonicalized data.
            key.verify_strict(&hash, &sig)
                .map_err(|e| format!("ed25519 signature: {e}"))
        }
        other => Err(format!("a={other}")),
    }
}

#[test]
fn rfc2047_words_decode_and_adjacent_white_space_goes() {
    assert_eq!(
        decode_rfc2047("=?utf-8?b?0J/RgNC40LLQtdGC?= =?UTF-8?Q?_=D0=BC=D0=B8=D1=80?= !"),
        "Привет мир !"
    );
    assert_eq!(decode_rfc2047("plain  text"), "plain  text");
}
