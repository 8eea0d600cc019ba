//! The SOAP services of `wsdl/` as plain Rust types: the SAP CRM campaign service and the CRM ESB
//! service the hub calls, and the hub's response service the CRMs call back (see `wsdl/README.md`,
//! "The services, v1", for the contract these types follow).
//!
//! No serde: the envelope codec ([`codec`]) writes and reads these by hand, element by element, in
//! the order of the XSD sequences. The hub, its connectors and the mocks all use this one codec;
//! what it writes is validated against the XSD with xmllint, so a shared mistake cannot hide.

pub mod codec;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::{ChannelId, ResponseKind};

/// Common types (`clm-common-v1.xsd`, prefix `cmn`).
pub const COMMON_NS: &str = "urn:clm:common:v1";
/// SAP CRM campaign service (`sap-crm-campaign-v1.xsd`).
pub const SAP_NS: &str = "urn:clm:sap-crm:campaign:v1";
/// CRM ESB service in front of Amdocs CRM 7.5 and CRM B2C (`crm-esb-v1.xsd`).
pub const ESB_NS: &str = "urn:clm:crm-esb:v1";
/// The hub's response service (`hub-responses-v1.xsd`).
pub const RESPONSES_NS: &str = "urn:clm:hub:responses:v1";
/// SOAP 1.1 envelope namespace.
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace.
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// XML Schema instance namespace (`xsi:nil`).
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// OASIS WS-Security 1.0 (2004) `wsse` namespace.
pub const WSSE_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// OASIS WS-Security 1.0 (2004) utility namespace (`wsu`).
pub const WSU_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
/// `Type` of a UsernameToken password sent in clear text (over TLS).
pub const WSSE_PASSWORD_TEXT: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText";

/// soapAction of SAP's `SendCommunications`.
pub const SAP_SEND_ACTION: &str = "urn:clm:sap-crm:campaign:v1#SendCommunications";
/// soapAction of SAP's `GetCommunicationStatus`.
pub const SAP_STATUS_ACTION: &str = "urn:clm:sap-crm:campaign:v1#GetCommunicationStatus";
/// soapAction of the ESB's `SendCommunications`.
pub const ESB_SEND_ACTION: &str = "urn:clm:crm-esb:v1#SendCommunications";
/// soapAction of the ESB's `GetCommunicationStatus`.
pub const ESB_STATUS_ACTION: &str = "urn:clm:crm-esb:v1#GetCommunicationStatus";
/// soapAction of the hub's `SubmitResponses`.
pub const SUBMIT_RESPONSES_ACTION: &str = "urn:clm:hub:responses:v1#SubmitResponses";

/// Most items (or message ids, or responses) one message may carry (`maxOccurs="1000"`).
pub const MAX_BUNDLE: usize = 1000;

