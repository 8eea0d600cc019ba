//! Loading, layering and the checks, by key.
use super::*;
use crate::config::endpoint::is_loopback_url;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn no_file_means_the_embedded_default_in_sandbox() {
    let c = Config::load(None, env(&[])).unwrap();
    assert!(c.sandbox);
    for id in ChannelId::ALL {
        assert!(c.channel(id).is_enabled(), "{id}");
    }
    // Every channel has a connector now; the embedded default runs them all.
    assert!(c.channel(ChannelId::Email).is_enabled());
    assert!(c.store_url().starts_with("sqlite://"));
    // Tuning a channel from the environment does not switch it off.
    let c = Config::load(None, env(&[("CLM_HUB__CHANNELS__WINK__POLICY__RATE", "5")])).unwrap();
    assert!(c.channel(ChannelId::Wink).is_enabled());
}

#[test]
fn credentials_go_in_clear_only_to_this_machine() {
    assert!(is_loopback_url("http://127.0.0.1:9/crm"));
    assert!(is_loopback_url("http://localhost/x"));
    assert!(is_loopback_url("http://[::1]:80/"));
    assert!(!is_loopback_url("http://crm.example/x"));
    assert!(!is_loopback_url("http://127.0.0.1.evil.example/"));
    assert!(!is_loopback_url("http://user@10.0.0.1/"));
}

#[test]
fn http_channels_need_an_endpoint_and_eissd_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    let load = |text: &str| {
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), env(&[])).map_err(|e| e.to_string())
    };
    let sms = "[channels.sms]\nenabled = false\n";
    // A file without sandbox: unnamed channels stay off.
    let c = load(sms).unwrap();
    assert!(!c.channel(ChannelId::Wink).is_enabled());
    let err = load(&format!("{sms}[channels.wink]\nenabled = true\n")).unwrap_err();
    assert!(err.contains("channels.wink.endpoint"), "{err}");
    let ok = load(&format!(
        "{sms}[channels.wink]\nenabled = true\n[channels.wink.endpoint]\nurl = \"https://wink.example/api\"\nauth = {{ kind = \"bearer\", token = \"t\" }}\n"
    ))
    .unwrap();
    let auth = ok.channels.wink.endpoint.as_ref().unwrap().auth.clone();
    // The token never reaches a Debug print.
    let printed = format!("{auth:?}");
    assert!(
        printed.contains("Bearer") && !printed.contains("\"t\""),
        "{printed}"
    );
    let err = load(&format!(
        "{sms}[channels.wink.endpoint]\nurl = \"https://w\"\nclient_cert_file = \"/nonexistent.pem\"\n"
    ))
    .unwrap_err();
    assert!(
        err.contains("channels.wink.endpoint.client_key_file"),
        "{err}"
    );
    let err = load(&format!(
        "{sms}[channels.elk.endpoint]\nurl = \"https://e\"\nca_file = \"/nonexistent.pem\"\n"
    ))
    .unwrap_err();
    assert!(err.contains("channels.elk.endpoint.ca_file"), "{err}");
    let err = load(&format!(
        "{sms}[channels.eissd]\nenabled = true\n[channels.eissd.endpoint]\nurl = \"http://eissd\"\n"
    ))
    .unwrap_err();
    assert!(err.contains("channels.eissd.responses.source"), "{err}");
    let err = load(&format!(
        "{sms}[channels.eissd.responses]\nsource = \"mysql://dwh\"\n"
    ))
    .unwrap_err();
    assert!(err.contains("channels.eissd.responses.source"), "{err}");
    let err = load(&format!("{sms}[channels.sms.responses]\nbatch = 5\n")).unwrap_err();
    assert!(err.contains("channels.sms.responses"), "{err}");
}

