//! JSON Schemas of the contract, generated from the types. The committed copies live in
//! `contracts/schema/`; the `committed_schemas_match_the_types` test fails when they drift, and
//! `UPDATE_SCHEMAS=1 cargo test -p clm-contracts` rewrites them.

use schemars::{JsonSchema, schema_for};

use crate::api::{
    CancelResponse, ChannelsResponse, CommunicationView, ErrorBody, SubmitBatch, SubmitResponse,
};
use crate::channels::{ErrorBody as ChannelErrorBody, eissd, elk, email, wink};
use crate::{Communication, Event};

/// `(file name, pretty JSON)` for every published schema.
pub fn all() -> Vec<(&'static str, String)> {
    fn one<T: JsonSchema>(name: &'static str) -> (&'static str, String) {
        let mut text = serde_json::to_string_pretty(&schema_for!(T)).expect("schema serializes");
        text.push('\n');
        (name, text)
    }
    vec![
        one::<Communication>("communication.schema.json"),
        one::<SubmitBatch>("submit-batch.schema.json"),
        one::<SubmitResponse>("submit-response.schema.json"),
        one::<CommunicationView>("communication-view.schema.json"),
        one::<CancelResponse>("cancel-response.schema.json"),
        one::<ChannelsResponse>("channels-response.schema.json"),
        one::<ErrorBody>("error.schema.json"),
        one::<Event>("event.schema.json"),
        one::<ChannelErrorBody>("channel-error.schema.json"),
        one::<wink::SendRequest>("wink-send-request.schema.json"),
        one::<wink::SendResponse>("wink-send-response.schema.json"),
        one::<wink::Webhook>("wink-webhook.schema.json"),
        one::<elk::SendRequest>("elk-send-request.schema.json"),
        one::<elk::SendResponse>("elk-send-response.schema.json"),
        one::<elk::Webhook>("elk-webhook.schema.json"),
        one::<eissd::SendRequest>("eissd-send-request.schema.json"),
        one::<eissd::SendResponse>("eissd-send-response.schema.json"),
        one::<eissd::ResponseRow>("eissd-response-row.schema.json"),
        one::<email::Webhook>("email-webhook.schema.json"),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn committed_schemas_match_the_types() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema");
        let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
        let mut drifted = Vec::new();
        for (name, text) in super::all() {
            let path = dir.join(name);
            if update {
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(committed) if committed == text => {}
                _ => drifted.push(name),
            }
        }
        assert!(
            drifted.is_empty(),
            "schemas in contracts/schema/ differ from the types: {drifted:?}; \
             run `UPDATE_SCHEMAS=1 cargo test -p clm-contracts` and commit the result"
        );
    }
}
