//! The store suite: every check is written once against `&Store` and runs on SQLite and on
//! PostgreSQL alike (`store::sqlite::…`, `store::postgres::…`). Time is passed in explicitly, so
//! nothing here sleeps to make a communication due or a lease run out.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use clm_contracts::api::CommunicationView;
use clm_contracts::{ChannelId, Classification, Communication, Event, ResponseKind, Status};
use clm_hub::store::{
    AttemptRow, Claimed, Correlation, Finish, IncomingResponse, InsertOutcome, NewCommunication,
    ResponseOutcome, SearchQuery, Store,
};
use uuid::Uuid;

use crate::harness::sms_json;

/// Generates one test per check and backend: `store::sqlite::<check>` and
/// `store::postgres::<check>`. A check followed by `[tokio test args]` runs with those args.
macro_rules! store_suite {
    ($($check:ident $([$($runtime:tt)*])?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test $(($($runtime)*))?]
                async fn $check() {
                    let (store, _dir) = crate::harness::sqlite_store().await;
                    super::$check(&store).await;
                    store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test $(($($runtime)*))?]
                async fn $check() {
                    let store = crate::harness::pg_store().await;
                    super::$check(&store).await;
                    store.close().await;
                }
            )*
        }
    };
}

store_suite! {
    check_insert_is_idempotent_by_id,
    check_insert_writes_one_status_event_per_accepted_communication,
    check_claim_due_claims_only_due_communications_in_priority_order,
    check_a_claim_is_not_handed_out_again_until_its_lease_is_reaped,
    check_two_claimers_never_get_the_same_communication[flavor = "multi_thread", worker_threads = 2],
    check_finish_batch_records_outcomes_and_ignores_claims_taken_over,
    check_every_attempt_is_logged_when_a_claim_was_taken_over,
    check_a_late_outcome_never_lands_on_a_newer_claim_of_the_same_instance,
    check_a_report_that_beats_the_outcome_is_applied_once_it_is_sent,
    check_release_gives_claims_back_as_scheduled_at_the_given_time,
    check_responses_correlate_by_id_and_by_external_id,
    check_a_repeated_report_is_recorded_once,
    check_a_multi_part_sms_is_delivered_when_every_part_is,
    check_undelivered_fails_and_responses_never_change_a_final_status,
    check_concurrent_part_reports_deliver_a_multi_part_sms[flavor = "multi_thread", worker_threads = 2],
    check_cancel_campaign_cancels_only_its_pending_communications,
    check_cancel_campaign_covers_more_than_one_chunk,
    check_cancel_never_takes_a_communication_a_claimer_holds[flavor = "multi_thread", worker_threads = 2],
    check_paused_channels_round_trip,
    check_view_shows_unknown_as_none_and_rejections_as_rejected,
    check_depth_by_channel_counts_pending_and_sending,
    check_search_pages_through_100_000_rows_newest_first_on_an_index,
}

const LEASE: Duration = Duration::from_secs(30);

/// `secs` after a fixed instant: every check runs on its own clock.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 9, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

fn sms(campaign: &str) -> Communication {
    serde_json::from_value(sms_json(campaign, "Скидка 20% на тариф «Игровой»"))
        .expect("the harness builds valid communications")
}

fn email(campaign: &str) -> Communication {
    Communication {
        channel: ChannelId::Email,
        recipient: "ivan@example.ru".into(),
        ..sms(campaign)
    }
}

fn with_priority(priority: u8) -> Communication {
    Communication {
        priority,
        ..sms("prio")
    }
}

fn not_before(secs: i64) -> Communication {
    Communication {
        not_before: Some(at(secs)),
        ..sms("later")
    }
}

fn new_comms(comms: &[Communication], parts: u32) -> Vec<NewCommunication> {
    comms
        .iter()
        .map(|c| NewCommunication {
            comm: c.clone(),
            parts,
        })
        .collect()
}

async fn insert(store: &Store, comms: &[Communication], now: DateTime<Utc>) -> Vec<InsertOutcome> {
    store.insert_batch(&new_comms(comms, 1), now).await.unwrap()
}

async fn claim(store: &Store, instance: &str, limit: u32, now: DateTime<Utc>) -> Vec<Claimed> {
    store
        .claim_due(ChannelId::Sms, instance, limit, LEASE, now)
        .await
        .unwrap()
}

fn ids(claimed: &[Claimed]) -> Vec<Uuid> {
    claimed.iter().map(|c| c.comm.id).collect()
}

async fn view_of(store: &Store, id: Uuid) -> CommunicationView {
    store.view(id).await.unwrap().expect("stored")
}

async fn status_of(store: &Store, id: Uuid) -> Status {
    view_of(store, id).await.status
}

async fn finish(store: &Store, items: &[Finish], now: DateTime<Utc>) -> Vec<Uuid> {
    store.finish_batch(items, now).await.unwrap()
}

async fn respond(
    store: &Store,
    items: &[IncomingResponse],
    now: DateTime<Utc>,
) -> Vec<ResponseOutcome> {
    store.record_responses(items, now).await.unwrap()
}

async fn count(store: &Store, campaign: &str, status: Status) -> u64 {
    let rows = store.count_by_status(Some(campaign)).await.unwrap();
    rows.into_iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| n)
}

/// Takes every event out of the outbox, checking each is stored under its own routing key.
async fn drain_events(store: &Store) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let rows = store.outbox_fetch(1000).await.unwrap();
        if rows.is_empty() {
            return events;
        }
        for row in &rows {
            let event: Event = serde_json::from_str(&row.payload).unwrap();
            assert_eq!(row.routing_key, event.routing_key());
            events.push(event);
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        store.outbox_delete(&seqs).await.unwrap();
    }
}

/// Routing keys of the events about `id`, in commit order.
fn keys_for(events: &[Event], id: Uuid) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.communication_id() == id)
        .map(Event::routing_key)
        .collect()
}

