//! The SOAP envelope codec of the CRM channels (`wsdl/`): writes and reads the messages of
//! [`crate::soap`] in SOAP 1.1 and 1.2 envelopes, faults included.
//!
//! - Writing: [`envelope`] (any message, optionally with a WS-Security UsernameToken header),
//!   [`fault_envelope`], [`version_mismatch_envelope`], [`must_understand_envelope`]. Elements in
//!   the order of the XSD sequences, absent optional elements omitted, text escaped.
//! - Reading: [`parse_envelope`], for the hub's endpoints (requests) and its client side (answers
//!   and faults) alike, and [`parse_prelude`], the version and WS-Security token without the
//!   Body (an endpoint checks its caller before it reads the rest). Namespaces are resolved (any
//!   prefix, default namespaces on any element); `xsi:nil="true"` on an optional element means
//!   absent; unknown elements inside a message are skipped with their subtree; DTDs, entity
//!   references other than the five predefined ones and processing instructions are refused
//!   before anything is expanded; size and depth are bounded by [`Limits`], and memory by the
//!   input (namespace URIs are shared, not copied per name).
//!
//! Every [`SoapError`] message is short and safe to send back to a caller: it names at most an
//! element, never echoes a value.

mod read;
mod write;
mod xml;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::soap::{
    ClmFault, CrmService, GetCommunicationStatus, GetCommunicationStatusResponse, SOAP11_NS,
    SOAP12_NS, SendCommunications, SendCommunicationsResponse, SubmitResponses,
    SubmitResponsesResponse,
};

pub use read::{parse_envelope, parse_prelude};
pub use write::{
    ToXml, envelope, fault_envelope, must_understand_envelope, version_mismatch_envelope,
};

/// The SOAP version of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SoapVersion {
    V11,
    V12,
}

impl SoapVersion {
    /// The envelope namespace.
    pub const fn ns(self) -> &'static str {
        match self {
            SoapVersion::V11 => SOAP11_NS,
            SoapVersion::V12 => SOAP12_NS,
        }
    }

    /// The version whose envelope namespace this is.
    pub fn from_ns(ns: &str) -> Option<SoapVersion> {
        match ns {
            SOAP11_NS => Some(SoapVersion::V11),
            SOAP12_NS => Some(SoapVersion::V12),
            _ => None,
        }
    }

    /// `Content-Type` of a message: 1.1 `text/xml; charset=utf-8` (the action goes in the
    /// `SOAPAction` header), 1.2 `application/soap+xml; charset=utf-8; action="…"`.
    pub fn content_type(self, action: Option<&str>) -> String {
        match (self, action) {
            (SoapVersion::V11, _) => "text/xml; charset=utf-8".to_owned(),
            (SoapVersion::V12, None) => "application/soap+xml; charset=utf-8".to_owned(),
            (SoapVersion::V12, Some(a)) => {
                format!("application/soap+xml; charset=utf-8; action=\"{a}\"")
            }
        }
    }

    /// Value of the `SOAPAction` HTTP header (SOAP 1.1 only; a quoted string, WS-I BP R2744).
    pub fn soap_action_header(self, action: &str) -> Option<String> {
        match self {
            SoapVersion::V11 => Some(format!("\"{action}\"")),
            SoapVersion::V12 => None,
        }
    }

    /// The version a request's `Content-Type` announces: `text/xml` is 1.1,
    /// `application/soap+xml` is 1.2 (parameters and case ignored).
    pub fn from_content_type(content_type: &str) -> Option<SoapVersion> {
        let media = content_type.split(';').next()?.trim();
        if media.eq_ignore_ascii_case("text/xml") {
            Some(SoapVersion::V11)
        } else if media.eq_ignore_ascii_case("application/soap+xml") {
            Some(SoapVersion::V12)
        } else {
            None
        }
    }

    /// HTTP status of a fault answer: 1.1 always 500; 1.2 `Sender` 400, anything else 500.
    pub const fn fault_http_status(self, code: &FaultCode) -> u16 {
        match (self, code) {
            (SoapVersion::V12, FaultCode::Client) => 400,
            _ => 500,
        }
    }
}

/// The class of a SOAP fault. 1.1 `soap:Client` / `soap:Server`, 1.2 `Sender` / `Receiver`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FaultCode {
    /// The request will never be accepted: do not retry.
    Client,
    /// A failure on the callee's side: retry.
    Server,
    /// The envelope's namespace is not one the callee speaks.
    VersionMismatch,
    /// A `mustUnderstand` header the callee does not understand.
    MustUnderstand,
    /// Any other code as read (`{namespace}local` or the raw text); written as `Server`.
    Other(String),
}

/// A SOAP fault, as read from an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub code: FaultCode,
    /// SOAP 1.2 `Subcode/Value` (`{namespace}local`), if any.
    pub subcode: Option<String>,
    /// `faultstring` (1.1) or the first `Reason/Text` (1.2).
    pub reason: String,
    /// The `ClmFault` detail, when there is a readable one.
    pub detail: Option<ClmFault>,
}

impl Fault {
    /// Whether the request may succeed when sent again: the detail's `Retryable` when present,
    /// otherwise a `Server` fault is, anything else is not.
    pub fn retryable(&self) -> bool {
        match &self.detail {
            Some(d) => d.retryable,
            None => self.code == FaultCode::Server,
        }
    }
}

/// A WS-Security UsernameToken with a clear-text password (`PasswordText`; only over TLS).
#[derive(Clone, PartialEq, Eq)]
pub struct WsSecurity {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for WsSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsSecurity")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The body of an envelope: one message of the three services, or a fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// SAP's (`target_system: None`) or the ESB's.
    SendCommunications(SendCommunications),
    /// The answers carry no target system, so the service is read from their namespace.
    SendCommunicationsResponse(CrmService, SendCommunicationsResponse),
    GetCommunicationStatus(GetCommunicationStatus),
    GetCommunicationStatusResponse(CrmService, GetCommunicationStatusResponse),
    SubmitResponses(SubmitResponses),
    SubmitResponsesResponse(SubmitResponsesResponse),
    Fault(Fault),
}

