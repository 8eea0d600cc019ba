//! Sends: the answer of each channel, idempotent `message_id`, strict bodies, auth.

use clm_contracts::ChannelId;
use clm_contracts::channels::{eissd, elk, wink};
use clm_mocks::{ChannelMock, ChannelMockConfig, ExpectedAuth};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{client, error_body, request, send, send_url, start, start_with};

#[tokio::test]
async fn each_channel_answers_its_contract() {
    let id = Uuid::new_v4();

    let mock = start(ChannelId::Wink).await;
    assert_eq!(mock.send_url(), send_url(&mock));
    assert_eq!(
        mock.control_url(),
        format!("http://{}/control/wink", mock.addr())
    );
    let response = send(&mock, &request(ChannelId::Wink, id)).await;
    assert_eq!(response.status(), 200);
    let answer: wink::SendResponse = response.json().await.unwrap();
    assert!(!answer.wink_id.is_empty());
    let got = &mock.received()[0];
    assert_eq!(
        (got.status, got.message_id, got.external_id.as_deref()),
        (200, Some(id), Some(answer.wink_id.as_str()))
    );
    assert_eq!(got.body["account_id"], "wink-acc-1");

    let mock = start(ChannelId::Elk).await;
    let answer: elk::SendResponse = send(&mock, &request(ChannelId::Elk, id))
        .await
        .json()
        .await
        .unwrap();
    assert!(!answer.elk_id.is_empty());

    let mock = start(ChannelId::Eissd).await;
    let answer: eissd::SendResponse = send(&mock, &request(ChannelId::Eissd, id))
        .await
        .json()
        .await
        .unwrap();
    assert!(!answer.eissd_id.is_empty());
    assert_eq!(mock.accepted_count(), 1);
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test]
async fn only_wink_elk_and_eissd_have_a_channel_mock() {
    let bind = "127.0.0.1:0".parse().unwrap();
    for channel in [ChannelId::Sms, ChannelId::Amdocs, ChannelId::Email] {
        let started = ChannelMock::start(channel, bind, ChannelMockConfig::default()).await;
        assert!(started.is_err(), "{channel}");
    }
    let config = ChannelMockConfig {
        dwh_url: Some("sqlite::memory:".into()),
        ..ChannelMockConfig::default()
    };
    assert!(
        ChannelMock::start(ChannelId::Wink, bind, config)
            .await
            .is_err(),
        "a DWH is for eissd only"
    );
}

#[tokio::test]
async fn a_repeated_message_id_gets_the_same_id_and_counts_as_a_duplicate() {
    let mock = start(ChannelId::Wink).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let first: wink::SendResponse = send(&mock, &request(ChannelId::Wink, a))
        .await
        .json()
        .await
        .unwrap();
    let again: wink::SendResponse = send(&mock, &request(ChannelId::Wink, a))
        .await
        .json()
        .await
        .unwrap();
    let other: wink::SendResponse = send(&mock, &request(ChannelId::Wink, b))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first.wink_id, again.wink_id);
    assert_ne!(first.wink_id, other.wink_id);
    assert_eq!(
        (mock.accepted_ref_count(a), mock.accepted_ref_count(b)),
        (2, 1)
    );
    assert_eq!(mock.duplicates(), 1);
    assert_eq!(mock.accepted_count(), 3);
    let stats = mock.stats();
    assert_eq!((stats.duplicates, stats.accepted), (1, 3));
    let flags: Vec<bool> = mock.received().iter().map(|r| r.duplicate).collect();
    assert_eq!(flags, [false, true, false]);

    mock.reset();
    let fresh: wink::SendResponse = send(&mock, &request(ChannelId::Wink, a))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(fresh.wink_id, first.wink_id, "reset forgets the ids");
    assert_eq!(mock.duplicates(), 0);
}