/// The outcome of one attempt on a claimed communication, as the dispatcher reports it.
fn outcome(c: &Claimed, status: Status, classification: Classification, answer: &str) -> Finish {
    let number = c.attempts + 1;
    Finish {
        id: c.comm.id,
        claim: c.claim.clone(),
        campaign_id: c.comm.campaign_id.clone(),
        channel: c.comm.channel,
        attempt: Some(AttemptRow {
            number,
            started_at: at(100),
            duration_ms: 120,
            classification,
            answer: answer.into(),
            reason: None,
            external_id: None,
        }),
        status,
        reason: None,
        external_id: None,
        next_attempt_at: None,
        attempts: number,
    }
}

fn ext_id(id: Uuid) -> String {
    format!("smsc-{}", id.simple())
}

fn sent(c: &Claimed) -> Finish {
    let mut f = outcome(c, Status::Sent, Classification::Sent, "202 Accepted");
    f.external_id = Some(ext_id(c.comm.id));
    f.attempt.as_mut().unwrap().external_id = f.external_id.clone();
    f
}

/// Inserts `comms` (SMS, `parts` each) and takes them to `sent`, external id `ext_id(id)`.
async fn insert_sent(store: &Store, comms: &[Communication], parts: u32) {
    let out = store
        .insert_batch(&new_comms(comms, parts), at(0))
        .await
        .unwrap();
    assert!(out.iter().all(|o| *o == InsertOutcome::Accepted));
    let claimed = claim(store, "hub-a", comms.len() as u32, at(1)).await;
    assert_eq!(claimed.len(), comms.len());
    let finishes: Vec<Finish> = claimed.iter().map(sent).collect();
    let changed = finish(store, &finishes, at(2)).await;
    assert_eq!(changed.len(), comms.len());
}

fn report(correlation: Correlation, kind: ResponseKind, key: &str) -> IncomingResponse {
    IncomingResponse {
        channel: ChannelId::Sms,
        correlation,
        kind,
        occurred_at: Some(at(50)),
        detail: Some(format!("report {key}")),
        dedupe_key: key.into(),
        whole_message: true,
    }
}

fn part_report(id: Uuid, key: &str) -> IncomingResponse {
    IncomingResponse {
        whole_message: false,
        ..report(Correlation::Id(id), ResponseKind::Delivered, key)
    }
}

async fn check_insert_is_idempotent_by_id(store: &Store) {
    let a = sms("spring");
    let b = sms("spring");
    let out = insert(store, &[a.clone(), b.clone(), a.clone()], at(0)).await;
    use InsertOutcome::{Accepted, Duplicate};
    assert_eq!(out, [Accepted, Accepted, Duplicate]);

    // Across batches, and the first copy wins even when the second says something else.
    let c = sms("spring");
    let b_elsewhere = Communication {
        campaign_id: "autumn".into(),
        ..b.clone()
    };
    let out = insert(store, &[b_elsewhere, c], at(1)).await;
    assert_eq!(out, [Duplicate, Accepted]);
    assert_eq!(
        store.count_by_status(Some("spring")).await.unwrap(),
        [(Status::Received, 3)]
    );
    assert!(
        store
            .count_by_status(Some("autumn"))
            .await
            .unwrap()
            .is_empty()
    );

    // A batch longer than one statement: a duplicate in a later chunk of the same batch.
    let mut big: Vec<Communication> = (0..600).map(|_| sms("big")).collect();
    big.push(big[10].clone());
    big.push(a.clone());
    let out = insert(store, &big, at(2)).await;
    assert_eq!(out.iter().filter(|o| **o == Accepted).count(), 600);
    assert_eq!(out[600..], [Duplicate, Duplicate]);
    assert_eq!(count(store, "big", Status::Received).await, 600);
    assert_eq!(
        store.count_by_status(None).await.unwrap(),
        [(Status::Received, 603)]
    );
}

async fn check_insert_writes_one_status_event_per_accepted_communication(store: &Store) {
    let now_due = sms("spring");
    let later = not_before(60);
    insert(
        store,
        &[now_due.clone(), later.clone(), now_due.clone()],
        at(0),
    )
    .await;
    insert(store, std::slice::from_ref(&later), at(1)).await;

    let rows = store.outbox_fetch(100).await.unwrap();
    assert_eq!(rows.len(), 2, "duplicates write no event: {rows:?}");
    assert!(rows[0].seq < rows[1].seq);
    assert_eq!(rows[0].routing_key, "status.sms.received");
    assert_eq!(rows[1].routing_key, "status.sms.scheduled");
    let Event::Status(first) = serde_json::from_str(&rows[0].payload).unwrap() else {
        panic!("not a status event: {}", rows[0].payload);
    };
    assert_eq!(first.communication_id, now_due.id);
    assert_eq!(first.campaign_id, "spring");
    assert_eq!(first.status, Status::Received);
    assert_eq!(first.attempts, 0);
    assert_eq!(first.at, at(0));
    let second: Event = serde_json::from_str(&rows[1].payload).unwrap();
    assert_eq!(second.communication_id(), later.id);
    assert_eq!(status_of(store, later.id).await, Status::Scheduled);

    // Fetching does not consume; deleting does.
    assert_eq!(store.outbox_fetch(1).await.unwrap().len(), 1);
    store.outbox_delete(&[rows[0].seq]).await.unwrap();
    let left = store.outbox_fetch(100).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].seq, rows[1].seq);
    store.outbox_delete(&[rows[1].seq]).await.unwrap();
    assert!(store.outbox_fetch(100).await.unwrap().is_empty());
}

