//! `GET /v1/communications`: search by campaign, customer, recipient (typed in full), channel,
//! status and time, newest first, keyset-paginated; recipients masked; bad filters named.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestHub, sandbox_config, start_hub};

async fn get(hub: &TestHub, query: &str) -> (u16, Value) {
    let r = hub
        .client
        .get(hub.url(&format!("/v1/communications?{query}")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every item of a search, page after page of `limit`.
async fn all_pages(hub: &TestHub, query: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("{query}&limit={limit}&after={a}"),
            None => format!("{query}&limit={limit}"),
        };
        let (status, page) = get(hub, &q).await;
        assert_eq!(status, 200, "{page}");
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit as usize);
        items.extend(got.iter().cloned());
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test]
async fn communications_are_found_by_each_filter_newest_first_and_shown_masked() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(sandbox_config(dir.path()), dir).await;
    let campaign = format!("search-{}", Uuid::new_v4().simple());
    let mut ids = Vec::new();
    for i in 0..23 {
        let (channel, recipient, content) = if i % 3 == 0 {
            (
                "email",
                "Ivan.Petrov@Example.RU",
                json!({"subject": "Тариф", "text": "Скидка"}),
            )
        } else {
            ("sms", "+79001234567", json!({"text": "Скидка"}))
        };
        let id = Uuid::new_v4().to_string();
        let (status, body) = hub
            .submit(&json!({
                "id": id,
                "campaign_id": campaign,
                "customer_id": format!("cust-{}", i % 2),
                "channel": channel,
                "recipient": recipient,
                "content": content,
            }))
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(id);
    }
    hub.wait_for(&ids, &["sent", "delivered"], Duration::from_secs(20))
        .await;

    let everything = all_pages(&hub, &format!("campaign_id={campaign}"), 5).await;
    assert_eq!(everything.len(), 23);
    let found: HashSet<&str> = everything
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(found, ids.iter().map(String::as_str).collect());
    // Newest first: received_at never increases down the list.
    let times: Vec<&str> = everything
        .iter()
        .map(|i| i["received_at"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted);
    // Recipients only masked, content never.
    let text = serde_json::to_string(&everything).unwrap();
    assert!(!text.contains("1234567") && !text.contains("Petrov") && !text.contains("Скидка"));
    assert!(text.contains("+7900***4567") && text.contains("Iv***@Example.RU"));

    // Typed in full, in another case, with spaces around (encoded): found.
    let by_recipient = all_pages(
        &hub,
        &format!("campaign_id={campaign}&recipient=%20ivan.petrov%40example.ru%20"),
        100,
    )
    .await;
    assert_eq!(by_recipient.len(), 8);
    assert!(by_recipient.iter().all(|i| i["channel"] == "email"));
    // A part of it is not a recipient.
    assert!(
        all_pages(&hub, &format!("campaign_id={campaign}&recipient=ivan"), 100)
            .await
            .is_empty()
    );
    let sms_cust1 = all_pages(
        &hub,
        &format!("campaign_id={campaign}&channel=sms&customer_id=cust-1"),
        3,
    )
    .await;
    let expected = (0..23).filter(|i| i % 3 != 0 && i % 2 == 1).count();
    assert_eq!(sms_cust1.len(), expected);
    let failed = all_pages(&hub, &format!("campaign_id={campaign}&status=failed"), 10).await;
    assert!(failed.is_empty());
    let future = all_pages(
        &hub,
        &format!("campaign_id={campaign}&from=2999-01-01T00:00:00Z"),
        10,
    )
    .await;
    assert!(future.is_empty());
    let past = all_pages(
        &hub,
        &format!("campaign_id={campaign}&to=2999-01-01T00:00:00Z"),
        10,
    )
    .await;
    assert_eq!(past.len(), 23);

    hub.hub.stop().await;
}

#[tokio::test]
async fn bad_search_filters_are_refused_naming_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(sandbox_config(dir.path()), dir).await;
    for (query, named) in [
        ("channel=fax", "channel"),
        ("status=lost", "status"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("after=not-a-cursor", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("campaign_id=", "campaign_id"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = get(&hub, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(named), "{query}: {error}");
    }
    hub.hub.stop().await;
}