impl Body {
    /// The soapAction of a request message; `None` for answers and faults.
    pub fn soap_action(&self) -> Option<&'static str> {
        match self {
            Body::SendCommunications(m) => Some(m.soap_action()),
            Body::GetCommunicationStatus(m) => Some(m.soap_action()),
            Body::SubmitResponses(m) => Some(m.soap_action()),
            _ => None,
        }
    }

    /// The wrapper element's local name (`"Fault"` for a fault).
    pub const fn element_name(&self) -> &'static str {
        match self {
            Body::SendCommunications(_) => "SendCommunications",
            Body::SendCommunicationsResponse(..) => "SendCommunicationsResponse",
            Body::GetCommunicationStatus(_) => "GetCommunicationStatus",
            Body::GetCommunicationStatusResponse(..) => "GetCommunicationStatusResponse",
            Body::SubmitResponses(_) => "SubmitResponses",
            Body::SubmitResponsesResponse(_) => "SubmitResponsesResponse",
            Body::Fault(_) => "Fault",
        }
    }
}

/// A header block's qualified name: `{ns}local`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderName {
    /// Namespace URI; `None` for an unqualified element.
    pub ns: Option<String>,
    pub local: String,
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ns {
            Some(ns) => write!(f, "{{{ns}}}{}", self.local),
            None => f.write_str(&self.local),
        }
    }
}

/// A parsed envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// From the `Envelope` namespace. The endpoint checks it against the one it was called for.
    pub version: SoapVersion,
    /// The first WS-Security `UsernameToken` of the header, if any.
    pub security: Option<WsSecurity>,
    /// Header blocks (other than WS-Security) marked `mustUnderstand` and addressed to this node
    /// (no `actor` / `role`, or `next` / `ultimateReceiver`): the endpoint answers them with a
    /// `MustUnderstand` fault.
    pub must_understand: Vec<HeaderName>,
    pub body: Body,
}

/// The start of an envelope, up to its `Body` ([`parse_prelude`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prelude {
    pub version: SoapVersion,
    /// The first WS-Security `UsernameToken` of the header, if any.
    pub security: Option<WsSecurity>,
}

/// Bounds on what [`parse_envelope`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of a whole envelope.
    pub max_bytes: usize,
    /// Deepest element nesting (the `Envelope` is depth 1).
    pub max_depth: usize,
    /// Most elements and attributes together: bounds the memory a small but dense document
    /// (`<a/><a/>…`) can make the reader allocate.
    pub max_nodes: usize,
}

impl Limits {
    /// 8 MiB (1000 items of a few KiB each), 32 levels (a message needs 6), 100 000 elements
    /// and attributes (a full bundle of 1000 items needs 10 to 30 000).
    pub const DEFAULT: Limits = Limits {
        max_bytes: 8 * 1024 * 1024,
        max_depth: 32,
        max_nodes: 100_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Why an envelope could not be read. Every message is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoapError {
    /// Not well-formed XML (or not UTF-8 / UTF-16).
    #[error("not well-formed XML: {0}")]
    NotXml(String),
    /// A DTD, an entity reference other than the predefined ones, a processing instruction.
    #[error("forbidden XML construct: {0}")]
    Forbidden(&'static str),
    /// Over [`Limits::max_bytes`] (`unit` "bytes") or [`Limits::max_nodes`] (`unit`
    /// "elements and attributes").
    #[error("request over the limit of {max} {unit}")]
    TooLarge { max: usize, unit: &'static str },
    #[error("elements nested deeper than {max} levels")]
    TooDeep { max: usize },
    /// Well-formed XML, but no SOAP `Envelope` with a `Body`.
    #[error("not a SOAP envelope: {0}")]
    NotAnEnvelope(&'static str),
    /// An `Envelope` in a namespace that is neither SOAP 1.1 nor SOAP 1.2.
    #[error("unsupported SOAP envelope namespace")]
    VersionMismatch,
    /// The body element (`{ns}local`, shortened) is no operation of these services.
    #[error("unknown operation {0}")]
    UnknownOperation(String),
    /// The message breaks its schema; the text names the element.
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl SoapError {
    /// The fault code to answer with: `VersionMismatch` for an unknown envelope namespace,
    /// `Client` (1.2 `Sender`) for everything else.
    pub const fn fault_code(&self) -> FaultCode {
        match self {
            SoapError::VersionMismatch => FaultCode::VersionMismatch,
            _ => FaultCode::Client,
        }
    }

    /// A stable code for the `ClmFault` detail.
    pub const fn clm_code(&self) -> &'static str {
        match self {
            SoapError::NotXml(_) => "NOT_XML",
            SoapError::Forbidden(_) => "FORBIDDEN",
            SoapError::TooLarge { .. } => "TOO_LARGE",
            SoapError::TooDeep { .. } => "TOO_DEEP",
            SoapError::NotAnEnvelope(_) => "NOT_AN_ENVELOPE",
            SoapError::VersionMismatch => "VERSION_MISMATCH",
            SoapError::UnknownOperation(_) => "UNKNOWN_OPERATION",
            SoapError::Invalid(_) => "INVALID",
        }
    }

    /// The `ClmFault` detail for this error (never retryable: the same bytes fail again).
    pub fn clm_fault(&self) -> ClmFault {
        ClmFault {
            code: self.clm_code().to_owned(),
            text: self.to_string(),
            retryable: false,
        }
    }
}