#[tokio::test]
async fn malformed_bodies_get_400_naming_the_field() {
    let mock = start(ChannelId::Elk).await;
    let id = Uuid::new_v4();
    let valid = request(ChannelId::Elk, id);

    let mut missing = valid.clone();
    missing.as_object_mut().unwrap().remove("title");
    let mut wrong_type = valid.clone();
    wrong_type["surfaces"] = json!("web");
    let mut unknown = valid.clone();
    unknown["surfce"] = json!("web");
    let mut empty_surfaces = valid.clone();
    empty_surfaces["surfaces"] = json!([]);
    let mut bad_uuid = valid.clone();
    bad_uuid["message_id"] = json!("not-a-uuid");
    let mut blank = valid.clone();
    blank["account_id"] = json!("  ");

    for (body, field) in [
        (missing, "title"),
        (wrong_type, "surfaces"),
        (unknown, "surfce"),
        (empty_surfaces, "surfaces"),
        (bad_uuid, "message_id"),
        (blank, "account_id"),
    ] {
        let response = send(&mock, &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let error = error_body(response).await;
        assert_eq!(error.error, "invalid_request");
        let message = error.message.unwrap();
        assert!(message.contains(field), "{field}: {message}");
    }
    let response = client()
        .post(mock.send_url())
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_body(response).await.error, "invalid_request");

    assert_eq!(mock.accepted_count(), 0);
    let stats = mock.stats();
    assert_eq!((stats.rejected, stats.requests), (7, 7));
    assert_eq!(stats.by_status.get(&400), Some(&7));
    let last = mock.received().pop().unwrap();
    assert_eq!(last.error.as_deref(), Some("invalid_request"));
    assert_eq!(
        last.body, "{not json",
        "a body that is not JSON is kept as text"
    );
    assert_eq!(send(&mock, &valid).await.status(), 200);
}

/// Adds credentials to a request.
type Sign = fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder;

#[tokio::test]
async fn wrong_or_missing_credentials_get_401() {
    let id = Uuid::new_v4();
    let cases: [(ExpectedAuth, Sign, Sign); 3] = [
        (
            ExpectedAuth::Bearer("s3cret".into()),
            |r| r.bearer_auth("s3cret"),
            |r| r.bearer_auth("wrong"),
        ),
        (
            ExpectedAuth::Basic {
                username: "hub".into(),
                password: "pw".into(),
            },
            |r| r.basic_auth("hub", Some("pw")),
            |r| r.basic_auth("hub", Some("pw2")),
        ),
        (
            ExpectedAuth::ApiKey {
                header: "X-API-Key".into(),
                value: "k1".into(),
            },
            |r| r.header("x-api-key", "k1"),
            |r| r.header("x-api-key", "k2"),
        ),
    ];
    for (auth, good, bad) in cases {
        let config = ChannelMockConfig {
            auth: Some(auth.clone()),
            ..ChannelMockConfig::default()
        };
        let mock = start_with(ChannelId::Eissd, config).await;
        let body = request(ChannelId::Eissd, id);
        let post = |sign: Sign| sign(client().post(mock.send_url()).json(&body)).send();

        let missing = send(&mock, &body).await;
        assert_eq!(missing.status(), 401, "{auth:?}");
        assert_eq!(error_body(missing).await.error, "unauthorized");
        let wrong = post(bad).await.unwrap();
        assert_eq!(wrong.status(), 401, "{auth:?}");
        assert_eq!(error_body(wrong).await.error, "unauthorized");
        assert_eq!(post(good).await.unwrap().status(), 200, "{auth:?}");
        assert_eq!(mock.stats().rejected, 2);
        assert_eq!(mock.accepted_count(), 1);
    }
}

#[tokio::test]
async fn auth_is_checked_before_the_body() {
    let config = ChannelMockConfig {
        auth: Some(ExpectedAuth::Bearer("t".into())),
        ..ChannelMockConfig::default()
    };
    let mock = start_with(ChannelId::Wink, config).await;
    let response = send(&mock, &json!({"nonsense": true})).await;
    assert_eq!(response.status(), 401);
    mock.set_auth(None);
    assert_eq!(send(&mock, &json!({"nonsense": true})).await.status(), 400);
}
