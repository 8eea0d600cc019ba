//! Writing envelopes: elements in the order of the XSD sequences, absent optional elements
//! omitted, every text and attribute value escaped. Prefixes: `soap` (the envelope, either
//! version), `sap` / `esb` / `hub` (the service), `cmn` (common types), `wsse`.

use std::fmt::Write as _;

use crate::soap::{
    COMMON_NS, ClmFault, CommunicationItem, CrmService, GetCommunicationStatus,
    GetCommunicationStatusResponse, ItemResult, ItemStatus, RESPONSES_NS, SOAP12_NS,
    SendCommunications, SendCommunicationsResponse, SubmitResponses, SubmitResponsesResponse,
    WSSE_NS, WSSE_PASSWORD_TEXT,
};
use chrono::{DateTime, SecondsFormat, Utc};

use super::xml::is_xml_char;
use super::{Body, Fault, FaultCode, HeaderName, SoapVersion, WsSecurity};

/// A message that can be the content of a SOAP `Body`.
///
/// Implemented by the requests (which know their service from their target system), by
/// `(CrmService, &answer)` for the CRM services' answers, and by [`Body`].
pub trait ToXml {
    /// Appends the body element (the operation's wrapper, or a `Fault`) to `out`.
    fn write_xml(&self, version: SoapVersion, out: &mut String);
}

/// A whole envelope around `body`, with a WS-Security UsernameToken header when `security` is
/// given.
pub fn envelope(
    version: SoapVersion,
    body: &(impl ToXml + ?Sized),
    security: Option<&WsSecurity>,
) -> String {
    let mut out = String::with_capacity(2048);
    open_envelope(&mut out, version);
    if let Some(sec) = security {
        out.push_str("<soap:Header>");
        write_security(&mut out, version, sec);
        out.push_str("</soap:Header>");
    }
    out.push_str("<soap:Body>");
    body.write_xml(version, &mut out);
    close_envelope(&mut out);
    out
}

/// A fault envelope: 1.1 `faultcode` / `faultstring` / `detail`, 1.2 `Code/Value` / `Reason/Text`
/// / `Detail`, with the `ClmFault` detail when given. [`FaultCode::Other`] is written as
/// `Server` / `Receiver`.
pub fn fault_envelope(
    version: SoapVersion,
    code: FaultCode,
    reason: &str,
    detail: Option<&ClmFault>,
) -> String {
    let mut out = String::with_capacity(1024);
    open_envelope(&mut out, version);
    out.push_str("<soap:Body>");
    write_fault(&mut out, version, &code, reason, detail);
    close_envelope(&mut out);
    out
}

/// The `VersionMismatch` fault for an envelope in a namespace this node does not speak, written
/// in `answer_in` (SOAP 1.1 for a 1.1 endpoint; a SOAP 1.2 node answers a 1.1 message in 1.1
/// too), with a SOAP 1.2 `Upgrade` header listing the `supported` envelopes.
pub fn version_mismatch_envelope(answer_in: SoapVersion, supported: &[SoapVersion]) -> String {
    let mut out = String::with_capacity(1024);
    open_envelope(&mut out, answer_in);
    if !supported.is_empty() {
        let _ = write!(out, "<soap:Header><up:Upgrade xmlns:up=\"{SOAP12_NS}\">");
        for v in supported {
            let _ = write!(
                out,
                "<up:SupportedEnvelope qname=\"e:Envelope\" xmlns:e=\"{}\"/>",
                v.ns()
            );
        }
        out.push_str("</up:Upgrade></soap:Header>");
    }
    out.push_str("<soap:Body>");
    write_fault(
        &mut out,
        answer_in,
        &FaultCode::VersionMismatch,
        "unsupported SOAP envelope namespace",
        None,
    );
    close_envelope(&mut out);
    out
}