async fn check_claim_due_claims_only_due_communications_in_priority_order(store: &Store) {
    let low = with_priority(1);
    let mid = with_priority(5);
    let high = with_priority(9);
    let urgent_later = Communication {
        priority: 9,
        ..not_before(100)
    };
    let first_of_two = not_before(20);
    let second_of_two = not_before(30);
    let other_channel = email("prio");
    insert(
        store,
        &[
            low.clone(),
            urgent_later.clone(),
            mid.clone(),
            high.clone(),
            second_of_two.clone(),
            first_of_two.clone(),
            other_channel.clone(),
        ],
        at(0),
    )
    .await;

    let got = claim(store, "hub-a", 2, at(1)).await;
    assert_eq!(
        ids(&got),
        [high.id, mid.id],
        "highest priority first, at most the limit"
    );
    assert_eq!(
        got[0].comm, high,
        "the communication comes back as it was stored"
    );
    assert_eq!(got[0].attempts, 0);
    assert_eq!(status_of(store, high.id).await, Status::Sending);
    assert_eq!(status_of(store, mid.id).await, Status::Sending);

    let got = claim(store, "hub-a", 10, at(2)).await;
    assert_eq!(
        ids(&got),
        [low.id],
        "not_before in the future is not due yet"
    );
    assert!(claim(store, "hub-a", 10, at(19)).await.is_empty());
    assert_eq!(status_of(store, urgent_later.id).await, Status::Scheduled);

    // Equal priority: the one due first goes first.
    let got = claim(store, "hub-a", 1, at(40)).await;
    assert_eq!(ids(&got), [first_of_two.id]);
    let got = claim(store, "hub-a", 10, at(40)).await;
    assert_eq!(ids(&got), [second_of_two.id]);

    let got = claim(store, "hub-a", 10, at(100)).await;
    assert_eq!(ids(&got), [urgent_later.id], "due exactly at not_before");

    // Another channel's communications are not claimed for SMS.
    assert_eq!(status_of(store, other_channel.id).await, Status::Received);
    let got = store
        .claim_due(ChannelId::Email, "hub-a", 10, LEASE, at(100))
        .await
        .unwrap();
    assert_eq!(ids(&got), [other_channel.id]);
}

async fn check_a_claim_is_not_handed_out_again_until_its_lease_is_reaped(store: &Store) {
    let a = sms("lease");
    let b = sms("lease");
    insert(store, &[a.clone(), b.clone()], at(0)).await;
    let first = claim(store, "hub-a", 10, at(1)).await;
    assert_eq!(first.len(), 2);
    let late = sms("lease");
    insert(store, std::slice::from_ref(&late), at(20)).await;
    let third = claim(store, "hub-b", 10, at(20)).await;
    assert_eq!(ids(&third), [late.id]);

    // While the lease runs nobody gets them again, and nothing is reaped.
    assert!(claim(store, "hub-b", 10, at(25)).await.is_empty());
    assert_eq!(store.reap_expired_claims(at(30)).await.unwrap(), 0);
    drain_events(store).await;

    // hub-a's lease (until 31 s) ran out; hub-b's (until 50 s) did not.
    assert_eq!(store.reap_expired_claims(at(40)).await.unwrap(), 2);
    for id in [a.id, b.id] {
        let view = view_of(store, id).await;
        assert_eq!(view.status, Status::RetryWait);
        assert_eq!(view.next_attempt_at, Some(at(40)));
        assert!(view.reason.unwrap().contains("claim expired"));
    }
    assert_eq!(status_of(store, late.id).await, Status::Sending);
    let events = drain_events(store).await;
    assert_eq!(events.len(), 2);
    assert_eq!(keys_for(&events, a.id), ["status.sms.retry_wait"]);

    let again = claim(store, "hub-b", 10, at(40)).await;
    let got: HashSet<Uuid> = ids(&again).into_iter().collect();
    assert_eq!(got, HashSet::from([a.id, b.id]));
    // The abandoned attempt counts: the next one gets the next number.
    assert!(again.iter().all(|c| c.attempts == 1));
    assert_eq!(count(store, "lease", Status::Sending).await, 3);
}

async fn check_two_claimers_never_get_the_same_communication(store: &Store) {
    let total = 2000;
    let comms: Vec<Communication> = (0..total).map(|_| sms("bulk")).collect();
    insert(store, &comms, at(0)).await;
    let claimers = if store.backend() == "postgres" { 4 } else { 2 };
    let tasks: Vec<_> = (0..claimers)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let instance = format!("hub-{n}");
                let mut got = Vec::new();
                loop {
                    let batch = claim(&store, &instance, 50, at(1)).await;
                    assert!(batch.len() <= 50, "{} over the limit", batch.len());
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(ids(&batch));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "a communication was claimed twice"
    );
    assert_eq!(distinct, comms.iter().map(|c| c.id).collect::<HashSet<_>>());
    assert_eq!(count(store, "bulk", Status::Sending).await, total as u64);
}