/// A value outside one of the contract's enumerations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {0} value")]
pub struct UnknownValue(pub &'static str);

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in the order of the XSD enumeration.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            /// Exact wire value (the XSD enumerations are case-sensitive).
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(UnknownValue($what)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// The CRM behind the ESB an ESB message is meant for (`TargetSystem`).
    TargetSystem, "TargetSystem" {
        Amdocs => "AMDOCS",
        CrmB2c => "CRM_B2C",
    }
}

wire_enum! {
    /// Who calls the hub's response service (`SourceSystem`).
    SourceSystem, "SourceSystem" {
        SapCrm => "SAP_CRM",
        Amdocs => "AMDOCS",
        CrmB2c => "CRM_B2C",
    }
}

wire_enum! {
    /// The CRM's verdict on one item of a bundle (`ItemResult/Status`).
    ItemStatusCode, "Status" {
        Accepted => "Accepted",
        Rejected => "Rejected",
        /// The CRM already had this `MessageId` (a resend after a lost answer): as accepted.
        Duplicate => "Duplicate",
    }
}

wire_enum! {
    /// What the CRM knows of one item (`ItemStatus/State`).
    ItemState, "State" {
        Accepted => "Accepted",
        Rejected => "Rejected",
        /// The CRM never received it.
        Unknown => "Unknown",
    }
}

wire_enum! {
    /// The kind of one response a CRM reports back (`Response/Kind`).
    CrmResponseKind, "Kind" {
        Delivered => "Delivered",
        Undelivered => "Undelivered",
        Shown => "Shown",
        Read => "Read",
        Clicked => "Clicked",
        OfferAccepted => "OfferAccepted",
        OfferDeclined => "OfferDeclined",
        Interested => "Interested",
        OptedOut => "OptedOut",
    }
}

wire_enum! {
    /// What the hub did with one submitted response (`Result/Outcome`).
    ResponseOutcome, "Outcome" {
        Recorded => "Recorded",
        /// Same `ResponseId` seen before: not recorded again.
        Duplicate => "Duplicate",
        /// Neither the `MessageId` nor the `CrmId` matches a communication of this caller.
        UnknownMessage => "UnknownMessage",
        Invalid => "Invalid",
    }
}

impl TargetSystem {
    /// The hub channel this target system is.
    pub const fn channel(self) -> ChannelId {
        match self {
            TargetSystem::Amdocs => ChannelId::Amdocs,
            TargetSystem::CrmB2c => ChannelId::CrmB2c,
        }
    }

    /// The target system of a channel reached through the ESB, if it is one.
    pub const fn for_channel(channel: ChannelId) -> Option<TargetSystem> {
        match channel {
            ChannelId::Amdocs => Some(TargetSystem::Amdocs),
            ChannelId::CrmB2c => Some(TargetSystem::CrmB2c),
            _ => None,
        }
    }
}

impl SourceSystem {
    /// The hub channel whose responses this source system reports.
    pub const fn channel(self) -> ChannelId {
        match self {
            SourceSystem::SapCrm => ChannelId::SapCrm,
            SourceSystem::Amdocs => ChannelId::Amdocs,
            SourceSystem::CrmB2c => ChannelId::CrmB2c,
        }
    }

    /// The source system of a SOAP channel, if it is one.
    pub const fn for_channel(channel: ChannelId) -> Option<SourceSystem> {
        match channel {
            ChannelId::SapCrm => Some(SourceSystem::SapCrm),
            ChannelId::Amdocs => Some(SourceSystem::Amdocs),
            ChannelId::CrmB2c => Some(SourceSystem::CrmB2c),
            _ => None,
        }
    }
}

impl ItemStatusCode {
    /// `Accepted` and `Duplicate` both mean the CRM has the item.
    pub const fn is_accepted(self) -> bool {
        matches!(self, ItemStatusCode::Accepted | ItemStatusCode::Duplicate)
    }
}

impl CrmResponseKind {
    /// The hub's response kind for this CRM response kind.
    pub const fn response_kind(self) -> ResponseKind {
        match self {
            CrmResponseKind::Delivered => ResponseKind::Delivered,
            CrmResponseKind::Undelivered => ResponseKind::Undelivered,
            CrmResponseKind::Shown => ResponseKind::Shown,
            CrmResponseKind::Read => ResponseKind::Read,
            CrmResponseKind::Clicked => ResponseKind::Clicked,
            CrmResponseKind::OfferAccepted => ResponseKind::OfferAccepted,
            CrmResponseKind::OfferDeclined => ResponseKind::OfferDeclined,
            CrmResponseKind::Interested => ResponseKind::Interested,
            CrmResponseKind::OptedOut => ResponseKind::OptedOut,
        }
    }
}

/// The two CRM-side services the hub calls; the namespace of their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrmService {
    /// SAP CRM campaign service (channel `sap_crm`).
    SapCrm,
    /// CRM ESB service (channels `amdocs` and `crm_b2c`).
    Esb,
}

