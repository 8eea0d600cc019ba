//! Coordination errors, classified once: a broken or slow Redis is retryable (the hub keeps
//! going on local limits meanwhile); a bad URL, refused credentials or a script error are not.

use std::time::Duration;

use redis::{ErrorKind, RetryMethod};

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// `coordination.url` cannot be used. The message never repeats the URL (it may hold a
    /// password).
    #[error("coordination.url: {0}")]
    Config(String),
    /// No connection yet; one is being made in the background.
    #[error("redis is not connected ({0}); reconnecting in the background")]
    NotConnected(String),
    /// Redis did not answer within the command deadline.
    #[error("redis did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl CoordError {
    /// Worth trying again later (and a sign that Redis is unavailable, not misused).
    pub fn is_retryable(&self) -> bool {
        match self {
            CoordError::Config(_) => false,
            CoordError::NotConnected(_) | CoordError::Timeout(_) => true,
            CoordError::Redis(e) => match e.kind() {
                // Wrong password or ACL: an operator has to fix the configuration.
                ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => false,
                // Replica promoted, server loading its data set: transient.
                ErrorKind::ReadOnly | ErrorKind::BusyLoadingError => true,
                _ => !matches!(e.retry_method(), RetryMethod::NoRetry),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_retry_and_misconfiguration_does_not() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(CoordError::Redis(refused).is_retryable());
        assert!(CoordError::Timeout(Duration::from_millis(500)).is_retryable());
        assert!(CoordError::NotConnected("refused".into()).is_retryable());
        let auth = redis::RedisError::from((ErrorKind::AuthenticationFailed, "WRONGPASS"));
        assert!(!CoordError::Redis(auth).is_retryable());
        let script = redis::RedisError::from((ErrorKind::ResponseError, "ERR in script"));
        assert!(!CoordError::Redis(script).is_retryable());
        assert!(!CoordError::Config("bad".into()).is_retryable());
    }
}