async fn check_finish_batch_records_outcomes_and_ignores_claims_taken_over(store: &Store) {
    // `lost` is claimed by hub-a, whose lease runs out; hub-b takes it over.
    let lost = sms("finish");
    insert(store, std::slice::from_ref(&lost), at(0)).await;
    let lost_by_a = claim(store, "hub-a", 10, at(0)).await.remove(0);
    assert_eq!(store.reap_expired_claims(at(31)).await.unwrap(), 1);
    assert_eq!(ids(&claim(store, "hub-b", 10, at(31)).await), [lost.id]);

    let (ok, busy, refused) = (sms("finish"), sms("finish"), sms("finish"));
    insert(store, &[ok.clone(), busy.clone(), refused.clone()], at(32)).await;
    let claimed = claim(store, "hub-a", 10, at(33)).await;
    assert_eq!(claimed.len(), 3);
    let of = |id: Uuid| claimed.iter().find(|c| c.comm.id == id).unwrap();
    drain_events(store).await;

    let mut retry = outcome(of(busy.id), Status::RetryWait, Classification::Retry, "503");
    retry.reason = Some("HTTP 503".into());
    retry.next_attempt_at = Some(at(60));
    let mut fail = outcome(
        of(refused.id),
        Status::Failed,
        Classification::Fail,
        "400 bad",
    );
    fail.reason = Some("invalid recipient".into());
    let stale = sent(&lost_by_a);
    let items = [sent(of(ok.id)), retry, fail, stale];
    let changed = finish(store, &items, at(34)).await;
    let changed: HashSet<Uuid> = changed.into_iter().collect();
    assert_eq!(changed, HashSet::from([ok.id, busy.id, refused.id]));

    let view = view_of(store, ok.id).await;
    assert_eq!(view.status, Status::Sent);
    assert_eq!(view.external_id, Some(ext_id(ok.id)));
    assert_eq!(view.next_attempt_at, None);
    assert_eq!(view.attempts.len(), 1);
    let attempt = &view.attempts[0];
    assert_eq!(attempt.number, 1);
    assert_eq!(attempt.classification, Classification::Sent);
    assert_eq!(attempt.answer, "202 Accepted");
    assert_eq!(attempt.duration_ms, 120);
    assert_eq!(attempt.started_at, at(100));
    assert_eq!(attempt.external_id, Some(ext_id(ok.id)));

    let view = view_of(store, busy.id).await;
    assert_eq!(view.status, Status::RetryWait);
    assert_eq!(view.next_attempt_at, Some(at(60)));
    assert_eq!(view.reason.as_deref(), Some("HTTP 503"));
    assert_eq!(view.attempts[0].classification, Classification::Retry);
    assert_eq!(view.attempts[0].answer, "503");

    let view = view_of(store, refused.id).await;
    assert_eq!(view.status, Status::Failed);
    assert_eq!(view.reason.as_deref(), Some("invalid recipient"));
    assert_eq!(view.attempts[0].classification, Classification::Fail);

    // The claim hub-b holds is untouched; only hub-a's attempt is logged.
    let view = view_of(store, lost.id).await;
    assert_eq!(view.status, Status::Sending);
    assert_eq!(view.external_id, None);
    assert_eq!(view.attempts.len(), 1);

    let events = drain_events(store).await;
    assert_eq!(keys_for(&events, ok.id), ["status.sms.sent"]);
    assert_eq!(keys_for(&events, busy.id), ["status.sms.retry_wait"]);
    assert_eq!(keys_for(&events, refused.id), ["status.sms.failed"]);
    assert!(keys_for(&events, lost.id).is_empty());
    let Some(Event::Status(sent_event)) = events.iter().find(|e| e.communication_id() == ok.id)
    else {
        panic!("no status event for {}", ok.id);
    };
    assert_eq!(sent_event.external_id, Some(ext_id(ok.id)));
    assert_eq!(sent_event.attempts, 1);

    // An outcome written twice changes nothing the second time.
    let again = finish(store, &[sent(of(ok.id))], at(35)).await;
    assert!(again.is_empty());
    assert!(drain_events(store).await.is_empty());

    // The retry is due again at its time, carrying its attempt count.
    assert!(claim(store, "hub-a", 10, at(59)).await.is_empty());
    let retried = claim(store, "hub-a", 10, at(60)).await;
    assert_eq!(ids(&retried), [busy.id]);
    assert_eq!(retried[0].attempts, 1);
}

async fn check_every_attempt_is_logged_when_a_claim_was_taken_over(store: &Store) {
    // hub-a claims, stalls past its lease, and hub-b takes the communication over. Both
    // attempts really happened, so both belong in the attempt log.
    let c = sms("takeover");
    insert(store, std::slice::from_ref(&c), at(0)).await;
    let by_a = claim(store, "hub-a", 1, at(0)).await.remove(0);
    store.reap_expired_claims(at(31)).await.unwrap();
    let by_b = claim(store, "hub-b", 1, at(31)).await.remove(0);

    let late_a = outcome(
        &by_a,
        Status::RetryWait,
        Classification::Retry,
        "504 from a",
    );
    assert!(finish(store, &[late_a], at(32)).await.is_empty());
    let changed = finish(store, &[sent(&by_b)], at(33)).await;
    assert_eq!(changed, [c.id]);

    let view = view_of(store, c.id).await;
    assert_eq!(view.status, Status::Sent);
    let answers: Vec<&str> = view.attempts.iter().map(|a| a.answer.as_str()).collect();
    assert_eq!(
        answers.len(),
        2,
        "both attempts are logged, the one that sent it too: {answers:?}"
    );
    assert!(answers.contains(&"202 Accepted"), "{answers:?}");
}

async fn check_release_gives_claims_back_as_scheduled_at_the_given_time(store: &Store) {
    let (a, b) = (sms("release"), sms("release"));
    insert(store, &[a.clone(), b.clone()], at(0)).await;
    let claimed = claim(store, "hub-a", 10, at(1)).await;
    drain_events(store).await;

    // Only the holder of the claim can give it back.
    let items: Vec<(Claimed, String)> = claimed
        .iter()
        .map(|c| (c.clone(), "outside the send window".to_owned()))
        .collect();
    let forged: Vec<(Claimed, String)> = items
        .iter()
        .map(|(c, r)| {
            let mut c = c.clone();
            c.claim = "hub-b:not-this-claim".into();
            (c, r.clone())
        })
        .collect();
    store.release(&forged, at(3600), at(2)).await.unwrap();
    assert_eq!(count(store, "release", Status::Sending).await, 2);

    store.release(&items, at(3600), at(2)).await.unwrap();
    for id in [a.id, b.id] {
        let view = view_of(store, id).await;
        assert_eq!(view.status, Status::Scheduled);
        assert_eq!(view.next_attempt_at, Some(at(3600)));
        assert_eq!(view.reason.as_deref(), Some("outside the send window"));
        assert!(view.attempts.is_empty(), "a release is not an attempt");
    }
    let events = drain_events(store).await;
    assert_eq!(keys_for(&events, a.id), ["status.sms.scheduled"]);
    assert_eq!(keys_for(&events, b.id), ["status.sms.scheduled"]);

    assert!(claim(store, "hub-a", 10, at(3599)).await.is_empty());
    let again = claim(store, "hub-b", 10, at(3600)).await;
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|c| c.attempts == 0));
}