/// The `MustUnderstand` fault for header blocks this node does not understand; SOAP 1.2 lists
/// them in `NotUnderstood` header blocks.
pub fn must_understand_envelope(version: SoapVersion, not_understood: &[HeaderName]) -> String {
    let mut out = String::with_capacity(1024);
    open_envelope(&mut out, version);
    if version == SoapVersion::V12 && !not_understood.is_empty() {
        out.push_str("<soap:Header>");
        for h in not_understood {
            match &h.ns {
                Some(ns) => {
                    let _ = write!(
                        out,
                        "<soap:NotUnderstood qname=\"h:{}\" xmlns:h=\"{}\"/>",
                        attr(&h.local),
                        attr(ns)
                    );
                }
                None => {
                    let _ = write!(out, "<soap:NotUnderstood qname=\"{}\"/>", attr(&h.local));
                }
            }
        }
        out.push_str("</soap:Header>");
    }
    out.push_str("<soap:Body>");
    write_fault(
        &mut out,
        version,
        &FaultCode::MustUnderstand,
        "a mandatory header block was not understood",
        None,
    );
    close_envelope(&mut out);
    out
}

fn open_envelope(out: &mut String, version: SoapVersion) {
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
    let _ = write!(out, "<soap:Envelope xmlns:soap=\"{}\">", version.ns());
}

fn close_envelope(out: &mut String) {
    out.push_str("</soap:Body></soap:Envelope>");
}

fn write_security(out: &mut String, version: SoapVersion, sec: &WsSecurity) {
    let mu = match version {
        SoapVersion::V11 => "1",
        SoapVersion::V12 => "true",
    };
    let _ = write!(
        out,
        "<wsse:Security xmlns:wsse=\"{WSSE_NS}\" soap:mustUnderstand=\"{mu}\"><wsse:UsernameToken>"
    );
    leaf(out, "wsse:Username", &sec.username);
    let _ = write!(
        out,
        "<wsse:Password Type=\"{WSSE_PASSWORD_TEXT}\">{}</wsse:Password>",
        text(&sec.password)
    );
    out.push_str("</wsse:UsernameToken></wsse:Security>");
}

fn write_fault(
    out: &mut String,
    version: SoapVersion,
    code: &FaultCode,
    reason: &str,
    detail: Option<&ClmFault>,
) {
    let code = match (version, code) {
        (SoapVersion::V11, FaultCode::Client) => "soap:Client",
        (SoapVersion::V11, FaultCode::Server | FaultCode::Other(_)) => "soap:Server",
        (SoapVersion::V12, FaultCode::Client) => "soap:Sender",
        (SoapVersion::V12, FaultCode::Server | FaultCode::Other(_)) => "soap:Receiver",
        (_, FaultCode::VersionMismatch) => "soap:VersionMismatch",
        (_, FaultCode::MustUnderstand) => "soap:MustUnderstand",
    };
    out.push_str("<soap:Fault>");
    match version {
        SoapVersion::V11 => {
            leaf(out, "faultcode", code);
            leaf(out, "faultstring", reason);
            if let Some(d) = detail {
                out.push_str("<detail>");
                write_clm_fault(out, d);
                out.push_str("</detail>");
            }
        }
        SoapVersion::V12 => {
            let _ = write!(
                out,
                "<soap:Code><soap:Value>{code}</soap:Value></soap:Code>"
            );
            let _ = write!(
                out,
                "<soap:Reason><soap:Text xml:lang=\"en\">{}</soap:Text></soap:Reason>",
                text(reason)
            );
            if let Some(d) = detail {
                out.push_str("<soap:Detail>");
                write_clm_fault(out, d);
                out.push_str("</soap:Detail>");
            }
        }
    }
    out.push_str("</soap:Fault>");
}

fn write_clm_fault(out: &mut String, d: &ClmFault) {
    let _ = write!(out, "<cmn:ClmFault xmlns:cmn=\"{COMMON_NS}\">");
    leaf(out, "cmn:Code", &d.code);
    leaf(out, "cmn:Text", &d.text);
    leaf(
        out,
        "cmn:Retryable",
        if d.retryable { "true" } else { "false" },
    );
    out.push_str("</cmn:ClmFault>");
}

// --- the messages -------------------------------------------------------------------------------