#[test]
fn environment_overrides_nested_keys() {
    let c = Config::load(
        None,
        env(&[
            ("CLM_HUB__CHANNELS__SMS__POLICY__RATE", "42.5"),
            ("CLM_HUB__SERVER__LISTEN", "127.0.0.1:9999"),
            ("OTHER", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(c.channel(ChannelId::Sms).policy().rate, 42.5);
    assert_eq!(c.server.listen.port(), 9999);
}

#[test]
fn a_bad_value_is_named_by_its_key() {
    let err = Config::load(None, env(&[("CLM_HUB__CHANNELS__SMS__POLICY__RATE", "0")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("channels.sms.policy.rate"), "{err}");
}

#[test]
fn unknown_keys_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    std::fs::write(
        &path,
        "sandbox = true\n[server]\nlisten = \"127.0.0.1:1\"\nlissen = 3\n",
    )
    .unwrap();
    let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
    assert!(err.contains("lissen"), "{err}");
}

#[test]
fn a_file_without_sandbox_needs_every_enabled_channel_configured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    std::fs::write(&path, "[channels.sms]\nenabled = true\n").unwrap();
    let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
    assert!(err.contains("channels.sms.gateway"), "{err}");
}

#[test]
fn a_public_listener_needs_tokens() {
    let err = Config::load(None, env(&[("CLM_HUB__SERVER__LISTEN", "0.0.0.0:8080")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.api_token"), "{err}");
    let err = Config::load(
        None,
        env(&[
            ("CLM_HUB__SERVER__LISTEN", "0.0.0.0:8080"),
            ("CLM_HUB__SERVER__API_TOKEN", "s3cret"),
        ]),
    )
    .unwrap_err()
    .to_string();
    // The first enabled channel with a webhook route is named (all of them need one).
    assert!(
        err.contains("channels.") && err.contains(".ingest.token"),
        "{err}"
    );
}

#[test]
fn the_committed_production_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hub.toml");
    let c = Config::load(
        Some(&path),
        env(&[
            ("CLM_HUB__SERVER__API_TOKEN", "t0ken"),
            ("CLM_HUB__CHANNELS__SMS__INGEST__TOKEN", "12345"),
            ("CLM_HUB__CHANNELS__WINK__INGEST__TOKEN", "w"),
            ("CLM_HUB__CHANNELS__ELK__INGEST__TOKEN", "e"),
            ("CLM_HUB__CHANNELS__EMAIL__INGEST__HMAC_SECRET", "m"),
            (
                "CLM_HUB__CHANNELS__EMAIL__TRACKING__SECRET",
                "a-long-tracking-key",
            ),
        ]),
    )
    .unwrap();
    assert!(!c.sandbox);
    for id in ChannelId::ALL {
        assert!(c.channel(id).is_enabled(), "{id}");
    }
    assert!(c.channels.eissd.responses.is_some());
    assert_eq!(c.server.api_token.as_deref(), Some("t0ken"));
    // A numeric-looking secret stays a string.
    assert_eq!(c.channels.sms.ingest.token.as_deref(), Some("12345"));
    assert!(c.store_url().starts_with("postgres://"));
}

#[test]
fn empty_secrets_and_unreachable_report_addresses_are_refused() {
    let err = Config::load(None, env(&[("CLM_HUB__CHANNELS__SMS__INGEST__TOKEN", " ")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("channels.sms.ingest.token"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"0.0.0.0:8080\"\napi_token = \"t\"\n\
         [channels.sms]\nenabled = true\ningest = { token = \"x\" }\n\
         [channels.sms.gateway]\ndialect = \"kannel\"\nurl = \"http://gw/\"\n",
    )
    .unwrap();
    let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
    assert!(err.contains("server.public_url"), "{err}");
    let err = Config::load(
        Some(&path),
        env(&[
            ("CLM_HUB__SERVER__PUBLIC_URL", "http://hub.example:8080"),
            ("CLM_HUB__CHANNELS__SMS__GATEWAY__FROM", "RostelecomOffers"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("channels.sms.gateway.from"), "{err}");
    Config::load(
        Some(&path),
        env(&[("CLM_HUB__SERVER__PUBLIC_URL", "http://hub.example:8080")]),
    )
    .unwrap();
}

#[test]
fn a_window_must_parse() {
    let err = Config::load(
        None,
        env(&[
            ("CLM_HUB__CHANNELS__SMS__POLICY__WINDOW__START", "9am"),
            ("CLM_HUB__CHANNELS__SMS__POLICY__WINDOW__END", "21:00"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("channels.sms.policy.window"), "{err}");
}

/// Every family's type refuses a key of another family, naming its whole path.
#[test]
fn a_key_in_the_wrong_channel_is_refused_with_its_path() {
    for (toml, path) in [
        // SMS: an endpoint is the HTTP families'.
        (
            "[channels.sms.endpoint]\nurl = \"https://x\"\n",
            "channels.sms.endpoint",
        ),
        // HTTP JSON: smtp is e-mail's, responses EISSD's, soap the CRMs'.
        (
            "[channels.wink.smtp]\nhost = \"h\"\nfrom = \"a@b\"\n",
            "channels.wink.smtp",
        ),
        (
            "[channels.elk.responses]\nbatch = 5\n",
            "channels.elk.responses",
        ),
        (
            "[channels.wink.soap]\nversion = \"1.2\"\n",
            "channels.wink.soap",
        ),
        // EISSD: no webhook, so no ingest; no gateway.
        (
            "[channels.eissd.ingest]\ntoken = \"t\"\n",
            "channels.eissd.ingest",
        ),
        (
            "[channels.eissd.gateway]\ndialect = \"json\"\nurl = \"http://g\"\n",
            "channels.eissd.gateway",
        ),
        // CRM: tracking is e-mail's; responses come over SOAP, not /ingest.
        (
            "[channels.sap_crm.tracking]\nopen_pixel = false\n",
            "channels.sap_crm.tracking",
        ),
        (
            "[channels.amdocs.ingest]\ntoken = \"t\"\n",
            "channels.amdocs.ingest",
        ),
        // E-mail: no endpoint, no gateway.
        (
            "[channels.email.endpoint]\nurl = \"https://x\"\n",
            "channels.email.endpoint",
        ),
        (
            "[channels.email.gateway]\ndialect = \"kannel\"\nurl = \"http://g\"\n",
            "channels.email.gateway",
        ),
        // A misspelt key inside a family's own table.
        (
            "[channels.crm_b2c.soap]\nbundle_sise = 5\n",
            "channels.crm_b2c.soap.bundle_sise",
        ),
        // A channel that does not exist.
        ("[channels.telegram]\nenabled = true\n", "channels.telegram"),
    ] {
        let err = Config::from_toml_str(toml, env(&[]))
            .expect_err(toml)
            .to_string();
        assert!(err.contains(&format!("`{path}`")), "{toml} → {err}");
        assert!(err.contains("unknown key"), "{toml} → {err}");
    }
    // The same keys in their own channel load.
    for toml in [
        "[channels.sms]\nenabled = false\n[channels.email.smtp]\nhost = \"h\"\nfrom = \"a@b\"\n",
        "[channels.sms]\nenabled = false\n[channels.eissd.responses]\nbatch = 5\n",
        "[channels.sms]\nenabled = false\n[channels.crm_b2c.soap]\nversion = \"1.2\"\n",
    ] {
        Config::from_toml_str(toml, env(&[])).unwrap_or_else(|e| panic!("{toml} → {e}"));
    }
}

/// From the environment too: `CLM_HUB__CHANNELS__WINK__SMTP__HOST` names a key Wink has not.
#[test]
fn a_wrong_channel_key_from_the_environment_is_refused() {
    let err = Config::load(
        None,
        env(&[("CLM_HUB__CHANNELS__WINK__SMTP__HOST", "relay")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`channels.wink.smtp`"), "{err}");
}

/// Every ```toml block of the README loads as a config file (with the secrets it says come from
/// the environment).
#[test]
fn the_readme_config_examples_load() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let mut blocks = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let after = &rest[start + 8..];
        let end = after.find("```").expect("closed block");
        let toml = &after[..end];
        Config::from_toml_str(toml, env(&[]))
            .unwrap_or_else(|e| panic!("README example does not load: {e}\n{toml}"));
        blocks += 1;
        rest = &after[end + 3..];
    }
    assert!(blocks >= 2, "the README has its config examples ({blocks})");
}