async fn check_responses_correlate_by_id_and_by_external_id(store: &Store) {
    let (a, b) = (sms("dlr"), sms("dlr"));
    insert_sent(store, &[a.clone(), b.clone()], 1).await;
    drain_events(store).await;

    let out = respond(
        store,
        &[
            report(Correlation::Id(a.id), ResponseKind::Delivered, "a-1"),
            report(
                Correlation::External(ext_id(b.id)),
                ResponseKind::Delivered,
                "b-1",
            ),
            report(
                Correlation::Id(Uuid::new_v4()),
                ResponseKind::Delivered,
                "x",
            ),
            report(
                Correlation::External("no-such-message".into()),
                ResponseKind::Delivered,
                "y",
            ),
            // External ids are the channel's own: the same one on another channel is unknown.
            IncomingResponse {
                channel: ChannelId::Email,
                ..report(
                    Correlation::External(ext_id(a.id)),
                    ResponseKind::Opened,
                    "z",
                )
            },
            // So is our id: a Wink webhook cannot speak for an SMS.
            IncomingResponse {
                channel: ChannelId::Wink,
                ..report(Correlation::Id(a.id), ResponseKind::Clicked, "w")
            },
        ],
        at(60),
    )
    .await;
    use ResponseOutcome::{NotFound, Recorded};
    assert_eq!(
        out,
        [Recorded, Recorded, NotFound, NotFound, NotFound, NotFound]
    );

    for (c, key) in [(&a, "a-1"), (&b, "b-1")] {
        let view = view_of(store, c.id).await;
        assert_eq!(view.status, Status::Delivered);
        assert_eq!(view.responses.len(), 1);
        let r = &view.responses[0];
        assert_eq!(r.kind, ResponseKind::Delivered);
        assert_eq!(r.communication_id, c.id);
        assert_eq!(r.received_at, at(60));
        assert_eq!(r.occurred_at, Some(at(50)));
        assert_eq!(r.detail, Some(format!("report {key}")));
    }
    let events = drain_events(store).await;
    assert_eq!(events.len(), 4, "{events:?}");
    for c in [&a, &b] {
        assert_eq!(
            keys_for(&events, c.id),
            ["response.sms.delivered", "status.sms.delivered"]
        );
    }
}

async fn check_a_repeated_report_is_recorded_once(store: &Store) {
    let c = sms("dup-dlr");
    insert_sent(store, std::slice::from_ref(&c), 1).await;
    drain_events(store).await;
    let clicked = report(Correlation::Id(c.id), ResponseKind::Clicked, "click-1");
    let out = respond(store, &[clicked.clone(), clicked.clone()], at(60)).await;
    assert_eq!(out, [ResponseOutcome::Recorded, ResponseOutcome::Duplicate]);
    let out = respond(store, &[clicked], at(61)).await;
    assert_eq!(out, [ResponseOutcome::Duplicate]);
    let view = view_of(store, c.id).await;
    assert_eq!(view.responses.len(), 1);
    assert_eq!(
        view.status,
        Status::Sent,
        "a click does not change the status"
    );
    assert_eq!(
        keys_for(&drain_events(store).await, c.id),
        ["response.sms.clicked"]
    );
}

async fn check_a_multi_part_sms_is_delivered_when_every_part_is(store: &Store) {
    let (per_part, whole) = (sms("parts"), sms("parts"));
    insert_sent(store, &[per_part.clone(), whole.clone()], 2).await;
    drain_events(store).await;

    let out = respond(store, &[part_report(per_part.id, "part-1")], at(60)).await;
    assert_eq!(out, [ResponseOutcome::Recorded]);
    assert_eq!(status_of(store, per_part.id).await, Status::Sent);
    let out = respond(store, &[part_report(per_part.id, "part-1")], at(61)).await;
    assert_eq!(out, [ResponseOutcome::Duplicate], "one part reported twice");
    assert_eq!(status_of(store, per_part.id).await, Status::Sent);
    respond(store, &[part_report(per_part.id, "part-2")], at(62)).await;
    assert_eq!(status_of(store, per_part.id).await, Status::Delivered);

    // A gateway that reports for the whole message needs one report.
    let r = report(Correlation::Id(whole.id), ResponseKind::Delivered, "all");
    respond(store, &[r], at(63)).await;
    assert_eq!(status_of(store, whole.id).await, Status::Delivered);

    let events = drain_events(store).await;
    assert_eq!(
        keys_for(&events, per_part.id),
        [
            "response.sms.delivered",
            "response.sms.delivered",
            "status.sms.delivered"
        ]
    );
}

async fn check_undelivered_fails_and_responses_never_change_a_final_status(store: &Store) {
    let (lost, late) = (sms("final"), sms("final"));
    insert_sent(store, &[lost.clone(), late.clone()], 1).await;
    let cancelled = sms("to-cancel");
    insert(store, std::slice::from_ref(&cancelled), at(3)).await;
    assert_eq!(store.cancel_campaign("to-cancel", at(4)).await.unwrap(), 1);
    drain_events(store).await;

    let r = report(Correlation::Id(lost.id), ResponseKind::Undelivered, "u-1");
    respond(store, &[r], at(60)).await;
    let view = view_of(store, lost.id).await;
    assert_eq!(view.status, Status::Failed);
    assert_eq!(view.reason.as_deref(), Some("report u-1"));

    // Delivered after failed, delivered for a cancelled one: stored, but the status stays.
    let out = respond(
        store,
        &[
            report(Correlation::Id(lost.id), ResponseKind::Delivered, "d-1"),
            report(
                Correlation::Id(cancelled.id),
                ResponseKind::Delivered,
                "d-2",
            ),
        ],
        at(61),
    )
    .await;
    assert_eq!(out, [ResponseOutcome::Recorded, ResponseOutcome::Recorded]);
    assert_eq!(status_of(store, lost.id).await, Status::Failed);
    let view = view_of(store, cancelled.id).await;
    assert_eq!(view.status, Status::Cancelled);
    assert_eq!(view.responses.len(), 1);

    // Delivered, then undelivered: the first final status holds.
    let out = respond(
        store,
        &[
            report(Correlation::Id(late.id), ResponseKind::Delivered, "d-3"),
            report(Correlation::Id(late.id), ResponseKind::Undelivered, "u-3"),
        ],
        at(62),
    )
    .await;
    assert_eq!(out, [ResponseOutcome::Recorded, ResponseOutcome::Recorded]);
    assert_eq!(status_of(store, late.id).await, Status::Delivered);

    let events = drain_events(store).await;
    assert_eq!(
        keys_for(&events, lost.id),
        [
            "response.sms.undelivered",
            "status.sms.failed",
            "response.sms.delivered"
        ]
    );
    assert_eq!(keys_for(&events, cancelled.id), ["response.sms.delivered"]);
    assert_eq!(
        keys_for(&events, late.id),
        [
            "response.sms.delivered",
            "status.sms.delivered",
            "response.sms.undelivered"
        ]
    );
}