const fn prefix(service: CrmService) -> &'static str {
    match service {
        CrmService::SapCrm => "sap",
        CrmService::Esb => "esb",
    }
}

/// `<p:Name xmlns:p="…" xmlns:cmn="…">`, returning the prefix.
fn open_wrapper(out: &mut String, service: CrmService, name: &str) -> &'static str {
    let p = prefix(service);
    let _ = write!(
        out,
        "<{p}:{name} xmlns:{p}=\"{}\" xmlns:cmn=\"{COMMON_NS}\">",
        service.ns()
    );
    p
}

impl ToXml for SendCommunications {
    fn write_xml(&self, _: SoapVersion, out: &mut String) {
        let p = open_wrapper(out, self.service(), "SendCommunications");
        if let Some(t) = self.target_system {
            leaf(out, &format!("{p}:TargetSystem"), t.as_str());
        }
        leaf(out, &format!("{p}:BundleId"), &self.bundle_id);
        for item in &self.items {
            let _ = write!(out, "<{p}:Item>");
            write_item(out, item);
            let _ = write!(out, "</{p}:Item>");
        }
        let _ = write!(out, "</{p}:SendCommunications>");
    }
}

fn write_item(out: &mut String, item: &CommunicationItem) {
    leaf(out, "cmn:MessageId", &item.message_id);
    leaf(out, "cmn:CampaignId", &item.campaign_id);
    leaf(out, "cmn:CustomerId", &item.customer_id);
    opt(out, "cmn:Recipient", item.recipient.as_deref());
    opt(out, "cmn:Subject", item.subject.as_deref());
    opt(out, "cmn:Text", item.text.as_deref());
    opt(out, "cmn:OfferCode", item.offer_code.as_deref());
    opt(
        out,
        "cmn:ValidFrom",
        item.valid_from.map(datetime).as_deref(),
    );
    opt(
        out,
        "cmn:ValidUntil",
        item.valid_until.map(datetime).as_deref(),
    );
    for a in &item.attributes {
        out.push_str("<cmn:Attribute>");
        leaf(out, "cmn:Name", &a.name);
        leaf(out, "cmn:Value", &a.value);
        out.push_str("</cmn:Attribute>");
    }
}

impl ToXml for (CrmService, &SendCommunicationsResponse) {
    fn write_xml(&self, _: SoapVersion, out: &mut String) {
        let (service, msg) = *self;
        let p = open_wrapper(out, service, "SendCommunicationsResponse");
        leaf(out, &format!("{p}:BundleId"), &msg.bundle_id);
        for r in &msg.results {
            let _ = write!(out, "<{p}:Result>");
            write_item_result(out, r);
            let _ = write!(out, "</{p}:Result>");
        }
        let _ = write!(out, "</{p}:SendCommunicationsResponse>");
    }
}

fn write_item_result(out: &mut String, r: &ItemResult) {
    leaf(out, "cmn:MessageId", &r.message_id);
    leaf(out, "cmn:Status", r.status.as_str());
    opt(out, "cmn:CrmId", r.crm_id.as_deref());
    opt(out, "cmn:ErrorCode", r.error_code.as_deref());
    opt(out, "cmn:ErrorText", r.error_text.as_deref());
}

impl ToXml for GetCommunicationStatus {
    fn write_xml(&self, _: SoapVersion, out: &mut String) {
        let p = open_wrapper(out, self.service(), "GetCommunicationStatus");
        if let Some(t) = self.target_system {
            leaf(out, &format!("{p}:TargetSystem"), t.as_str());
        }
        let tag = format!("{p}:MessageId");
        for id in &self.message_ids {
            leaf(out, &tag, id);
        }
        let _ = write!(out, "</{p}:GetCommunicationStatus>");
    }
}

impl ToXml for (CrmService, &GetCommunicationStatusResponse) {
    fn write_xml(&self, _: SoapVersion, out: &mut String) {
        let (service, msg) = *self;
        let p = open_wrapper(out, service, "GetCommunicationStatusResponse");
        for s in &msg.statuses {
            let _ = write!(out, "<{p}:Status>");
            write_item_status(out, s);
            let _ = write!(out, "</{p}:Status>");
        }
        let _ = write!(out, "</{p}:GetCommunicationStatusResponse>");
    }
}

