//! The store's statements, written once and instantiated for SQLite and PostgreSQL by
//! [`backend!`]. Both dialects accept the same SQL here (`ON CONFLICT`, `RETURNING`,
//! `UPDATE … FROM` a `VALUES` CTE, partial indexes); the one real difference, row locking for
//! concurrent claimers, is the macro's `lock` parameter. Binds go through `QueryBuilder` so each
//! backend gets its own placeholder syntax. Statements whose text depends on the batch size
//! (multi-row `VALUES`, `IN` lists) are not prepared and cached (`persistent(false)`): each size
//! would be another cached statement on every connection, and on the server.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use clm_contracts::api::CommunicationView;
use clm_contracts::{
    AttemptRecord, ChannelId, Classification, Communication, Event, ResponseEvent, ResponseRecord,
    Status, StatusEvent,
};
use uuid::Uuid;

use super::{
    ChannelDepth, Claimed, Correlation, Finish, IncomingResponse, InsertOutcome, NewCommunication,
    OutboxRow, ResponseOutcome, Result, SearchQuery, SearchRow, StoreError, UnknownRow, event_row,
    from_ms, ms, parse_channel, parse_status,
};

/// Rows per multi-row statement: 13 binds a row stays under SQLite's 32 766 and PostgreSQL's
/// 65 535 bind limits.
const CHUNK: usize = 1000;
/// Pending communications moved to `cancelled` per transaction when a campaign is cancelled.
const CANCEL_CHUNK: i64 = 5000;
const PENDING: &str = "('received', 'scheduled', 'retry_wait')";
const FINAL: &str = "('delivered', 'failed', 'expired', 'cancelled', 'rejected')";

// Eight plain fields of one event; a builder would only rename them.
#[allow(clippy::too_many_arguments)]
fn status_event(
    id: Uuid,
    campaign_id: &str,
    channel: ChannelId,
    status: Status,
    attempts: u32,
    reason: Option<String>,
    external_id: Option<String>,
    at: DateTime<Utc>,
) -> (String, String) {
    event_row(&Event::Status(StatusEvent {
        communication_id: id,
        campaign_id: campaign_id.to_owned(),
        channel,
        status,
        at,
        attempts,
        reason,
        external_id,
    }))
}

/// An e-mail address as the suppression list keeps it: trimmed, lower-cased.
pub fn normalize_address(address: &str) -> String {
    address.trim().to_lowercase()
}

/// The key a recipient is found by (`communications.recipient_key`): the first 16 bytes of
/// SHA-256 of the normalised address, hex. The same address typed with other case or spaces
/// around finds the same rows; no second plain copy of it sits in an index.
pub fn recipient_key(recipient: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(normalize_address(recipient).as_bytes())[..16])
}

fn parse_uuid(v: &str) -> Result<Uuid> {
    Uuid::parse_str(v).map_err(|_| StoreError::Corrupt {
        id: v.to_owned(),
        message: "id is not a UUID".into(),
    })
}

/// A row a bulk status change returned: id, channel, campaign, attempts.
type MovedRow = (String, String, String, i64);

