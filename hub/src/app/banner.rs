//! What a started hub prints: where everything is, and a first request to try. URLs lose their
//! passwords first ([`redact_url`]).

use clm_contracts::ChannelId;

use super::Hub;

/// `postgres://user:secret@host/db?password=x` → `postgres://user:***@host/db?password=***`.
///
/// Passwords are not always percent-encoded as they should be: everything between the scheme and
/// the *last* `@` is the user information (a `?`, `/`, `#`, `%` or `@` inside the password stays
/// hidden), and only what follows it is read for query parameters. When in doubt it hides more,
/// never less.
pub fn redact_url(url: &str) -> String {
    let (userinfo_end, rest_from) = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => (Some((s + 3, at)), at),
        (Some(s), _) => (None, s + 3),
        _ => (None, 0),
    };
    let mut out = String::with_capacity(url.len());
    match userinfo_end {
        Some((from, at)) => {
            out.push_str(&url[..from]);
            match url[from..at].split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(&url[from..at]),
            }
        }
        None => out.push_str(&url[..rest_from]),
    }
    let rest = &url[rest_from..];
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    out.push_str(before_query);
    if let Some(q) = query {
        out.push('?');
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

fn is_secret_param(key: &str) -> bool {
    const SECRET: [&str; 10] = [
        "password",
        "passwd",
        "pwd",
        "sslpassword",
        "token",
        "secret",
        "access_token",
        "api_key",
        "apikey",
        "auth",
    ];
    SECRET.iter().any(|s| key.eq_ignore_ascii_case(s))
}

/// Prints the banner with one write, so log lines of tasks already running cannot land between
/// its lines.
pub(crate) fn print(hub: &Hub) {
    use std::io::Write;
    let text = render(hub);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The banner's text.
pub(crate) fn render(hub: &Hub) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(2048);
    let c = &hub.shared.config;
    let base = hub.base_url();
    let auth = if c.api_is_open() {
        "open (no token: loopback only)".to_owned()
    } else {
        "bearer token required".to_owned()
    };
    let header = if c.api_is_open() {
        String::new()
    } else {
        " -H 'Authorization: Bearer $CLM_HUB_TOKEN'".into()
    };
    let _ = writeln!(out, "\nCLM Channel Hub is running");
    let _ = writeln!(out, "  API        {base}/v1   ({auth})");
    let _ = writeln!(out, "  store      {}", redact_url(&c.store_url()));
    let _ = writeln!(out, "  queue      {}", redact_url(&c.queue.url));
    let _ = writeln!(
        out,
        "  metrics    {base}/metrics    health {base}/healthz  {base}/readyz"
    );
    if let Some(s) = &hub.sandbox {
        let _ = writeln!(out, "  sandbox    channels go to bundled mocks");
        if let Some(m) = &s.sms {
            let _ = writeln!(
                out,
                "             sms     mock at http://{} (control: {})",
                m.addr(),
                m.control_url()
            );
        }
        for (id, m) in &s.channels {
            let _ = writeln!(
                out,
                "             {id:<7} mock at {} (control: {})",
                m.base_url(),
                m.control_url()
            );
        }
        if let Some(m) = &s.smtp {
            let _ = writeln!(
                out,
                "             smtp    mock at smtp://{} (control: {})",
                m.addr(),
                m.control_url()
            );
        }
        for (name, m) in [("sap_crm", &s.sap_crm), ("crm ESB", &s.crm_esb)] {
            if let Some(m) = m {
                let _ = writeln!(
                    out,
                    "             {name:<7} mock at {} (control: {})",
                    m.url(),
                    m.control_url()
                );
            }
        }
    }
    let id = uuid::Uuid::new_v4();
    let _ = writeln!(
        out,
        "\nSend an SMS:\n  curl -s{header} -H 'Content-Type: application/json' {base}/v1/communications -d '{{\"id\":\"{id}\",\"campaign_id\":\"demo\",\"customer_id\":\"c-1\",\"channel\":\"sms\",\"recipient\":\"+79001234567\",\"content\":{{\"text\":\"Привет! Ваш бонус ждёт вас\"}}}}'"
    );
    let _ = writeln!(
        out,
        "Then see what happened to it:\n  curl -s{header} {base}/v1/communications/{id}\n"
    );
    if hub.shared.channels.contains_key(&ChannelId::Wink) {
        let id = uuid::Uuid::new_v4();
        let _ = writeln!(
            out,
            "Or a Wink notification (the mock answers with delivered, shown, clicked):\n  curl -s{header} -H 'Content-Type: application/json' {base}/v1/communications -d '{{\"id\":\"{id}\",\"campaign_id\":\"demo\",\"customer_id\":\"c-1\",\"channel\":\"wink\",\"recipient\":\"wink-account-1\",\"content\":{{\"subject\":\"Новый сезон\",\"text\":\"Смотрите сегодня\"}}}}'\n"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            super::redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            super::redact_url("sqlite://data/hub.db"),
            "sqlite://data/hub.db"
        );
        assert_eq!(
            super::redact_url("postgres://h/db?user=u&password=pw&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        // Passwords that were never percent-encoded, as people paste them.
        for (url, shown) in [
            ("amqp://user:pa?ss@h:5672/%2f", "amqp://user:***@h:5672/%2f"),
            ("amqp://user:p@ss@h/vhost", "amqp://user:***@h/vhost"),
            ("amqp://user:p%40ss/x@h/v", "amqp://user:***@h/v"),
            (
                "amqp://user:pw#frag@h/v?heartbeat=10",
                "amqp://user:***@h/v?heartbeat=10",
            ),
            (
                "redis://:s3cret@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            ("amqp://guest@h/v", "amqp://guest@h/v"),
            (
                "http://gw/sendsms?username=u&password=p&token=t",
                "http://gw/sendsms?username=u&password=***&token=***",
            ),
        ] {
            let out = super::redact_url(url);
            assert_eq!(out, shown, "{url}");
            for secret in ["pa?ss", "p@ss", "p%40ss", "s3cret", "pw#"] {
                assert!(!out.contains(secret), "{out}");
            }
        }
    }
}