async fn check_concurrent_part_reports_deliver_a_multi_part_sms(store: &Store) {
    // Two ingest paths (two hub instances) get the two parts' reports of the same message at
    // the same moment; every message still ends delivered.
    let comms: Vec<Communication> = (0..200).map(|_| sms("race-parts")).collect();
    insert_sent(store, &comms, 2).await;
    let together = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let tasks: Vec<_> = ["part-1", "part-2"]
        .into_iter()
        .map(|key| {
            let (store, together) = (store.clone(), together.clone());
            let ids: Vec<Uuid> = comms.iter().map(|c| c.id).collect();
            tokio::spawn(async move {
                for id in ids {
                    together.wait().await;
                    let out = respond(&store, &[part_report(id, key)], at(60)).await;
                    assert_eq!(out, [ResponseOutcome::Recorded]);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let rows = store.count_by_status(Some("race-parts")).await.unwrap();
    assert_eq!(rows, [(Status::Delivered, 200)], "parts reported at once");
}

async fn check_cancel_campaign_cancels_only_its_pending_communications(store: &Store) {
    let (received, retrying, was_sent, in_flight) =
        (sms("spring"), sms("spring"), sms("spring"), sms("spring"));
    let scheduled = Communication {
        campaign_id: "spring".into(),
        ..not_before(3600)
    };
    let other = sms("autumn");
    insert(store, &[retrying.clone(), was_sent.clone()], at(0)).await;
    let claimed = claim(store, "hub-a", 10, at(0)).await;
    let of = |id: Uuid| claimed.iter().find(|c| c.comm.id == id).unwrap();
    let mut retry = outcome(
        of(retrying.id),
        Status::RetryWait,
        Classification::Retry,
        "503",
    );
    retry.next_attempt_at = Some(at(60));
    finish(store, &[retry, sent(of(was_sent.id))], at(1)).await;
    insert(store, std::slice::from_ref(&in_flight), at(2)).await;
    assert_eq!(ids(&claim(store, "hub-a", 10, at(2)).await), [in_flight.id]);
    insert(
        store,
        &[received.clone(), scheduled.clone(), other.clone()],
        at(3),
    )
    .await;
    drain_events(store).await;

    assert_eq!(store.cancel_campaign("spring", at(10)).await.unwrap(), 3);
    for c in [&received, &scheduled, &retrying] {
        let view = view_of(store, c.id).await;
        assert_eq!(view.status, Status::Cancelled, "{}", c.id);
        assert_eq!(view.reason.as_deref(), Some("campaign cancelled"));
    }
    assert_eq!(status_of(store, was_sent.id).await, Status::Sent);
    assert_eq!(status_of(store, in_flight.id).await, Status::Sending);
    assert_eq!(status_of(store, other.id).await, Status::Received);
    assert_eq!(store.cancelled_campaigns().await.unwrap(), ["spring"]);

    let events = drain_events(store).await;
    assert_eq!(events.len(), 3);
    for c in [&received, &scheduled, &retrying] {
        assert_eq!(keys_for(&events, c.id), ["status.sms.cancelled"]);
    }
    let Event::Status(e) = &events[0] else {
        panic!("not a status event: {events:?}")
    };
    assert_eq!(e.campaign_id, "spring");
    assert_eq!(e.reason.as_deref(), Some("campaign cancelled"));

    // Again: nothing left to cancel, remembered once. An empty campaign is remembered too.
    assert_eq!(store.cancel_campaign("spring", at(11)).await.unwrap(), 0);
    assert_eq!(store.cancel_campaign("ghost", at(12)).await.unwrap(), 0);
    let mut remembered = store.cancelled_campaigns().await.unwrap();
    remembered.sort();
    assert_eq!(remembered, ["ghost", "spring"]);
    assert!(drain_events(store).await.is_empty());
    // A cancelled communication is never claimed.
    let got = claim(store, "hub-a", 10, at(3600)).await;
    assert_eq!(ids(&got), [other.id]);
}

async fn check_cancel_campaign_covers_more_than_one_chunk(store: &Store) {
    let total = 5200;
    let comms: Vec<Communication> = (0..total).map(|_| sms("huge")).collect();
    insert(store, &comms, at(0)).await;
    insert(store, &[sms("small")], at(0)).await;
    drain_events(store).await;
    assert_eq!(
        store.cancel_campaign("huge", at(1)).await.unwrap(),
        total as u64
    );
    assert_eq!(
        store.count_by_status(Some("huge")).await.unwrap(),
        [(Status::Cancelled, total as u64)]
    );
    assert_eq!(count(store, "small", Status::Received).await, 1);
    let events = drain_events(store).await;
    assert_eq!(events.len(), total);
    assert!(
        events
            .iter()
            .all(|e| e.routing_key() == "status.sms.cancelled")
    );
}

async fn check_cancel_never_takes_a_communication_a_claimer_holds(store: &Store) {
    // A dispatcher keeps claiming while an operator cancels the campaign: whatever was handed
    // to the dispatcher stays `sending` (it may already be on the wire); the rest is cancelled.
    let total = 3000;
    let comms: Vec<Communication> = (0..total).map(|_| sms("racing")).collect();
    insert(store, &comms, at(0)).await;
    let claimer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut got = HashSet::new();
            loop {
                let batch = claim(&store, "hub-a", 20, at(1)).await;
                if batch.is_empty() {
                    return got;
                }
                got.extend(ids(&batch));
            }
        })
    };
    // Let the claimer get going, so the two really overlap.
    while count(store, "racing", Status::Sending).await == 0 {
        tokio::task::yield_now().await;
    }
    let cancelled = store.cancel_campaign("racing", at(1)).await.unwrap();
    let claimed = claimer.await.unwrap();

    let mut taken_from_claimer = 0;
    for id in &claimed {
        if status_of(store, *id).await != Status::Sending {
            taken_from_claimer += 1;
        }
    }
    assert_eq!(
        taken_from_claimer, 0,
        "communications handed to a claimer were cancelled under it"
    );
    assert_eq!(claimed.len() as u64 + cancelled, total as u64);
    assert_eq!(
        count(store, "racing", Status::Cancelled).await,
        cancelled,
        "the count returned is the count cancelled"
    );
}

async fn check_paused_channels_round_trip(store: &Store) {
    assert!(store.paused_channels().await.unwrap().is_empty());
    store.set_paused(ChannelId::Sms, true, at(0)).await.unwrap();
    store
        .set_paused(ChannelId::Email, true, at(1))
        .await
        .unwrap();
    store
        .set_paused(ChannelId::Email, true, at(2))
        .await
        .unwrap();
    let paused: HashSet<ChannelId> = store.paused_channels().await.unwrap().into_iter().collect();
    assert_eq!(paused, HashSet::from([ChannelId::Sms, ChannelId::Email]));
    store
        .set_paused(ChannelId::Sms, false, at(3))
        .await
        .unwrap();
    assert_eq!(store.paused_channels().await.unwrap(), [ChannelId::Email]);
    store
        .set_paused(ChannelId::Email, false, at(4))
        .await
        .unwrap();
    assert!(store.paused_channels().await.unwrap().is_empty());
}

async fn check_view_shows_unknown_as_none_and_rejections_as_rejected(store: &Store) {
    assert!(store.view(Uuid::new_v4()).await.unwrap().is_none());

    let mut payload = sms_json("spring", "x");
    payload["recipient"] = "not-a-number".into();
    let id: Uuid = payload["id"].as_str().unwrap().parse().unwrap();
    let reason = "recipient: is not an MSISDN";
    store
        .record_rejection(Some(&id.to_string()), reason, &payload.to_string(), at(5))
        .await
        .unwrap();
    let view = store
        .view(id)
        .await
        .unwrap()
        .expect("a rejection is visible");
    assert_eq!(view.status, Status::Rejected);
    assert_eq!(view.reason.as_deref(), Some(reason));
    assert_eq!(view.channel, ChannelId::Sms);
    assert_eq!(view.campaign_id, "spring");
    assert_eq!(view.customer_id, "cust-1");
    assert_eq!(view.received_at, at(5));
    assert!(view.attempts.is_empty() && view.responses.is_empty());

    // A rejection that does not say which channel or campaign is not a communication to show.
    let unreadable = Uuid::new_v4();
    let payload = serde_json::json!({"id": unreadable.to_string(), "channel": "fax"});
    store
        .record_rejection(
            Some(&unreadable.to_string()),
            "channel: unknown",
            &payload.to_string(),
            at(6),
        )
        .await
        .unwrap();
    assert!(store.view(unreadable).await.unwrap().is_none());
    store
        .record_rejection(None, "not JSON", "hello", at(7))
        .await
        .unwrap();
    // Rejections are not communications.
    assert!(store.count_by_status(None).await.unwrap().is_empty());
}

async fn check_depth_by_channel_counts_pending_and_sending(store: &Store) {
    assert!(store.depth_by_channel().await.unwrap().is_empty());
    let sms_comms = [sms("depth"), sms("depth"), sms("depth"), not_before(600)];
    insert(store, &sms_comms, at(0)).await;
    insert(store, &[email("depth")], at(0)).await;
    let claimed = claim(store, "hub-a", 2, at(1)).await;
    assert_eq!(claimed.len(), 2);
    // One of the two is sent: neither waiting nor in flight any more.
    finish(store, &[sent(&claimed[0])], at(2)).await;

    let depth = store.depth_by_channel().await.unwrap();
    let of = |channel: ChannelId| {
        depth
            .iter()
            .find(|(c, _)| *c == channel)
            .map(|(_, d)| (d.pending, d.sending))
    };
    assert_eq!(of(ChannelId::Sms), Some((2, 1)));
    assert_eq!(of(ChannelId::Email), Some((1, 0)));
    assert!(of(ChannelId::Wink).is_none_or(|d| d == (0, 0)));
}

async fn check_a_late_outcome_never_lands_on_a_newer_claim_of_the_same_instance(store: &Store) {
    // hub-a's outcome is held up (say, by a store outage) past its lease; the communication is
    // reaped and claimed again by hub-a itself. The old outcome must not finish the new claim.
    let c = sms("same-instance");
    insert(store, std::slice::from_ref(&c), at(0)).await;
    let first = claim(store, "hub-a", 1, at(0)).await.remove(0);
    store.reap_expired_claims(at(31)).await.unwrap();
    let second = claim(store, "hub-a", 1, at(31)).await.remove(0);
    assert_ne!(first.claim, second.claim);
    assert!(finish(store, &[sent(&first)], at(32)).await.is_empty());
    assert_eq!(status_of(store, c.id).await, Status::Sending);
    assert_eq!(finish(store, &[sent(&second)], at(33)).await, [c.id]);
    assert_eq!(status_of(store, c.id).await, Status::Sent);
}

async fn check_a_report_that_beats_the_outcome_is_applied_once_it_is_sent(store: &Store) {
    // The gateway's delivery report arrives before the finisher wrote `sent`.
    let (early, failed_early) = (sms("early"), sms("early"));
    insert(store, &[early.clone(), failed_early.clone()], at(0)).await;
    let claimed = claim(store, "hub-a", 10, at(1)).await;
    drain_events(store).await;
    let got = respond(
        store,
        &[
            report(Correlation::Id(early.id), ResponseKind::Delivered, "d"),
            report(
                Correlation::Id(failed_early.id),
                ResponseKind::Undelivered,
                "u",
            ),
        ],
        at(2),
    )
    .await;
    assert_eq!(got, [ResponseOutcome::Recorded, ResponseOutcome::Recorded]);
    assert_eq!(
        status_of(store, early.id).await,
        Status::Sending,
        "the attempt is still out"
    );
    let finishes: Vec<Finish> = claimed.iter().map(sent).collect();
    finish(store, &finishes, at(3)).await;
    assert_eq!(status_of(store, early.id).await, Status::Delivered);
    assert_eq!(status_of(store, failed_early.id).await, Status::Failed);
    let events = drain_events(store).await;
    assert_eq!(
        keys_for(&events, early.id),
        [
            "response.sms.delivered",
            "status.sms.sent",
            "status.sms.delivered"
        ]
    );
    assert_eq!(
        keys_for(&events, failed_early.id),
        [
            "response.sms.undelivered",
            "status.sms.sent",
            "status.sms.failed"
        ]
    );
}

/// Pages a search to its end, `limit` at a time, checking each page's order; returns the ids.
async fn page_through(store: &Store, q: &SearchQuery) -> Vec<Uuid> {
    let mut q = q.clone();
    let mut ids = Vec::new();
    let mut last: Option<(DateTime<Utc>, Uuid)> = None;
    loop {
        let rows = store.search(&q).await.unwrap();
        for r in &rows {
            let key = (r.received_at, r.id.to_string());
            if let Some((at, id)) = last {
                assert!(
                    key < (at, id.to_string()),
                    "newest first, ids breaking ties"
                );
            }
            last = Some((r.received_at, r.id));
            ids.push(r.id);
        }
        if rows.len() < q.limit as usize {
            return ids;
        }
        q.before = last;
    }
}

/// 100 000 communications, a thousand per second of receipt (ties broken by id): every filter
/// pages through exactly its rows, newest first, none twice, and the statement of a deep page
/// uses the search's indexes rather than a scan and a sort.
async fn check_search_pages_through_100_000_rows_newest_first_on_an_index(store: &Store) {
    const N: usize = 100_000;
    let recipients = [
        "+79001112233",
        "+79002223344",
        "Ivan@Example.RU",
        "wink-acc-1",
    ];
    let mut all = Vec::with_capacity(N);
    for batch in 0..(N / 1000) {
        let comms: Vec<Communication> = (0..1000)
            .map(|i| {
                let n = batch * 1000 + i;
                Communication {
                    campaign_id: format!("c-{}", n % 2),
                    customer_id: format!("cust-{}", n % 7),
                    recipient: recipients[n % recipients.len()].into(),
                    ..sms("unused")
                }
            })
            .collect();
        all.extend(comms.iter().map(|c| c.id));
        let out = insert(store, &comms, at(batch as i64)).await;
        assert!(out.iter().all(|o| *o == InsertOutcome::Accepted));
    }
    let q = |f: &dyn Fn(&mut SearchQuery)| {
        let mut q = SearchQuery {
            limit: 1000,
            ..SearchQuery::default()
        };
        f(&mut q);
        q
    };
    let everything = page_through(store, &q(&|_| {})).await;
    assert_eq!(everything.len(), N);
    assert_eq!(
        everything.iter().collect::<HashSet<_>>().len(),
        N,
        "no row twice"
    );
    assert_eq!(
        everything.iter().collect::<HashSet<_>>(),
        all.iter().collect::<HashSet<_>>()
    );
    let campaign = page_through(store, &q(&|q| q.campaign_id = Some("c-1".into()))).await;
    assert_eq!(campaign.len(), N / 2);
    // Typed with other case and spaces around: the same recipient.
    let by_recipient = page_through(
        store,
        &q(&|q| {
            q.recipient = Some("  ivan@example.ru ".into());
            q.limit = 777;
        }),
    )
    .await;
    assert_eq!(by_recipient.len(), N / 4);
    let window = page_through(
        store,
        &q(&|q| {
            q.from = Some(at(10));
            q.to = Some(at(20));
            q.customer_id = Some("cust-3".into());
            q.status = Some(Status::Received);
            q.channel = Some(ChannelId::Sms);
        }),
    )
    .await;
    let expected = (10_000..20_000).filter(|n| n % 7 == 3).count();
    assert_eq!(window.len(), expected);
    assert!(
        page_through(store, &q(&|q| q.channel = Some(ChannelId::Email)))
            .await
            .is_empty()
    );

    // A deep page (keyset after row 50 000) of each filter, read in index order (on the filter's own index, or on
    // `communications_recent` with the filter applied where the planner finds that cheaper), with the
    // statistics autovacuum would have gathered by now on a table this size.
    match store {
        Store::Postgres(pool) => {
            sqlx::query("ANALYZE communications")
                .execute(pool)
                .await
                .unwrap();
        }
        Store::Sqlite { write, .. } => {
            sqlx::query("ANALYZE communications")
                .execute(write)
                .await
                .unwrap();
        }
    }
    let rows = store.search(&q(&|q| q.limit = 50_000)).await.unwrap();
    let mid = rows.last().map(|r| (r.received_at, r.id));
    for filter in [
        q(&|q| q.before = mid),
        q(&|q| {
            q.before = mid;
            q.campaign_id = Some("c-0".into());
        }),
        q(&|q| {
            q.before = mid;
            q.recipient = Some("+79001112233".into());
        }),
        q(&|q| {
            q.before = mid;
            q.customer_id = Some("cust-1".into());
        }),
    ] {
        let plan = store.explain_search(&filter).await.unwrap();
        let indexes = [
            "communications_recent",
            "communications_by_campaign",
            "communications_by_customer",
            "communications_by_recipient",
            "communications_by_channel_status",
        ];
        assert!(
            indexes.iter().any(|i| plan.contains(i)),
            "a search index expected in the plan:\n{plan}"
        );
        assert!(
            !plan.to_uppercase().contains("TEMP B-TREE")
                && !plan.contains("Sort")
                && !plan.contains("Seq Scan"),
            "no sort step and no full scan expected:\n{plan}"
        );
    }
}
