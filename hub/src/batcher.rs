//! Group commit: concurrent callers (HTTP requests, delivery reports) hand their items to one
//! task that writes whatever has queued up in one transaction, then answers each caller with its
//! share of the results. Under load, many requests share one commit; alone, a request waits for
//! no one.
//!
//! One item must not fail anybody else's: when the store refuses a commit because of a value in
//! it (a NUL byte, a value too long for an index: [`StoreError::is_item_specific`]), the items are
//! split in halves and written again, down to the single item that the store refuses, which alone
//! is answered with an error. Any other failure (connection lost, deadlock, store restarting, a
//! database gone) fails the whole commit, and every caller retries it as before.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::store::StoreError;

/// An item the store refused for its own sake; the caller sees a generic message with an id
/// that points to the log line with the details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub error_id: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the store could not hold this item (error id {})",
            self.error_id
        )
    }
}

/// A new error id for a caller-facing message whose details go to the log.
pub fn error_id() -> String {
    format!("E-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

type ItemResult<O> = Result<O, Refused>;
type Reply<O> = oneshot::Sender<Result<Vec<ItemResult<O>>, String>>;

pub struct Batcher<I, O> {
    tx: mpsc::Sender<(Vec<I>, Reply<O>)>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

/// Requests gathered into one commit at most.
const MAX_REQUESTS: usize = 64;
/// Items gathered into one commit at most (more requests wait for the next one).
const MAX_ITEMS: usize = 4000;

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// `write` stores its items and hands them back with the result.
    pub fn start<F, Fut>(write: F) -> Batcher<I, O>
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = (Vec<I>, Result<Vec<O>, StoreError>)> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<(Vec<I>, Reply<O>)>(1024);
        tokio::spawn(async move {
            let mut reqs = Vec::with_capacity(MAX_REQUESTS);
            while rx.recv_many(&mut reqs, 1).await > 0 {
                let mut total = reqs[0].0.len();
                while reqs.len() < MAX_REQUESTS && total < MAX_ITEMS {
                    match rx.try_recv() {
                        Ok(r) => {
                            total += r.0.len();
                            reqs.push(r);
                        }
                        Err(_) => break,
                    }
                }
                let mut items = Vec::with_capacity(total);
                let mut replies = Vec::with_capacity(reqs.len());
                for (batch, reply) in reqs.drain(..) {
                    replies.push((batch.len(), reply));
                    items.extend(batch);
                }
                match write_isolating(&write, items).await {
                    Ok(results) => {
                        let mut results = results.into_iter().map(|r| r.map_err(|(e, _)| e));
                        for (n, reply) in replies {
                            let _ = reply.send(Ok(results.by_ref().take(n).collect()));
                        }
                    }
                    Err((e, _)) => {
                        // The details (which may quote the database) go to the log only.
                        let error_id = error_id();
                        warn!(%error_id, error = %e, "group commit failed; its callers retry");
                        let msg = format!("store unavailable; try again (error id {error_id})");
                        for (_, reply) in replies {
                            let _ = reply.send(Err(msg.clone()));
                        }
                    }
                }
            }
        });
        Batcher { tx }
    }

    /// Writes `items` in the next commit; the results are in the same order. `Err` is a passing
    /// store failure (try again later); an item the store refused for its own sake is that
    /// item's `Err`.
    pub async fn call_each(&self, items: Vec<I>) -> Result<Vec<ItemResult<O>>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((items, reply))
            .await
            .map_err(|_| "the hub is shutting down".to_owned())?;
        rx.await
            .map_err(|_| "the hub is shutting down".to_owned())?
    }

    /// Like [`Batcher::call_each`], for callers that answer for all their items at once: an item
    /// the store refused fails this call (and only this call).
    pub async fn call(&self, items: Vec<I>) -> Result<Vec<O>, String> {
        self.call_each(items)
            .await?
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }
}