impl CrmService {
    /// Target namespace of the service's schema.
    pub const fn ns(self) -> &'static str {
        match self {
            CrmService::SapCrm => SAP_NS,
            CrmService::Esb => ESB_NS,
        }
    }

    /// soapAction of `SendCommunications`.
    pub const fn send_action(self) -> &'static str {
        match self {
            CrmService::SapCrm => SAP_SEND_ACTION,
            CrmService::Esb => ESB_SEND_ACTION,
        }
    }

    /// soapAction of `GetCommunicationStatus`.
    pub const fn status_action(self) -> &'static str {
        match self {
            CrmService::SapCrm => SAP_STATUS_ACTION,
            CrmService::Esb => ESB_STATUS_ACTION,
        }
    }

    /// The service for a target system: `None` is SAP CRM (its messages carry no target).
    pub const fn for_target(target: Option<TargetSystem>) -> CrmService {
        match target {
            None => CrmService::SapCrm,
            Some(_) => CrmService::Esb,
        }
    }

    /// The service and target system a channel is reached through, if it is a CRM channel.
    pub const fn for_channel(channel: ChannelId) -> Option<(CrmService, Option<TargetSystem>)> {
        match channel {
            ChannelId::SapCrm => Some((CrmService::SapCrm, None)),
            ChannelId::Amdocs => Some((CrmService::Esb, Some(TargetSystem::Amdocs))),
            ChannelId::CrmB2c => Some((CrmService::Esb, Some(TargetSystem::CrmB2c))),
            _ => None,
        }
    }
}

/// One `Attribute` of a communication item: a free name/value pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: String,
}

/// One communication handed to a CRM (`cmn:CommunicationItem`).
#[derive(Debug, Clone, PartialEq)]
pub struct CommunicationItem {
    /// Our communication id (a UUID): the CRM's idempotency key.
    pub message_id: String,
    pub campaign_id: String,
    pub customer_id: String,
    pub recipient: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub offer_code: Option<String>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub attributes: Vec<Attribute>,
}

/// The CRM's answer for one item of a bundle (`cmn:ItemResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemResult {
    pub message_id: String,
    pub status: ItemStatusCode,
    /// The CRM's own id for the item.
    pub crm_id: Option<String>,
    pub error_code: Option<String>,
    pub error_text: Option<String>,
}

/// What the CRM knows of one item (`cmn:ItemStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemStatus {
    pub message_id: String,
    pub state: ItemState,
    pub crm_id: Option<String>,
    pub error_text: Option<String>,
}

/// `SendCommunications`: a bundle of 1 to [`MAX_BUNDLE`] items. `target_system: None` is the SAP
/// CRM campaign service's message, `Some` the CRM ESB's.
#[derive(Debug, Clone, PartialEq)]
pub struct SendCommunications {
    pub target_system: Option<TargetSystem>,
    pub bundle_id: String,
    pub items: Vec<CommunicationItem>,
}

impl SendCommunications {
    /// The service this message is addressed to.
    pub const fn service(&self) -> CrmService {
        CrmService::for_target(self.target_system)
    }

    pub const fn soap_action(&self) -> &'static str {
        self.service().send_action()
    }
}

/// `SendCommunicationsResponse`: one result per item, in the order of the items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendCommunicationsResponse {
    pub bundle_id: String,
    pub results: Vec<ItemResult>,
}

/// `GetCommunicationStatus`: 1 to [`MAX_BUNDLE`] of our message ids. `target_system` as in
/// [`SendCommunications`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetCommunicationStatus {
    pub target_system: Option<TargetSystem>,
    pub message_ids: Vec<String>,
}

impl GetCommunicationStatus {
    /// The service this message is addressed to.
    pub const fn service(&self) -> CrmService {
        CrmService::for_target(self.target_system)
    }

    pub const fn soap_action(&self) -> &'static str {
        self.service().status_action()
    }
}

/// `GetCommunicationStatusResponse`: one status per asked message id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetCommunicationStatusResponse {
    pub statuses: Vec<ItemStatus>,
}

