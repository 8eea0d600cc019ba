//! The per-channel policy pieces the dispatcher stacks, in this order (see `dispatcher::Channel`):
//! send window → rate limit → concurrency limit → circuit breaker → per-attempt timeout →
//! connector. Retries are scheduled in the store, with [`backoff`]'s delays.

pub mod backoff;
pub mod breaker;
pub mod window;
