//! Property test of the Kannel wire (issue 10): what the connector encodes
//! (`clm_connectors::sms::kannel::request`, the `sendsms` GET) the SMS mock decodes back to the
//! same text, in the coding and part count `segment` chooses: GSM 03.38 text as UTF-8 with
//! `coding=0`, anything else (Cyrillic, emoji as surrogate pairs, control characters, U+0000) as
//! UTF-16BE with `coding=2`. The connector and the mock are built from the contract separately,
//! so this is the check that they agree.

use std::time::Duration;

use chrono::Utc;
use clm_connectors::sms::{Dialect, SmsConfig, kannel};
use clm_contracts::Communication;
use clm_contracts::sms::{gsm_septets, segment};
use clm_mocks::SmsMock;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

fn gsm_alphabet() -> Vec<char> {
    (0..0x2200_u32)
        .filter_map(char::from_u32)
        .filter(|c| gsm_septets(*c).is_some())
        .collect()
}

fn gsm_text() -> impl Strategy<Value = String> {
    vec(select(gsm_alphabet()), 0..400).prop_map(|c| c.into_iter().collect())
}

/// Anything at all: mostly Cyrillic and emoji (surrogate pairs in UTF-16), with GSM
/// characters, `+`, `%`, `&`, `=` (which the query must escape) and any other character.
fn any_text() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            4 => prop::char::range('а', 'я'),
            2 => select(vec!['😀', '👍', '\u{1F3FD}', '\u{1F1F7}', '\u{10FFFF}', '€', '{', 'ё', '中', '\u{FEFF}']),
            2 => select(vec!['+', '%', '&', '=', '#', ' ', '\n', '\r', '\0', '?']),
            2 => prop::char::range('a', 'z'),
            1 => any::<char>(),
        ],
        0..300,
    )
    .prop_map(|c| c.into_iter().collect())
}

fn comm(text: &str) -> Communication {
    serde_json::from_value(serde_json::json!({
        "id": "0190b7a0-0000-7000-8000-000000000001", "campaign_id": "c", "customer_id": "c",
        "channel": "sms", "recipient": "+79001234567", "content": {"text": text},
    }))
    .unwrap()
}

struct Wire {
    rt: tokio::runtime::Runtime,
    mock: SmsMock,
    client: reqwest::Client,
    config: SmsConfig,
}

impl Wire {
    fn new() -> Wire {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mock = rt
            .block_on(SmsMock::start(([127, 0, 0, 1], 0).into()))
            .unwrap();
        let config = SmsConfig {
            dialect: Dialect::Kannel,
            url: mock.kannel_url(),
            username: None,
            password: None,
            from: "RTK".into(),
            dlr_mask: 31,
            dlr_url: None,
            dlr_token: None,
            connect_timeout: Duration::from_secs(5),
            pool_size: 1,
        };
        Wire {
            rt,
            mock,
            client: reqwest::Client::new(),
            config,
        }
    }

    /// Sends `text` as the connector does; the text, coding and parts the mock recorded.
    fn send(&self, text: &str) -> clm_mocks::sms::ReceivedSms {
        let comm = comm(text);
        let status = self.rt.block_on(async {
            kannel::request(&self.client, &self.config, &comm, None, Utc::now())
                .send()
                .await
                .unwrap()
                .status()
        });
        assert_eq!(status.as_u16(), 202);
        self.mock.received().pop().unwrap()
    }
}

fn check(wire: &Wire, text: &str) -> Result<(), TestCaseError> {
    let got = wire.send(text);
    let want = segment(text);
    prop_assert_eq!(&got.text, text);
    prop_assert_eq!(got.coding, want.coding);
    prop_assert_eq!(got.parts as usize, want.parts);
    prop_assert_eq!(got.to.as_str(), "+79001234567");
    prop_assert_eq!(got.from.as_str(), "RTK");
    Ok(())
}

#[test]
fn kannel_text_round_trips_through_the_mock() {
    let wire = Wire::new();
    let config = ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config.clone());
    runner.run(&gsm_text(), |text| check(&wire, &text)).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner.run(&any_text(), |text| check(&wire, &text)).unwrap();
}