/// One response a CRM reports (`Response` of `SubmitResponses`). At least one of `message_id`
/// and `crm_id` is present (the codec refuses a response with neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmResponse {
    /// The caller's unique id of this response: the deduplication key.
    pub response_id: String,
    /// Our communication id.
    pub message_id: Option<String>,
    /// The CRM's own id of the item.
    pub crm_id: Option<String>,
    pub kind: CrmResponseKind,
    pub occurred_at: DateTime<Utc>,
    pub detail: Option<String>,
}

/// `SubmitResponses`: what SAP CRM or the ESB calls the hub with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitResponses {
    pub source_system: SourceSystem,
    pub responses: Vec<CrmResponse>,
}

impl SubmitResponses {
    pub const fn soap_action(&self) -> &'static str {
        SUBMIT_RESPONSES_ACTION
    }
}

/// The hub's answer for one submitted response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseResult {
    pub response_id: String,
    pub outcome: ResponseOutcome,
    pub error_text: Option<String>,
}

/// `SubmitResponsesResponse`: one result per response, in the order of the responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitResponsesResponse {
    pub results: Vec<ResponseResult>,
}

/// The `ClmFault` fault detail (`cmn:ClmFault`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClmFault {
    pub code: String,
    pub text: String,
    /// Whether the same request may succeed later (`Server` faults).
    pub retryable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_their_wire_values() {
        fn check<T: FromStr + Copy + PartialEq + fmt::Debug + fmt::Display>(all: &[T]) {
            for v in all {
                let back: T = v.to_string().parse().ok().unwrap();
                assert_eq!(back, *v);
            }
        }
        check(TargetSystem::ALL);
        check(SourceSystem::ALL);
        check(ItemStatusCode::ALL);
        check(ItemState::ALL);
        check(CrmResponseKind::ALL);
        check(ResponseOutcome::ALL);
        assert_eq!(TargetSystem::CrmB2c.as_str(), "CRM_B2C");
        assert_eq!(SourceSystem::SapCrm.as_str(), "SAP_CRM");
        assert_eq!(
            "accepted".parse::<ItemStatusCode>(),
            Err(UnknownValue("Status"))
        );
        assert!("CRM_B2C ".parse::<TargetSystem>().is_err());
    }

    #[test]
    fn nine_response_kinds_map_to_hub_kinds() {
        assert_eq!(CrmResponseKind::ALL.len(), 9);
        for k in CrmResponseKind::ALL {
            // The hub's kind has the same name in snake case.
            let snake: String = k
                .as_str()
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    let lower = c.to_ascii_lowercase();
                    if c.is_ascii_uppercase() && i > 0 {
                        vec!['_', lower]
                    } else {
                        vec![lower]
                    }
                })
                .collect();
            assert_eq!(k.response_kind().as_str(), snake);
        }
    }

    #[test]
    fn services_and_actions_follow_the_target() {
        let send = SendCommunications {
            target_system: None,
            bundle_id: "b".into(),
            items: vec![],
        };
        assert_eq!(send.service(), CrmService::SapCrm);
        assert_eq!(send.soap_action(), SAP_SEND_ACTION);
        let status = GetCommunicationStatus {
            target_system: Some(TargetSystem::Amdocs),
            message_ids: vec![],
        };
        assert_eq!(status.service(), CrmService::Esb);
        assert_eq!(status.soap_action(), ESB_STATUS_ACTION);
        assert_eq!(
            CrmService::for_channel(ChannelId::CrmB2c),
            Some((CrmService::Esb, Some(TargetSystem::CrmB2c)))
        );
        assert_eq!(CrmService::for_channel(ChannelId::Sms), None);
        for t in TargetSystem::ALL {
            assert_eq!(TargetSystem::for_channel(t.channel()), Some(*t));
        }
        for s in SourceSystem::ALL {
            assert_eq!(SourceSystem::for_channel(s.channel()), Some(*s));
        }
        assert!(ItemStatusCode::Duplicate.is_accepted());
        assert!(!ItemStatusCode::Rejected.is_accepted());
    }
}