macro_rules! backend {
    ($name:ident, $Db:ty, $Pool:ty, lock = $lock:literal, lock_row = $lock_row:literal, explain = $explain:literal) => {
        pub mod $name {
            /// How this database is asked for a statement's plan.
            const EXPLAIN: &str = $explain;
            use super::*;
            use sqlx::{QueryBuilder, Transaction};

            type Db = $Db;
            type Pool = $Pool;

            async fn push_events(
                tx: &mut Transaction<'_, Db>,
                events: &[(String, String)],
                now: i64,
            ) -> Result<()> {
                for chunk in events.chunks(CHUNK) {
                    let mut qb = QueryBuilder::<Db>::new(
                        "INSERT INTO outbox (routing_key, payload, created_at) ",
                    );
                    qb.push_values(chunk, |mut b, (key, payload)| {
                        b.push_bind(key.clone()).push_bind(payload.clone()).push_bind(now);
                    });
                    qb.build().persistent(false).execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Locks the rows of `ids` in id order (PostgreSQL), before a transaction writes
            /// several of them: every multi-row writer (outcomes, reports, releases) takes its
            /// locks in the same order, so two of them wait for each other instead of
            /// deadlocking. SQLite has one writer and needs none.
            async fn lock_in_order(tx: &mut Transaction<'_, Db>, ids: &[String]) -> Result<()> {
                if $lock_row.is_empty() || ids.is_empty() {
                    return Ok(());
                }
                let mut sorted: Vec<&String> = ids.iter().collect();
                sorted.sort_unstable();
                sorted.dedup();
                for chunk in sorted.chunks(CHUNK) {
                    let mut qb = QueryBuilder::<Db>::new("SELECT id FROM communications WHERE id IN (");
                    {
                        let mut sep = qb.separated(", ");
                        for id in chunk {
                            sep.push_bind((*id).clone());
                        }
                    }
                    qb.push(") ORDER BY id COLLATE \"C\"").push($lock_row);
                    qb.build().persistent(false).execute(&mut **tx).await?;
                }
                Ok(())
            }

            pub async fn renew_claim(
                w: &Pool,
                _r: &Pool,
                claim: &str,
                until: DateTime<Utc>,
                now: DateTime<Utc>,
            ) -> Result<HashSet<Uuid>> {
                let mut qb = QueryBuilder::<Db>::new("UPDATE communications SET claim_until = ");
                qb.push_bind(ms(until))
                    .push(" WHERE status = 'sending' AND claimed_by = ")
                    .push_bind(claim.to_owned())
                    .push(" AND claim_until >= ")
                    .push_bind(ms(now))
                    .push(" RETURNING id");
                let rows: Vec<(String,)> = qb.build_query_as().fetch_all(w).await?;
                rows.iter().map(|(id,)| parse_uuid(id)).collect()
            }

            /// Writes a status event for each row a bulk update moved to `status` (rows as
            /// `RETURNING id, channel, campaign_id, attempts`), and commits.
            async fn announce_and_commit(
                mut tx: Transaction<'_, Db>,
                rows: &[MovedRow],
                status: Status,
                reason: &str,
                now: DateTime<Utc>,
            ) -> Result<u64> {
                let mut events = Vec::with_capacity(rows.len());
                for (id, channel, campaign, attempts) in rows {
                    events.push(status_event(
                        parse_uuid(id)?, campaign, parse_channel(id, channel)?,
                        status, u32::try_from(*attempts).unwrap_or(0),
                        Some(reason.to_owned()), None, now,
                    ));
                }
                push_events(&mut tx, &events, ms(now)).await?;
                tx.commit().await?;
                Ok(rows.len() as u64)
            }

            pub async fn ping(_w: &Pool, r: &Pool) -> Result<()> {
                sqlx::query("SELECT 1").execute(r).await?;
                Ok(())
            }

            pub async fn insert_batch(
                w: &Pool,
                _r: &Pool,
                items: &[NewCommunication],
                now: DateTime<Utc>,
            ) -> Result<Vec<InsertOutcome>> {
                let now_ms = ms(now);
                let mut outcomes = vec![InsertOutcome::Duplicate; items.len()];
                let mut events = Vec::with_capacity(items.len());
                let mut tx = w.begin().await?;
                for (chunk_no, chunk) in items.chunks(CHUNK).enumerate() {
                    let mut qb = QueryBuilder::<Db>::new(
                        "INSERT INTO communications (id, channel, campaign_id, customer_id, \
                         payload, priority, status, attempts, parts, expires_at, \
                         next_attempt_at, received_at, updated_at, recipient_key) ",
                    );
                    qb.push_values(chunk, |mut b, it| {
                        let c = &it.comm;
                        let due = c.not_before.map(ms).unwrap_or(now_ms);
                        let status = if due > now_ms { Status::Scheduled } else { Status::Received };
                        b.push_bind(c.id.to_string())
                            .push_bind(c.channel.as_str())
                            .push_bind(c.campaign_id.clone())
                            .push_bind(c.customer_id.clone())
                            .push_bind(serde_json::to_string(c).expect("communication serializes"))
                            .push_bind(i64::from(c.priority))
                            .push_bind(status.as_str())
                            .push_bind(0_i64)
                            .push_bind(i64::from(it.parts))
                            .push_bind(c.expires_at.map(ms))
                            .push_bind(due.max(now_ms))
                            .push_bind(now_ms)
                            .push_bind(now_ms)
                            .push_bind(recipient_key(&c.recipient));
                    });
                    qb.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
                    let rows: Vec<(String,)> = qb.build_query_as().persistent(false).fetch_all(&mut *tx).await?;
                    let mut fresh: HashSet<String> = rows.into_iter().map(|r| r.0).collect();
                    for (i, it) in chunk.iter().enumerate() {
                        let c = &it.comm;
                        // Removing makes the first of two equal ids in one batch the accepted one.
                        if fresh.remove(&c.id.to_string()) {
                            outcomes[chunk_no * CHUNK + i] = InsertOutcome::Accepted;
                            let scheduled = c.not_before.is_some_and(|nb| nb > now);
                            let status = if scheduled { Status::Scheduled } else { Status::Received };
                            events.push(status_event(
                                c.id, &c.campaign_id, c.channel, status, 0, None, None, now,
                            ));
                        }
                    }
                }
                push_events(&mut tx, &events, now_ms).await?;
                tx.commit().await?;
                Ok(outcomes)
            }

            pub async fn record_rejection(
                w: &Pool,
                _r: &Pool,
                item_id: Option<&str>,
                reason: &str,
                payload: &str,
                now: DateTime<Utc>,
            ) -> Result<()> {
                let mut qb = QueryBuilder::<Db>::new(
                    "INSERT INTO rejections (item_id, received_at, reason, payload) VALUES (",
                );
                // Whatever was refused, its record must not be refused too.
                let clean = |v: &str| clm_contracts::communication::sanitize(v, 8192).into_owned();
                qb.push_bind(item_id.map(clean))
                    .push(", ")
                    .push_bind(ms(now))
                    .push(", ")
                    .push_bind(clean(reason))
                    .push(", ")
                    .push_bind(clean(payload))
                    .push(")");
                qb.build().execute(w).await?;
                Ok(())
            }

            pub async fn claim_due(
                w: &Pool,
                _r: &Pool,
                channel: ChannelId,
                instance: &str,
                limit: u32,
                lease: std::time::Duration,
                now: DateTime<Utc>,
            ) -> Result<Vec<Claimed>> {
                let now_ms = ms(now);
                let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4);
                let claim = format!("{instance}:{}", Uuid::now_v7().simple());
                let mut qb = QueryBuilder::<Db>::new(
                    "UPDATE communications SET status = 'sending', claimed_by = ",
                );
                qb.push_bind(claim.clone())
                    .push(", claim_until = ")
                    .push_bind(now_ms + lease_ms)
                    .push(", updated_at = ")
                    .push_bind(now_ms)
                    .push(" WHERE id IN (SELECT id FROM communications WHERE channel = ")
                    .push_bind(channel.as_str())
                    .push(" AND status IN ")
                    .push(PENDING)
                    .push(" AND next_attempt_at <= ")
                    .push_bind(now_ms)
                    // A campaign cancelled through another instance is not claimed here, even
                    // before this instance has heard of the cancel.
                    .push(" AND campaign_id NOT IN (SELECT campaign_id FROM cancelled_campaigns)")
                    .push(" ORDER BY priority DESC, next_attempt_at LIMIT ")
                    .push_bind(i64::from(limit))
                    .push($lock)
                    .push(") RETURNING id, payload, attempts");
                let rows: Vec<(String, String, i64)> =
                    qb.build_query_as().fetch_all(w).await?;
                let mut out = Vec::with_capacity(rows.len());
                for (id, payload, attempts) in rows {
                    let comm: Communication =
                        serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
                            id: id.clone(),
                            message: e.to_string(),
                        })?;
                    out.push(Claimed {
                        comm,
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                        claim: claim.clone(),
                        lease_until: from_ms(now_ms + lease_ms),
                    });
                }
                out.sort_by_key(|c| std::cmp::Reverse(c.comm.priority));
                Ok(out)
            }

            pub async fn finish_batch(
                w: &Pool,
                _r: &Pool,
                items: &[Finish],
                from_unknown: bool,
                now: DateTime<Utc>,
            ) -> Result<Vec<Uuid>> {
                let now_ms = ms(now);
                let mut tx = w.begin().await?;
                let ids: Vec<String> = items.iter().map(|f| f.id.to_string()).collect();
                lock_in_order(&mut tx, &ids).await?;
                let attempts: Vec<(&Finish, &super::super::AttemptRow)> = items
                    .iter()
                    .filter_map(|f| f.attempt.as_ref().map(|a| (f, a)))
                    .collect();
                for chunk in attempts.chunks(CHUNK) {
                    let mut qb = QueryBuilder::<Db>::new(
                        "INSERT INTO attempts (communication_id, number, started_at, \
                         duration_ms, classification, answer, reason, external_id) ",
                    );
                    qb.push_values(chunk, |mut b, (f, a)| {
                        b.push_bind(f.id.to_string())
                            .push_bind(i64::from(a.number))
                            .push_bind(ms(a.started_at))
                            .push_bind(i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
                            .push_bind(a.classification.as_str())
                            .push_bind(a.answer.clone())
                            .push_bind(a.reason.clone())
                            .push_bind(a.external_id.clone());
                    });
                    qb.push(" ON CONFLICT (communication_id, number) DO NOTHING");
                    qb.build().persistent(false).execute(&mut *tx).await?;
                }
                let mut changed = Vec::with_capacity(items.len());
                for chunk in items.chunks(CHUNK) {
                    let mut qb = QueryBuilder::<Db>::new(
                        "WITH v (vid, vclaim, vstatus, vreason, vexternal, vattempts, vnext) AS (",
                    );
                    qb.push_values(chunk, |mut b, f| {
                        b.push_bind(f.id.to_string())
                            .push_bind(f.claim.clone())
                            .push_bind(f.status.as_str())
                            .push_bind(f.reason.clone())
                            .push_bind(f.external_id.clone())
                            .push_bind(i64::from(f.attempts))
                            .push_bind(f.next_attempt_at.map(ms));
                    });
                    qb.push(
                        ") UPDATE communications SET status = v.vstatus, reason = v.vreason, \
                         external_id = COALESCE(v.vexternal, external_id), attempts = v.vattempts, \
                         next_attempt_at = COALESCE(v.vnext, next_attempt_at), claimed_by = NULL, \
                         claim_until = NULL, updated_at = ",
                    )
                    .push_bind(now_ms)
                    .push(if from_unknown {
                        // A later reconciliation settles what is still `unknown`, nothing else.
                        " FROM v WHERE id = v.vid AND status = 'unknown'"
                    } else {
                        " FROM v WHERE id = v.vid AND status = 'sending' AND claimed_by = v.vclaim"
                    })
                    .push(" RETURNING id");
                    let rows: Vec<(String,)> = qb.build_query_as().persistent(false).fetch_all(&mut *tx).await?;
                    for (id,) in rows {
                        changed.push(parse_uuid(&id)?);
                    }
                }
                let set: HashSet<Uuid> = changed.iter().copied().collect();
                let mut events: Vec<(String, String)> = items
                    .iter()
                    .filter(|f| set.contains(&f.id))
                    .map(|f| {
                        status_event(
                            f.id,
                            &f.campaign_id,
                            f.channel,
                            f.status,
                            f.attempts,
                            f.reason.clone(),
                            f.external_id.clone(),
                            now,
                        )
                    })
                    .collect();
                // A report may arrive while the attempt is out, whatever the attempt then
                // says: after `sent` it applies as usual, and after `unknown` it is the answer
                // the attempt did not get.
                let sent: Vec<&Finish> = items
                    .iter()
                    .filter(|f| matches!(f.status, Status::Sent | Status::Unknown) && set.contains(&f.id))
                    .collect();
                for (f, status, detail) in reports_that_arrived_first(&mut tx, &sent).await? {
                    let mut qb = QueryBuilder::<Db>::new("UPDATE communications SET status = ");
                    qb.push_bind(status.as_str())
                        .push(", reason = ")
                        .push_bind(detail.clone())
                        .push(", updated_at = ")
                        .push_bind(now_ms)
                        .push(" WHERE id = ")
                        .push_bind(f.id.to_string())
                        .push(" AND status IN ('sent', 'unknown')");
                    qb.build().execute(&mut *tx).await?;
                    events.push(status_event(
                        f.id, &f.campaign_id, f.channel, status, f.attempts, detail,
                        f.external_id.clone(), now,
                    ));
                }
                push_events(&mut tx, &events, now_ms).await?;
                tx.commit().await?;
                Ok(changed)
            }

            /// Delivery reports recorded while the attempt was still out: the status they lead
            /// to, for communications that have just become `sent`.
            async fn reports_that_arrived_first<'f>(
                tx: &mut Transaction<'_, Db>,
                sent: &[&'f Finish],
            ) -> Result<Vec<(&'f Finish, Status, Option<String>)>> {
                let mut out = Vec::new();
                for chunk in sent.chunks(CHUNK) {
                    let mut qb = QueryBuilder::<Db>::new(
                        "SELECT r.communication_id, c.parts, r.kind, r.whole_message, r.detail, \
                         r.dedupe_key \
                         FROM responses r JOIN communications c ON c.id = r.communication_id \
                         WHERE r.kind IN ('delivered', 'undelivered', 'buffered') \
                         AND r.communication_id IN (",
                    );
                    {
                        let mut s = qb.separated(", ");
                        for f in chunk {
                            s.push_bind(f.id.to_string());
                        }
                    }
                    qb.push(") ORDER BY r.received_at");
                    let rows: Vec<(String, i64, String, bool, Option<String>, String)> =
                        qb.build_query_as().persistent(false).fetch_all(&mut **tx).await?;
                    for f in chunk {
                        let id = f.id.to_string();
                        let mine: Vec<_> = rows.iter().filter(|r| r.0 == id).collect();
                        if let Some(r) = mine.iter().find(|r| r.2 == "undelivered") {
                            out.push((*f, Status::Failed, r.4.clone()));
                            continue;
                        }
                        // The same rule as record_responses: clm_connectors::sms::parts.
                        let reports = mine.iter().filter_map(|r| {
                            let kind = r.2.parse::<clm_contracts::ResponseKind>().ok()?;
                            Some((kind, clm_connectors::sms::parts::part_of(&r.5, r.3)))
                        });
                        if let Some(last) = mine.iter().rev().find(|r| r.2 == "delivered")
                            && clm_connectors::sms::parts::delivered(
                                u32::try_from(last.1).unwrap_or(u32::MAX),
                                reports,
                            )
                        {
                            out.push((*f, Status::Delivered, last.4.clone()));
                        }
                    }
                }
                Ok(out)
            }

            pub async fn release(
                w: &Pool,
                _r: &Pool,
                items: &[(Claimed, String)],
                due: DateTime<Utc>,
                now: DateTime<Utc>,
            ) -> Result<()> {
                let now_ms = ms(now);
                let mut tx = w.begin().await?;
                let ids: Vec<String> = items.iter().map(|(c, _)| c.comm.id.to_string()).collect();
                lock_in_order(&mut tx, &ids).await?;
                let mut events = Vec::new();
                for chunk in items.chunks(CHUNK) {
                    let mut qb = QueryBuilder::<Db>::new("WITH v (vid, vclaim, vreason) AS (");
                    qb.push_values(chunk, |mut b, (c, reason)| {
                        b.push_bind(c.comm.id.to_string())
                            .push_bind(c.claim.clone())
                            .push_bind(reason.clone());
                    });
                    qb.push(") UPDATE communications SET status = 'scheduled', reason = v.vreason, \
                             claimed_by = NULL, claim_until = NULL, next_attempt_at = ")
                        .push_bind(ms(due))
                        .push(", updated_at = ")
                        .push_bind(now_ms)
                        .push(" FROM v WHERE id = v.vid AND status = 'sending' AND claimed_by = v.vclaim")
                        .push(" RETURNING id");
                    let rows: Vec<(String,)> = qb.build_query_as().persistent(false).fetch_all(&mut *tx).await?;
                    let set: HashSet<String> = rows.into_iter().map(|r| r.0).collect();
                    for (c, reason) in chunk {
                        if set.contains(&c.comm.id.to_string()) {
                            events.push(status_event(
                                c.comm.id, &c.comm.campaign_id, c.comm.channel,
                                Status::Scheduled, c.attempts, Some(reason.clone()), None, now,
                            ));
                        }
                    }
                }
                push_events(&mut tx, &events, now_ms).await?;
                tx.commit().await?;
                Ok(())
            }

            pub async fn reap_expired_claims(
                w: &Pool,
                _r: &Pool,
                now: DateTime<Utc>,
            ) -> Result<u64> {
                let now_ms = ms(now);
                let reason = "claim expired: the instance that claimed it stopped mid-send";
                let mut tx = w.begin().await?;
                let mut qb = QueryBuilder::<Db>::new(
                    // The abandoned attempt counts: it may have reached the channel, it counts
                    // toward max_attempts, and the next attempt gets the next number.
                    "UPDATE communications SET status = 'retry_wait', claimed_by = NULL, \
                     claim_until = NULL, attempts = attempts + 1, reason = ",
                );
                qb.push_bind(reason)
                    .push(", next_attempt_at = ")
                    .push_bind(now_ms)
                    .push(", updated_at = ")
                    .push_bind(now_ms)
                    // Rows another transaction holds (an outcome being written) are left for
                    // the next round: waiting on them could deadlock, and they may not be
                    // abandoned at all.
                    .push(" WHERE id IN (SELECT id FROM communications WHERE status = 'sending' AND claim_until < ")
                    .push_bind(now_ms)
                    .push(" ORDER BY claim_until LIMIT 10000")
                    .push($lock)
                    .push(") AND status = 'sending' AND claim_until < ")
                    .push_bind(now_ms)
                    .push(" RETURNING id, channel, campaign_id, attempts");
                let rows: Vec<MovedRow> = qb.build_query_as().fetch_all(&mut *tx).await?;
                announce_and_commit(tx, &rows, Status::RetryWait, reason, now).await
            }

            pub async fn record_responses(
                w: &Pool,
                _r: &Pool,
                items: &[IncomingResponse],
                now: DateTime<Utc>,
            ) -> Result<Vec<ResponseOutcome>> {
                let now_ms = ms(now);
                let mut out = vec![ResponseOutcome::NotFound; items.len()];
                let mut events = Vec::new();
                let mut tx = w.begin().await?;
                // Communications are locked in one order (by id) in every transaction, so two
                // batches reporting on the same communications wait for each other instead of
                // deadlocking; the outcomes keep the items' order.
                // A channel's message id is resolved to ours first (without a lock), so the
                // locks follow the id order of every other multi-row writer.
                let mut resolved: Vec<Option<Uuid>> = Vec::with_capacity(items.len());
                for it in items {
                    resolved.push(match &it.correlation {
                        Correlation::Id(id) => Some(*id),
                        Correlation::External(ext) => {
                            let mut qb = QueryBuilder::<Db>::new("SELECT id FROM communications WHERE channel = ");
                            qb.push_bind(it.channel.as_str())
                                .push(" AND external_id = ")
                                .push_bind(ext.clone())
                                .push(" LIMIT 1");
                            let found: Option<(String,)> = qb.build_query_as().fetch_optional(&mut *tx).await?;
                            match found {
                                Some((id,)) => Some(parse_uuid(&id)?),
                                None => None,
                            }
                        }
                    });
                }
                let mut order: Vec<usize> = (0..items.len()).filter(|&i| resolved[i].is_some()).collect();
                // Sorted as the ids are stored (text), which is the order lock_in_order uses.
                order.sort_by_key(|&i| resolved[i].map(|id| id.to_string()));
                for i in order {
                    let it = &items[i];
                    let id = resolved[i].expect("resolved");
                    // A channel speaks only for its own communications: a Wink webhook naming an
                    // SMS's id matches nothing.
                    let mut qb = QueryBuilder::<Db>::new(
                        "SELECT id, status, campaign_id, parts, attempts FROM communications WHERE id = ",
                    );
                    qb.push_bind(id.to_string())
                        .push(" AND channel = ")
                        .push_bind(it.channel.as_str());
                    // Lock the communication so concurrent reports of its parts count each other
                    // (PostgreSQL, READ COMMITTED); SQLite has one writer anyway.
                    qb.push(" LIMIT 1").push($lock_row);
                    let found: Option<(String, String, String, i64, i64)> =
                        qb.build_query_as().fetch_optional(&mut *tx).await?;
                    let Some((id, status, campaign, parts, attempts)) = found else {
                        out[i] = ResponseOutcome::NotFound;
                        continue;
                    };
                    let uuid = parse_uuid(&id)?;
                    let status = parse_status(&id, &status)?;
                    let response_id = Uuid::now_v7();
                    let mut qb = QueryBuilder::<Db>::new(
                        "INSERT INTO responses (id, communication_id, channel, kind, received_at, \
                         occurred_at, detail, dedupe_key, whole_message) VALUES (",
                    );
                    {
                        let mut s = qb.separated(", ");
                        s.push_bind(response_id.to_string())
                            .push_bind(id.clone())
                            .push_bind(it.channel.as_str())
                            .push_bind(it.kind.as_str())
                            .push_bind(now_ms)
                            .push_bind(it.occurred_at.map(ms))
                            .push_bind(it.detail.clone())
                            .push_bind(it.dedupe_key.clone())
                            .push_bind(it.whole_message);
                    }
                    qb.push(") ON CONFLICT (communication_id, dedupe_key) DO NOTHING RETURNING id");
                    let inserted: Option<(String,)> =
                        qb.build_query_as().fetch_optional(&mut *tx).await?;
                    if inserted.is_none() {
                        out[i] = ResponseOutcome::Duplicate;
                        continue;
                    }
                    out[i] = ResponseOutcome::Recorded;
                    events.push(event_row(&Event::Response(ResponseEvent {
                        response_id,
                        communication_id: uuid,
                        campaign_id: campaign.clone(),
                        channel: it.channel,
                        kind: it.kind,
                        at: now,
                        occurred_at: it.occurred_at,
                        detail: it.detail.clone(),
                    })));
                    let target = match it.kind.advances_to() {
                        Some(target) => target,
                        // Kannel's "delivered to SMSC" for a part can complete a multi-part SMS
                        // whose delivered report came first (clm_connectors::sms::parts).
                        None if it.kind == clm_contracts::ResponseKind::Buffered
                            && !it.whole_message
                            && parts > 1 =>
                        {
                            Status::Delivered
                        }
                        None => continue,
                    };
                    // While an attempt is out, the report waits: the attempt's outcome is written
                    // first (`sent`), and finish_batch applies the report then, so the events
                    // keep the lifecycle's order.
                    if status.is_final() || status == Status::Sending {
                        continue;
                    }
                    if target == Status::Delivered && !it.whole_message && parts > 1 {
                        // A multi-part SMS: delivered when its reports add up to the whole
                        // message (every part, or Kannel's one report for the message); the
                        // rule is clm_connectors::sms::parts.
                        let mut qb = QueryBuilder::<Db>::new(
                            "SELECT kind, whole_message, dedupe_key FROM responses \
                             WHERE communication_id = ",
                        );
                        qb.push_bind(id.clone()).push(" AND kind IN ('delivered', 'buffered')");
                        let rows: Vec<(String, bool, String)> =
                            qb.build_query_as().fetch_all(&mut *tx).await?;
                        let reports = rows.iter().filter_map(|(kind, whole, key)| {
                            let kind = kind.parse::<clm_contracts::ResponseKind>().ok()?;
                            Some((kind, clm_connectors::sms::parts::part_of(key, *whole)))
                        });
                        let parts = u32::try_from(parts).unwrap_or(u32::MAX);
                        if !clm_connectors::sms::parts::delivered(parts, reports) {
                            continue;
                        }
                    }
                    let mut qb = QueryBuilder::<Db>::new("UPDATE communications SET status = ");
                    qb.push_bind(target.as_str())
                        .push(", reason = ")
                        .push_bind(it.detail.clone())
                        .push(", updated_at = ")
                        .push_bind(now_ms)
                        .push(" WHERE id = ")
                        .push_bind(id.clone())
                        .push(" AND status NOT IN ")
                        .push(FINAL);
                    let done = qb.build().execute(&mut *tx).await?;
                    if done.rows_affected() == 1 {
                        events.push(status_event(
                            uuid, &campaign, it.channel, target,
                            u32::try_from(attempts).unwrap_or(0), it.detail.clone(), None, now,
                        ));
                    }
                }
                push_events(&mut tx, &events, now_ms).await?;
                tx.commit().await?;
                Ok(out)
            }

            pub async fn cancel_campaign(
                w: &Pool,
                _r: &Pool,
                campaign_id: &str,
                now: DateTime<Utc>,
            ) -> Result<u64> {
                let now_ms = ms(now);
                let mut qb = QueryBuilder::<Db>::new(
                    "INSERT INTO cancelled_campaigns (campaign_id, cancelled_at) VALUES (",
                );
                qb.push_bind(campaign_id.to_owned())
                    .push(", ")
                    .push_bind(now_ms)
                    .push(") ON CONFLICT (campaign_id) DO NOTHING");
                qb.build().execute(w).await?;
                let mut total = 0_u64;
                loop {
                    let mut tx = w.begin().await?;
                    let mut qb = QueryBuilder::<Db>::new(
                        "UPDATE communications SET status = 'cancelled', \
                         reason = 'campaign cancelled', updated_at = ",
                    );
                    qb.push_bind(now_ms)
                        .push(" WHERE id IN (SELECT id FROM communications WHERE campaign_id = ")
                        .push_bind(campaign_id.to_owned())
                        .push(" AND status IN ")
                        .push(PENDING)
                        .push(" LIMIT ")
                        .push_bind(CANCEL_CHUNK)
                        // A row a claimer holds is skipped: it is `sending` once that commits,
                        // and the dispatcher finishes it as cancelled (in-memory check).
                        .push($lock)
                        .push(") RETURNING id, channel, attempts");
                    let rows: Vec<(String, String, i64)> =
                        qb.build_query_as().fetch_all(&mut *tx).await?;
                    let mut events = Vec::with_capacity(rows.len());
                    for (id, channel, attempts) in &rows {
                        events.push(status_event(
                            parse_uuid(id)?, campaign_id, parse_channel(id, channel)?,
                            Status::Cancelled, u32::try_from(*attempts).unwrap_or(0),
                            Some("campaign cancelled".into()), None, now,
                        ));
                    }
                    push_events(&mut tx, &events, now_ms).await?;
                    tx.commit().await?;
                    total += rows.len() as u64;
                    if (rows.len() as i64) < CANCEL_CHUNK {
                        return Ok(total);
                    }
                }
            }

            pub async fn watermark(
                w: &Pool,
                _r: &Pool,
                source: &str,
            ) -> Result<Option<(String, String)>> {
                // From the writer: a poller that just moved it must read its own write.
                let mut qb = QueryBuilder::<Db>::new(
                    "SELECT position, row_key FROM source_watermarks WHERE source = ",
                );
                qb.push_bind(source);
                Ok(qb.build_query_as::<(String, String)>().fetch_optional(w).await?)
            }

            pub async fn set_watermark(
                w: &Pool,
                _r: &Pool,
                source: &str,
                position: &str,
                row_key: &str,
                now: DateTime<Utc>,
            ) -> Result<()> {
                let mut qb = QueryBuilder::<Db>::new(
                    "INSERT INTO source_watermarks (source, position, row_key, updated_at) VALUES (",
                );
                qb.push_bind(source)
                    .push(", ")
                    .push_bind(position)
                    .push(", ")
                    .push_bind(row_key)
                    .push(", ")
                    .push_bind(ms(now))
                    .push(") ON CONFLICT (source) DO UPDATE SET position = excluded.position, \
                           row_key = excluded.row_key, updated_at = excluded.updated_at");
                qb.build().execute(w).await?;
                Ok(())
            }

            pub async fn suppress(
                w: &Pool,
                _r: &Pool,
                address: &str,
                reason: &str,
                communication: Option<Uuid>,
                now: DateTime<Utc>,
            ) -> Result<()> {
                let mut qb = QueryBuilder::<Db>::new(
                    "INSERT INTO suppressions (address, reason, communication_id, created_at) VALUES (",
                );
                qb.push_bind(normalize_address(address))
                    .push(", ")
                    .push_bind(reason)
                    .push(", ")
                    .push_bind(communication.map(|c| c.to_string()))
                    .push(", ")
                    .push_bind(ms(now))
                    .push(") ON CONFLICT (address) DO NOTHING");
                qb.build().execute(w).await?;
                Ok(())
            }

            pub async fn suppressed_among(
                _w: &Pool,
                r: &Pool,
                addresses: &[String],
            ) -> Result<HashSet<String>> {
                let mut out = HashSet::new();
                for chunk in addresses.chunks(CHUNK) {
                    let mut qb =
                        QueryBuilder::<Db>::new("SELECT address FROM suppressions WHERE address IN (");
                    {
                        let mut sep = qb.separated(", ");
                        for a in chunk {
                            sep.push_bind(normalize_address(a));
                        }
                    }
                    qb.push(")");
                    let rows: Vec<(String,)> =
                        qb.build_query_as().persistent(false).fetch_all(r).await?;
                    out.extend(rows.into_iter().map(|r| r.0));
                }
                Ok(out)
            }

            pub async fn recipient_of(
                _w: &Pool,
                r: &Pool,
                id: Uuid,
            ) -> Result<Option<(ChannelId, String)>> {
                let key = id.to_string();
                let mut qb = QueryBuilder::<Db>::new(
                    "SELECT channel, payload FROM communications WHERE id = ",
                );
                qb.push_bind(key.clone());
                let row: Option<(String, String)> = qb.build_query_as().fetch_optional(r).await?;
                match row {
                    Some((c, payload)) => {
                        let comm: Communication =
                            serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
                                id: key.clone(),
                                message: format!("payload: {e}"),
                            })?;
                        Ok(Some((parse_channel(&key, &c)?, comm.recipient)))
                    }
                    None => Ok(None),
                }
            }

            /// The search's statement, after `prefix` (`EXPLAIN …` for its plan).
            fn search_query<'q>(prefix: &str, q: &'q SearchQuery) -> QueryBuilder<'q, Db> {
                let mut qb = QueryBuilder::<Db>::new(prefix);
                qb.push(
                    "SELECT id, channel, campaign_id, customer_id, payload, status, reason, \
                     attempts, parts, received_at, updated_at FROM communications WHERE 1 = 1",
                );
                if let Some(v) = &q.campaign_id {
                    qb.push(" AND campaign_id = ").push_bind(v.clone());
                }
                if let Some(v) = &q.customer_id {
                    qb.push(" AND customer_id = ").push_bind(v.clone());
                }
                if let Some(v) = &q.recipient {
                    qb.push(" AND recipient_key = ").push_bind(recipient_key(v));
                }
                if let Some(v) = q.channel {
                    qb.push(" AND channel = ").push_bind(v.as_str());
                }
                if let Some(v) = q.status {
                    qb.push(" AND status = ").push_bind(v.as_str());
                }
                if let Some(v) = q.from {
                    qb.push(" AND received_at >= ").push_bind(ms(v));
                }
                if let Some(v) = q.to {
                    qb.push(" AND received_at < ").push_bind(ms(v));
                }
                if let Some((at, id)) = q.before {
                    // Row-value comparison: one range on the index's order, on both stores.
                    qb.push(" AND (received_at, id) < (")
                        .push_bind(ms(at))
                        .push(", ")
                        .push_bind(id.to_string())
                        .push(")");
                }
                qb.push(" ORDER BY received_at DESC, id DESC LIMIT ")
                    .push_bind(i64::from(q.limit));
                qb
            }

            pub async fn search(
                _w: &Pool,
                r: &Pool,
                q: &SearchQuery,
            ) -> Result<Vec<SearchRow>> {
                let mut qb = search_query("", q);
                #[allow(clippy::type_complexity)]
                let rows: Vec<(String, String, String, String, String, String, Option<String>, i64, i64, i64, i64)> =
                    qb.build_query_as().fetch_all(r).await?;
                rows.into_iter()
                    .map(|(id, channel, campaign_id, customer_id, payload, status, reason, attempts, parts, received, updated)| {
                        let comm: Communication =
                            serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
                                id: id.clone(),
                                message: format!("payload: {e}"),
                            })?;
                        Ok(SearchRow {
                            channel: parse_channel(&id, &channel)?,
                            status: parse_status(&id, &status)?,
                            id: parse_uuid(&id)?,
                            campaign_id,
                            customer_id,
                            recipient: comm.recipient,
                            reason,
                            attempts: u32::try_from(attempts).unwrap_or(0),
                            parts: u32::try_from(parts).unwrap_or(1),
                            received_at: from_ms(received),
                            updated_at: from_ms(updated),
                        })
                    })
                    .collect()
            }

            pub async fn explain_search(
                _w: &Pool,
                r: &Pool,
                q: &SearchQuery,
            ) -> Result<String> {
                let mut qb = search_query(EXPLAIN, q);
                let lines: Vec<String> = qb
                    .build()
                    .fetch_all(r)
                    .await?
                    .iter()
                    .map(|row| {
                        use sqlx::Row;
                        // PostgreSQL: one text column; SQLite (`EXPLAIN QUERY PLAN`): the detail is the last.
                        let last = row.len() - 1;
                        row.try_get::<String, _>(last).unwrap_or_default()
                    })
                    .collect();
                Ok(lines.join("\n"))
            }

            pub async fn unknown_before(
                _w: &Pool,
                r: &Pool,
                channel: ChannelId,
                before: DateTime<Utc>,
                after: Option<(DateTime<Utc>, Uuid)>,
                limit: u32,
            ) -> Result<Vec<UnknownRow>> {
                let mut qb = QueryBuilder::<Db>::new(
                    "SELECT id, campaign_id, attempts, updated_at FROM communications WHERE channel = ",
                );
                qb.push_bind(channel.as_str())
                    .push(" AND status = 'unknown' AND updated_at <= ")
                    .push_bind(ms(before));
                if let Some((at, id)) = after {
                    qb.push(" AND (updated_at > ")
                        .push_bind(ms(at))
                        .push(" OR (updated_at = ")
                        .push_bind(ms(at))
                        .push(" AND id > ")
                        .push_bind(id.to_string())
                        .push("))");
                }
                qb.push(" ORDER BY updated_at, id LIMIT ")
                    .push_bind(i64::from(limit));
                let rows: Vec<(String, String, i64, i64)> = qb.build_query_as().fetch_all(r).await?;
                rows.into_iter()
                    .map(|(id, campaign, attempts, updated)| {
                        Ok(UnknownRow {
                            id: parse_uuid(&id)?,
                            campaign_id: campaign,
                            attempts: u32::try_from(attempts).unwrap_or(0),
                            updated_at: from_ms(updated),
                        })
                    })
                    .collect()
            }

            pub async fn expire_pending(
                w: &Pool,
                _r: &Pool,
                now: DateTime<Utc>,
            ) -> Result<u64> {
                let now_ms = ms(now);
                let reason = "expires_at passed before the channel took it";
                let mut tx = w.begin().await?;
                let mut qb = QueryBuilder::<Db>::new(
                    "UPDATE communications SET status = 'expired', reason = ",
                );
                qb.push_bind(reason)
                    .push(", updated_at = ")
                    .push_bind(now_ms)
                    .push(" WHERE id IN (SELECT id FROM communications WHERE status IN ")
                    .push(PENDING)
                    .push(" AND expires_at IS NOT NULL AND expires_at <= ")
                    .push_bind(now_ms)
                    .push(" LIMIT ")
                    .push_bind(CANCEL_CHUNK)
                    .push($lock)
                    .push(") AND status IN ")
                    .push(PENDING)
                    .push(" RETURNING id, channel, campaign_id, attempts");
                let rows: Vec<MovedRow> = qb.build_query_as().fetch_all(&mut *tx).await?;
                announce_and_commit(tx, &rows, Status::Expired, reason, now).await
            }

            pub async fn cancelled_since(
                _w: &Pool,
                r: &Pool,
                since: DateTime<Utc>,
            ) -> Result<Vec<String>> {
                let mut qb = QueryBuilder::<Db>::new(
                    "SELECT campaign_id FROM cancelled_campaigns WHERE cancelled_at >= ",
                );
                qb.push_bind(ms(since));
                let rows: Vec<(String,)> = qb.build_query_as().fetch_all(r).await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            pub async fn cancelled_campaigns(_w: &Pool, r: &Pool) -> Result<Vec<String>> {
                let rows: Vec<(String,)> =
                    sqlx::query_as("SELECT campaign_id FROM cancelled_campaigns")
                        .fetch_all(r)
                        .await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            pub async fn set_paused(
                w: &Pool,
                _r: &Pool,
                channel: ChannelId,
                paused: bool,
                now: DateTime<Utc>,
            ) -> Result<()> {
                let mut qb = QueryBuilder::<Db>::new(
                    "INSERT INTO channel_flags (channel, paused, updated_at) VALUES (",
                );
                qb.push_bind(channel.as_str())
                    .push(", ")
                    .push_bind(paused)
                    .push(", ")
                    .push_bind(ms(now))
                    .push(") ON CONFLICT (channel) DO UPDATE SET paused = excluded.paused, \
                           updated_at = excluded.updated_at");
                qb.build().execute(w).await?;
                Ok(())
            }

            pub async fn paused_channels(_w: &Pool, r: &Pool) -> Result<Vec<ChannelId>> {
                let rows: Vec<(String, bool)> =
                    sqlx::query_as("SELECT channel, paused FROM channel_flags")
                        .fetch_all(r)
                        .await?;
                let mut out = Vec::new();
                for (c, paused) in rows {
                    if paused {
                        out.push(parse_channel(&c, &c)?);
                    }
                }
                Ok(out)
            }

            pub async fn view(_w: &Pool, r: &Pool, id: Uuid) -> Result<Option<CommunicationView>> {
                let key = id.to_string();
                let mut qb = QueryBuilder::<Db>::new(
                    "SELECT channel, campaign_id, customer_id, status, reason, external_id, \
                     received_at, updated_at, next_attempt_at FROM communications WHERE id = ",
                );
                qb.push_bind(key.clone());
                type Row = (String, String, String, String, Option<String>, Option<String>, i64, i64, i64);
                let row: Option<Row> = qb.build_query_as().fetch_optional(r).await?;
                let Some((channel, campaign_id, customer_id, status, reason, external_id, received, updated, next)) = row
                else {
                    return rejected_view(r, id).await;
                };
                let status = parse_status(&key, &status)?;
                let mut qb = QueryBuilder::<Db>::new(
                    "SELECT number, started_at, duration_ms, classification, answer, reason, \
                     external_id FROM attempts WHERE communication_id = ",
                );
                qb.push_bind(key.clone()).push(" ORDER BY number");
                let rows: Vec<(i64, i64, i64, String, String, Option<String>, Option<String>)> =
                    qb.build_query_as().fetch_all(r).await?;
                let attempts = rows
                    .into_iter()
                    .map(|(number, started, duration, class, answer, reason, ext)| AttemptRecord {
                        number: u32::try_from(number).unwrap_or(0),
                        started_at: from_ms(started),
                        duration_ms: u64::try_from(duration).unwrap_or(0),
                        classification: class.parse().unwrap_or(Classification::Unknown),
                        answer,
                        reason,
                        external_id: ext,
                    })
                    .collect();
                let mut qb = QueryBuilder::<Db>::new(
                    "SELECT id, kind, received_at, occurred_at, detail FROM responses \
                     WHERE communication_id = ",
                );
                qb.push_bind(key.clone()).push(" ORDER BY received_at, id");
                let rows: Vec<(String, String, i64, Option<i64>, Option<String>)> =
                    qb.build_query_as().fetch_all(r).await?;
                let channel = parse_channel(&key, &channel)?;
                let mut responses = Vec::with_capacity(rows.len());
                for (rid, kind, received_at, occurred_at, detail) in rows {
                    responses.push(ResponseRecord {
                        id: parse_uuid(&rid)?,
                        communication_id: id,
                        channel,
                        kind: kind.parse().map_err(|_| StoreError::Corrupt {
                            id: rid.clone(),
                            message: format!("response kind {kind:?}"),
                        })?,
                        received_at: from_ms(received_at),
                        occurred_at: occurred_at.map(from_ms),
                        detail,
                    });
                }
                Ok(Some(CommunicationView {
                    id,
                    channel,
                    campaign_id,
                    customer_id,
                    status,
                    reason,
                    external_id,
                    received_at: from_ms(received),
                    updated_at: from_ms(updated),
                    next_attempt_at: status.is_pending().then(|| from_ms(next)),
                    attempts,
                    responses,
                }))
            }

            /// A rejected submission, shown when its payload named a channel and a campaign.
            async fn rejected_view(r: &Pool, id: Uuid) -> Result<Option<CommunicationView>> {
                let mut qb = QueryBuilder::<Db>::new(
                    "SELECT reason, payload, received_at FROM rejections WHERE item_id = ",
                );
                qb.push_bind(id.to_string()).push(" ORDER BY seq DESC LIMIT 1");
                let row: Option<(String, String, i64)> = qb.build_query_as().fetch_optional(r).await?;
                let Some((reason, payload, at)) = row else { return Ok(None) };
                let v: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
                let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
                let channel = field("channel").and_then(|c| c.parse::<ChannelId>().ok());
                let (Some(channel), Some(campaign_id)) = (channel, field("campaign_id")) else {
                    return Ok(None);
                };
                Ok(Some(CommunicationView {
                    id,
                    channel,
                    campaign_id,
                    customer_id: field("customer_id").unwrap_or_default(),
                    status: Status::Rejected,
                    reason: Some(reason),
                    external_id: None,
                    received_at: from_ms(at),
                    updated_at: from_ms(at),
                    next_attempt_at: None,
                    attempts: Vec::new(),
                    responses: Vec::new(),
                }))
            }

            pub async fn depth_by_channel(
                _w: &Pool,
                r: &Pool,
            ) -> Result<Vec<(ChannelId, ChannelDepth)>> {
                let rows: Vec<(String, String, i64)> = sqlx::query_as(
                    "SELECT channel, status, COUNT(*) FROM communications \
                     WHERE status IN ('received', 'scheduled', 'retry_wait', 'sending') \
                     GROUP BY channel, status",
                )
                .fetch_all(r)
                .await?;
                let mut out: Vec<(ChannelId, ChannelDepth)> = Vec::new();
                for (c, s, n) in rows {
                    let channel = parse_channel(&c, &c)?;
                    let n = u64::try_from(n).unwrap_or(0);
                    let idx = match out.iter().position(|(id, _)| *id == channel) {
                        Some(i) => i,
                        None => {
                            out.push((channel, ChannelDepth::default()));
                            out.len() - 1
                        }
                    };
                    if s == "sending" {
                        out[idx].1.sending += n;
                    } else {
                        out[idx].1.pending += n;
                    }
                }
                Ok(out)
            }

            pub async fn outbox_fetch(w: &Pool, _r: &Pool, limit: u32) -> Result<Vec<OutboxRow>> {
                let mut qb = QueryBuilder::<Db>::new(
                    "SELECT seq, routing_key, payload FROM outbox ORDER BY seq LIMIT ",
                );
                qb.push_bind(i64::from(limit));
                let rows: Vec<(i64, String, String)> = qb.build_query_as().fetch_all(w).await?;
                Ok(rows
                    .into_iter()
                    .map(|(seq, routing_key, payload)| OutboxRow { seq, routing_key, payload })
                    .collect())
            }

            pub async fn outbox_delete(w: &Pool, _r: &Pool, seqs: &[i64]) -> Result<()> {
                for chunk in seqs.chunks(CHUNK) {
                    let mut qb = QueryBuilder::<Db>::new("DELETE FROM outbox WHERE seq IN (");
                    {
                        let mut s = qb.separated(", ");
                        for seq in chunk {
                            s.push_bind(*seq);
                        }
                    }
                    qb.push(")");
                    qb.build().persistent(false).execute(w).await?;
                }
                Ok(())
            }

            pub async fn count_by_status(
                _w: &Pool,
                r: &Pool,
                campaign_id: Option<&str>,
            ) -> Result<Vec<(Status, u64)>> {
                let mut qb = QueryBuilder::<Db>::new("SELECT status, COUNT(*) FROM communications");
                if let Some(c) = campaign_id {
                    qb.push(" WHERE campaign_id = ").push_bind(c.to_owned());
                }
                qb.push(" GROUP BY status");
                let rows: Vec<(String, i64)> = qb.build_query_as().fetch_all(r).await?;
                rows.into_iter()
                    .map(|(s, n)| Ok((parse_status(&s, &s)?, u64::try_from(n).unwrap_or(0))))
                    .collect()
            }
        }
    };
}

backend!(
    sqlite,
    sqlx::Sqlite,
    sqlx::SqlitePool,
    lock = "",
    lock_row = "",
    explain = "EXPLAIN QUERY PLAN "
);
backend!(
    postgres,
    sqlx::Postgres,
    sqlx::PgPool,
    lock = " FOR UPDATE SKIP LOCKED",
    lock_row = " FOR NO KEY UPDATE",
    explain = "EXPLAIN "
);
