//! Channel ids: a closed set, so an enum. The wire spelling is the snake_case id
//! used in JSON, AMQP routing keys, URLs (`/ingest/{channel}`) and config (`channels.<id>`).

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One of the eight external systems the hub delivers to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ChannelId {
    /// Wink video service, HTTPS JSON; responses by webhook.
    Wink,
    /// CRM Amdocs 7.5 through the CRM ESB (SOAP); responses by SOAP callback.
    Amdocs,
    /// CRM B2C through the CRM ESB (SOAP); responses by SOAP callback.
    CrmB2c,
    /// SAP CRM campaign service (SOAP); responses by SOAP callback.
    SapCrm,
    /// ELK/MLK web and mobile personal account, HTTPS JSON; responses by webhook.
    Elk,
    /// SMS centre gateway (Kannel `sendsms` or JSON); delivery reports over HTTP.
    Sms,
    /// Corporate SMTP relay; responses by webhook.
    Email,
    /// EISSD sales support, HTTP JSON; responses polled from a DWH table.
    Eissd,
}

impl ChannelId {
    /// Every channel, in the order the API lists them.
    pub const ALL: [ChannelId; 8] = [
        ChannelId::Wink,
        ChannelId::Amdocs,
        ChannelId::CrmB2c,
        ChannelId::SapCrm,
        ChannelId::Elk,
        ChannelId::Sms,
        ChannelId::Email,
        ChannelId::Eissd,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ChannelId::Wink => "wink",
            ChannelId::Amdocs => "amdocs",
            ChannelId::CrmB2c => "crm_b2c",
            ChannelId::SapCrm => "sap_crm",
            ChannelId::Elk => "elk",
            ChannelId::Sms => "sms",
            ChannelId::Email => "email",
            ChannelId::Eissd => "eissd",
        }
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the eight channel ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown channel `{0}` (expected one of: wink, amdocs, crm_b2c, sap_crm, elk, sms, email, eissd)"
)]
pub struct UnknownChannel(pub String);

impl FromStr for ChannelId {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelId::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownChannel(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_round_trips_through_its_wire_name() {
        for c in ChannelId::ALL {
            assert_eq!(c.as_str().parse::<ChannelId>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
    }

    #[test]
    fn unknown_channel_names_the_expected_ids() {
        let err = "fax".parse::<ChannelId>().unwrap_err();
        assert!(err.to_string().contains("fax"));
        assert!(err.to_string().contains("crm_b2c"));
    }
}