/// Writes `items`; when the store refuses the batch for a reason retrying will not cure, writes
/// each half on its own, down to the items it refuses alone. `write` hands its items back with
/// its result, so nothing is cloned; a passing failure hands them all back to the caller.
pub(crate) async fn write_isolating<I, O, F, Fut>(
    write: &F,
    items: Vec<I>,
) -> Result<Vec<Result<O, (Refused, I)>>, (StoreError, Vec<I>)>
where
    F: Fn(Vec<I>) -> Fut,
    Fut: Future<Output = (Vec<I>, Result<Vec<O>, StoreError>)>,
{
    let n = items.len();
    let mut out: Vec<Option<Result<O, (Refused, I)>>> = (0..n).map(|_| None).collect();
    // An explicit stack instead of recursion: (where their results go, items).
    let mut todo: Vec<(usize, Vec<I>)> = vec![(0, items)];
    while let Some((at, part)) = todo.pop() {
        let (mut part, result) = write(part).await;
        match result {
            Ok(results) => {
                for (i, r) in results.into_iter().enumerate() {
                    out[at + i] = Some(Ok(r));
                }
            }
            Err(e) if !e.is_item_specific() => {
                // Give every item back, in order: what was written stays written (the writes
                // are idempotent), the rest waits for the retry.
                let mut all: Vec<(usize, Vec<I>)> = todo;
                all.push((at, part));
                all.sort_by_key(|(at, _)| *at);
                let items = all.into_iter().flat_map(|(_, p)| p).collect();
                return Err((e, items));
            }
            Err(e) if part.len() > 1 => {
                let len = part.len();
                let right = part.split_off(len / 2);
                todo.push((at + len / 2, right));
                todo.push((at, part));
                let _ = e;
            }
            Err(e) => {
                let error_id = error_id();
                warn!(%error_id, error = %e, "the store refused one item; the others of its batch are written");
                let item = part.pop().expect("one item");
                out[at] = Some(Err((Refused { error_id }, item)));
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|r| r.expect("every item written or refused"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What the store says of a value it cannot bind.
    fn refused() -> StoreError {
        StoreError::Db(sqlx::Error::Encode("a value the store cannot hold".into()))
    }

    /// A store that refuses any batch holding a 0, and counts its commits.
    fn store(commits: Arc<AtomicUsize>) -> Batcher<u32, u32> {
        Batcher::start(move |items: Vec<u32>| {
            let commits = Arc::clone(&commits);
            async move {
                if items.contains(&0) {
                    return (items, Err(refused()));
                }
                commits.fetch_add(1, Ordering::SeqCst);
                let out = items.iter().map(|i| i * 10).collect();
                (items, Ok(out))
            }
        })
    }

    #[tokio::test]
    async fn one_poisoned_item_fails_alone_and_the_rest_commit() {
        let commits = Arc::new(AtomicUsize::new(0));
        let b = store(Arc::clone(&commits));
        let items: Vec<u32> = (1..=1000).map(|i| if i == 437 { 0 } else { i }).collect();
        let out = b.call_each(items.clone()).await.unwrap();
        assert_eq!(out.len(), 1000);
        for (i, r) in items.iter().zip(&out) {
            match (i, r) {
                (0, Err(e)) => assert!(e.to_string().contains("error id E-"), "{e}"),
                (i, Ok(v)) => assert_eq!(*v, i * 10),
                (i, r) => panic!("{i}: {r:?}"),
            }
        }
        // Halving isolates the one item in about log2(1000) commits, not 1000.
        assert!(commits.load(Ordering::SeqCst) <= 12, "{commits:?}");
    }

    #[tokio::test]
    async fn concurrent_callers_are_not_failed_by_a_poisoned_neighbour() {
        let b = store(Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for k in 0..8_u32 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let items = if k == 3 {
                    vec![5, 0, 6]
                } else {
                    vec![k + 1; 4]
                };
                (k, b.call(items).await)
            }));
        }
        for t in tasks {
            let (k, r) = t.await.unwrap();
            if k == 3 {
                assert!(r.unwrap_err().contains("error id"));
            } else {
                assert_eq!(r.unwrap(), vec![(k + 1) * 10; 4]);
            }
        }
    }

    #[tokio::test]
    async fn an_error_not_about_an_item_fails_the_commit_without_splitting() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let b: Batcher<u32, u32> = Batcher::start(move |items: Vec<u32>| {
            c.fetch_add(1, Ordering::SeqCst);
            let e = StoreError::Corrupt {
                id: "x".into(),
                message: "not retryable, not about an item".into(),
            };
            async move { (items, Err(e)) }
        });
        assert!(b.call_each(vec![1, 2, 3, 4]).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_passing_outage_fails_the_commit_without_splitting() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let b: Batcher<u32, u32> = Batcher::start(move |items: Vec<u32>| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { (items, Err(StoreError::Db(sqlx::Error::PoolTimedOut))) }
        });
        assert!(b.call_each(vec![1, 2, 3, 4]).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