fn write_item_status(out: &mut String, s: &ItemStatus) {
    leaf(out, "cmn:MessageId", &s.message_id);
    leaf(out, "cmn:State", s.state.as_str());
    opt(out, "cmn:CrmId", s.crm_id.as_deref());
    opt(out, "cmn:ErrorText", s.error_text.as_deref());
}

impl ToXml for SubmitResponses {
    fn write_xml(&self, _: SoapVersion, out: &mut String) {
        let _ = write!(out, "<hub:SubmitResponses xmlns:hub=\"{RESPONSES_NS}\">");
        leaf(out, "hub:SourceSystem", self.source_system.as_str());
        for r in &self.responses {
            out.push_str("<hub:Response>");
            leaf(out, "hub:ResponseId", &r.response_id);
            opt(out, "hub:MessageId", r.message_id.as_deref());
            opt(out, "hub:CrmId", r.crm_id.as_deref());
            leaf(out, "hub:Kind", r.kind.as_str());
            leaf(out, "hub:OccurredAt", &datetime(r.occurred_at));
            opt(out, "hub:Detail", r.detail.as_deref());
            out.push_str("</hub:Response>");
        }
        out.push_str("</hub:SubmitResponses>");
    }
}

impl ToXml for SubmitResponsesResponse {
    fn write_xml(&self, _: SoapVersion, out: &mut String) {
        let _ = write!(
            out,
            "<hub:SubmitResponsesResponse xmlns:hub=\"{RESPONSES_NS}\">"
        );
        for r in &self.results {
            out.push_str("<hub:Result>");
            leaf(out, "hub:ResponseId", &r.response_id);
            leaf(out, "hub:Outcome", r.outcome.as_str());
            opt(out, "hub:ErrorText", r.error_text.as_deref());
            out.push_str("</hub:Result>");
        }
        out.push_str("</hub:SubmitResponsesResponse>");
    }
}

/// Writes code, reason and detail as [`fault_envelope`] does; a read `subcode` is not written.
impl ToXml for Fault {
    fn write_xml(&self, version: SoapVersion, out: &mut String) {
        write_fault(out, version, &self.code, &self.reason, self.detail.as_ref());
    }
}

impl ToXml for Body {
    fn write_xml(&self, version: SoapVersion, out: &mut String) {
        match self {
            Body::SendCommunications(m) => m.write_xml(version, out),
            Body::SendCommunicationsResponse(s, m) => (*s, m).write_xml(version, out),
            Body::GetCommunicationStatus(m) => m.write_xml(version, out),
            Body::GetCommunicationStatusResponse(s, m) => (*s, m).write_xml(version, out),
            Body::SubmitResponses(m) => m.write_xml(version, out),
            Body::SubmitResponsesResponse(m) => m.write_xml(version, out),
            Body::Fault(f) => f.write_xml(version, out),
        }
    }
}

// --- text -----------------------------------------------------------------------------------------

/// `2026-01-01T10:00:00Z` (fractional seconds only when there are some).
pub(super) fn datetime(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn leaf(out: &mut String, tag: &str, value: &str) {
    let _ = write!(out, "<{tag}>{}</{tag}>", text(value));
}

fn opt(out: &mut String, tag: &str, value: Option<&str>) {
    if let Some(v) = value {
        leaf(out, tag, v);
    }
}

/// Character data: `&`, `<`, `>` escaped, `\r` as a reference (it would be read back as `\n`),
/// characters XML 1.0 cannot carry replaced by U+FFFD.
pub(super) fn text(s: &str) -> String {
    escape(s, false)
}

/// An attribute value: as [`text`], plus `"` and the whitespace characters that attribute
/// value normalisation would turn into spaces.
pub(super) fn attr(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, in_attr: bool) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '"' if in_attr => out.push_str("&quot;"),
            '\n' if in_attr => out.push_str("&#10;"),
            '\t' if in_attr => out.push_str("&#9;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}
