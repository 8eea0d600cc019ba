//! EISSD (`eissd`): its settings ([`config`]) and where its responses are read from. It sends
//! through the HTTP JSON connector ([`super::json_http::connector`]).

pub mod config;

use crate::config::Config;

/// Where EISSD's responses are read from: the configured source, or in sandbox mode the SQLite
/// file the bundled EISSD mock writes.
pub fn source_url(config: &Config) -> Option<String> {
    if config.sandbox {
        return Some(format!(
            "sqlite://{}",
            config.data_dir.join("eissd-dwh.db").display()
        ));
    }
    config
        .channels
        .eissd
        .responses
        .as_ref()
        .and_then(|r| r.source.clone())
}
