//! Group commit: concurrent callers (HTTP requests, delivery reports) hand their items to one
//! task that writes whatever has queued up in one transaction, then answers each caller with its
//! share of the results. Under load, many requests share one commit; alone, a request waits for
//! no one.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

type Reply<O> = oneshot::Sender<Result<Vec<O>, String>>;

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
    pub fn start<F, Fut>(write: F) -> Batcher<I, O>
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, StoreError>> + Send,
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
                match write(items).await {
                    Ok(results) => {
                        let mut results = results.into_iter();
                        for (n, reply) in replies {
                            let _ = reply.send(Ok(results.by_ref().take(n).collect()));
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        for (_, reply) in replies {
                            let _ = reply.send(Err(msg.clone()));
                        }
                    }
                }
            }
        });
        Batcher { tx }
    }

    /// Writes `items` in the next commit; the results are in the same order.
    pub async fn call(&self, items: Vec<I>) -> Result<Vec<O>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((items, reply))
            .await
            .map_err(|_| "the hub is shutting down".to_owned())?;
        rx.await
            .map_err(|_| "the hub is shutting down".to_owned())?
    }
}
