//! Reading envelopes: the element tree of [`super::xml`] to the messages of
//! [`crate::soap`].
//!
//! Lenient where real clients differ (prefixes, namespace declarations, order, unknown elements,
//! `xsi:nil`, whitespace around values), strict on what the schema requires (required elements,
//! enumerations, dateTimes with a zone, 1 to 1000 repetitions).

use crate::soap::{
    Attribute, COMMON_NS, ClmFault, CommunicationItem, CrmResponse, CrmService, ESB_NS,
    GetCommunicationStatus, GetCommunicationStatusResponse, ItemResult, ItemStatus, MAX_BUNDLE,
    RESPONSES_NS, ResponseResult, SAP_NS, SendCommunications, SendCommunicationsResponse,
    SubmitResponses, SubmitResponsesResponse, WSSE_NS, WSSE_PASSWORD_TEXT, XSI_NS,
};
use chrono::{DateTime, NaiveDateTime, Utc};

use super::xml::{self, Node, is_xml_space};
use super::{
    Body, Fault, FaultCode, HeaderName, Limits, Parsed, Prelude, SoapError, SoapVersion, WsSecurity,
};

/// Reads one SOAP 1.1 or 1.2 envelope.
///
/// The body is dispatched on the first `Body` child's namespace and local name. Refused:
/// anything over `limits`, DTDs and non-predefined entities ([`SoapError::Forbidden`]), an
/// `Envelope` in an unknown namespace ([`SoapError::VersionMismatch`]), an unknown body element
/// ([`SoapError::UnknownOperation`]), a message breaking its schema ([`SoapError::Invalid`]).
pub fn parse_envelope(bytes: &[u8], limits: Limits) -> Result<Parsed, SoapError> {
    let root = xml::parse(bytes, limits)?;
    if root.local != "Envelope" {
        return Err(SoapError::NotAnEnvelope("the root element is no Envelope"));
    }
    let version = match root.ns.as_deref().and_then(SoapVersion::from_ns) {
        Some(v) => v,
        None => return Err(SoapError::VersionMismatch),
    };
    let env = version.ns();
    let mut header = None;
    let mut body = None;
    for child in &root.children {
        if child.is(env, "Header") && header.is_none() && body.is_none() {
            header = Some(child);
        } else if child.is(env, "Body") && body.is_none() {
            body = Some(child);
        }
        // SOAP 1.1 allows further elements after the Body; nothing reads them.
    }
    let body = body.ok_or(SoapError::NotAnEnvelope("no Body"))?;
    let (security, must_understand) = match header {
        Some(h) => read_header(h, version)?,
        None => (None, Vec::new()),
    };
    let mut elements = body.children.iter();
    let first = elements
        .next()
        .ok_or_else(|| SoapError::Invalid("empty Body".into()))?;
    if elements.next().is_some() {
        return Err(SoapError::Invalid("more than one element in Body".into()));
    }
    let body = read_body(first, version)?;
    Ok(Parsed {
        version,
        security,
        must_understand,
        body,
    })
}

/// Reads the start of an envelope, up to its `Body`: the version and the WS-Security
/// `UsernameToken`, as [`parse_envelope`] would read them, so an endpoint can turn away an unknown
/// caller before reading the body. Reads nothing after the `Body`'s start tag; memory and time
/// are bounded by the header.
///
/// `None` when the start alone does not tell (not well-formed before the `Body`, no `Body`, an
/// unknown envelope namespace, a header [`parse_envelope`] refuses, …): read the whole envelope
/// then, for the error it answers.
pub fn parse_prelude(bytes: &[u8], limits: Limits) -> Option<Prelude> {
    let root = xml::parse_head(bytes, limits).ok()??;
    if root.local != "Envelope" {
        return None;
    }
    let version = root.ns.as_deref().and_then(SoapVersion::from_ns)?;
    // Everything read precedes the Body; the first Header counts, as in `parse_envelope`.
    let security = match root.children_named(version.ns(), "Header").next() {
        Some(h) => read_header(h, version).ok()?.0,
        None => None,
    };
    Some(Prelude { version, security })
}

type HeaderParts = (Option<WsSecurity>, Vec<HeaderName>);

fn read_header(header: &Node, version: SoapVersion) -> Result<HeaderParts, SoapError> {
    let env = version.ns();
    let mut security = None;
    let mut must_understand = Vec::new();
    for block in &header.children {
        if block.is(WSSE_NS, "Security") {
            if security.is_none() {
                security = read_security(block)?;
            }
            continue;
        }
        let mu = block
            .attr(Some(env), "mustUnderstand")
            .is_some_and(|v| matches!(v.trim_matches(is_xml_space), "1" | "true"));
        let for_us = match version {
            SoapVersion::V11 => block
                .attr(Some(env), "actor")
                .is_none_or(|a| a == "http://schemas.xmlsoap.org/soap/actor/next"),
            SoapVersion::V12 => block.attr(Some(env), "role").is_none_or(|r| {
                matches!(
                    r,
                    "http://www.w3.org/2003/05/soap-envelope/role/next"
                        | "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver"
                )
            }),
        };
        if mu && for_us {
            must_understand.push(HeaderName {
                ns: block.ns.as_deref().map(|ns| short(ns, 120)),
                local: short(&block.local, 64),
            });
        }
    }
    Ok((security, must_understand))
}

fn read_security(security: &Node) -> Result<Option<WsSecurity>, SoapError> {
    let Some(token) = security.children_named(WSSE_NS, "UsernameToken").next() else {
        return Ok(None);
    };
    let username = token
        .children_named(WSSE_NS, "Username")
        .next()
        .ok_or_else(|| invalid("UsernameToken", "Username missing"))?;
    let password = token
        .children_named(WSSE_NS, "Password")
        .next()
        .ok_or_else(|| invalid("UsernameToken", "Password missing"))?;
    // No Type means PasswordText (WSS UsernameToken Profile 1.0).
    if password
        .attr(None, "Type")
        .is_some_and(|t| t.trim_matches(is_xml_space) != WSSE_PASSWORD_TEXT)
    {
        return Err(invalid("Password", "only PasswordText is supported"));
    }
    Ok(Some(WsSecurity {
        username: username.text.trim_matches(is_xml_space).to_owned(),
        password: password.text.clone(),
    }))
}

fn read_body(el: &Node, version: SoapVersion) -> Result<Body, SoapError> {
    let ns = el.ns.as_deref().unwrap_or("");
    let service = match ns {
        SAP_NS => Some(CrmService::SapCrm),
        ESB_NS => Some(CrmService::Esb),
        _ => None,
    };
    match (service, ns, el.local.as_str()) {
        (Some(s), _, "SendCommunications") => read_send(el, s).map(Body::SendCommunications),
        (Some(s), _, "SendCommunicationsResponse") => {
            read_send_response(el, s).map(|r| Body::SendCommunicationsResponse(s, r))
        }
        (Some(s), _, "GetCommunicationStatus") => {
            read_status(el, s).map(Body::GetCommunicationStatus)
        }
        (Some(s), _, "GetCommunicationStatusResponse") => {
            read_status_response(el, s).map(|r| Body::GetCommunicationStatusResponse(s, r))
        }
        (None, RESPONSES_NS, "SubmitResponses") => read_submit(el).map(Body::SubmitResponses),
        (None, RESPONSES_NS, "SubmitResponsesResponse") => {
            read_submit_response(el).map(Body::SubmitResponsesResponse)
        }
        _ if el.is(version.ns(), "Fault") => Ok(Body::Fault(read_fault(el, version))),
        _ => Err(SoapError::UnknownOperation(match &el.ns {
            Some(ns) => format!("{{{}}}{}", short(ns, 100), short(&el.local, 64)),
            None => short(&el.local, 64),
        })),
    }
}

// --- the messages -------------------------------------------------------------------------------

fn read_send(el: &Node, service: CrmService) -> Result<SendCommunications, SoapError> {
    let f = Fields::new(el, service.ns(), "SendCommunications");
    let target_system = match service {
        CrmService::SapCrm => None,
        CrmService::Esb => Some(f.required_enum("TargetSystem")?),
    };
    Ok(SendCommunications {
        target_system,
        bundle_id: f.required_token("BundleId")?,
        items: f.repeated("Item", read_item)?,
    })
}

fn read_send_response(
    el: &Node,
    service: CrmService,
) -> Result<SendCommunicationsResponse, SoapError> {
    let f = Fields::new(el, service.ns(), "SendCommunicationsResponse");
    Ok(SendCommunicationsResponse {
        bundle_id: f.required_token("BundleId")?,
        results: f.repeated("Result", read_item_result)?,
    })
}

fn read_status(el: &Node, service: CrmService) -> Result<GetCommunicationStatus, SoapError> {
    let f = Fields::new(el, service.ns(), "GetCommunicationStatus");
    let target_system = match service {
        CrmService::SapCrm => None,
        CrmService::Esb => Some(f.required_enum("TargetSystem")?),
    };
    Ok(GetCommunicationStatus {
        target_system,
        message_ids: f.repeated("MessageId", |n, ctx| required_token_of(n, &ctx))?,
    })
}

fn read_status_response(
    el: &Node,
    service: CrmService,
) -> Result<GetCommunicationStatusResponse, SoapError> {
    let f = Fields::new(el, service.ns(), "GetCommunicationStatusResponse");
    Ok(GetCommunicationStatusResponse {
        statuses: f.repeated("Status", read_item_status)?,
    })
}

fn read_submit(el: &Node) -> Result<SubmitResponses, SoapError> {
    let f = Fields::new(el, RESPONSES_NS, "SubmitResponses");
    Ok(SubmitResponses {
        source_system: f.required_enum("SourceSystem")?,
        responses: f.repeated("Response", read_response)?,
    })
}

fn read_submit_response(el: &Node) -> Result<SubmitResponsesResponse, SoapError> {
    let f = Fields::new(el, RESPONSES_NS, "SubmitResponsesResponse");
    Ok(SubmitResponsesResponse {
        results: f.repeated("Result", read_response_result)?,
    })
}

// --- the types inside them ------------------------------------------------------------------------

fn read_item(el: &Node, ctx: String) -> Result<CommunicationItem, SoapError> {
    let f = Fields::new(el, COMMON_NS, ctx);
    Ok(CommunicationItem {
        message_id: f.required_token("MessageId")?,
        campaign_id: f.required_token("CampaignId")?,
        customer_id: f.required_token("CustomerId")?,
        recipient: f.optional_token("Recipient")?,
        subject: f.optional_text("Subject")?,
        text: f.optional_text("Text")?,
        offer_code: f.optional_token("OfferCode")?,
        valid_from: f.optional_datetime("ValidFrom")?,
        valid_until: f.optional_datetime("ValidUntil")?,
        attributes: f.unbounded("Attribute", |n, ctx| {
            let f = Fields::new(n, COMMON_NS, ctx);
            Ok(Attribute {
                name: f.required_token("Name")?,
                value: f.required_text("Value")?,
            })
        })?,
    })
}

fn read_item_result(el: &Node, ctx: String) -> Result<ItemResult, SoapError> {
    let f = Fields::new(el, COMMON_NS, ctx);
    Ok(ItemResult {
        message_id: f.required_token("MessageId")?,
        status: f.required_enum("Status")?,
        crm_id: f.optional_token("CrmId")?,
        error_code: f.optional_token("ErrorCode")?,
        error_text: f.optional_text("ErrorText")?,
    })
}

fn read_item_status(el: &Node, ctx: String) -> Result<ItemStatus, SoapError> {
    let f = Fields::new(el, COMMON_NS, ctx);
    Ok(ItemStatus {
        message_id: f.required_token("MessageId")?,
        state: f.required_enum("State")?,
        crm_id: f.optional_token("CrmId")?,
        error_text: f.optional_text("ErrorText")?,
    })
}

/// A `Response` with neither `MessageId` nor `CrmId` is read as it is: the contract answers it
/// `Invalid` per item (`hub-responses-v1.xsd`), not by refusing the whole bundle.
fn read_response(el: &Node, ctx: String) -> Result<CrmResponse, SoapError> {
    let f = Fields::new(el, RESPONSES_NS, ctx);
    Ok(CrmResponse {
        response_id: f.required_token("ResponseId")?,
        message_id: f.optional_token("MessageId")?,
        crm_id: f.optional_token("CrmId")?,
        kind: f.required_enum("Kind")?,
        occurred_at: f.required_datetime("OccurredAt")?,
        detail: f.optional_text("Detail")?,
    })
}

fn read_response_result(el: &Node, ctx: String) -> Result<ResponseResult, SoapError> {
    let f = Fields::new(el, RESPONSES_NS, ctx);
    Ok(ResponseResult {
        response_id: f.required_token("ResponseId")?,
        outcome: f.required_enum("Outcome")?,
        error_text: f.optional_text("ErrorText")?,
    })
}

// --- faults ---------------------------------------------------------------------------------------

/// Reads a fault leniently: a client wants the code and reason of whatever it got.
fn read_fault(el: &Node, version: SoapVersion) -> Fault {
    let env = version.ns();
    let (code, subcode, reason, detail) = match version {
        SoapVersion::V11 => {
            // faultcode, faultstring and detail are unqualified (some servers qualify them).
            let child = |name: &str| {
                el.children
                    .iter()
                    .find(|c| c.local == name && (c.ns.is_none() || c.ns.as_deref() == Some(env)))
            };
            let code = child("faultcode")
                .map(|c| fault_code(c, version))
                .unwrap_or(FaultCode::Other(String::new()));
            let reason = child("faultstring")
                .map(|c| trimmed(&c.text))
                .unwrap_or_default();
            (code, None, reason, child("detail"))
        }
        SoapVersion::V12 => {
            let code_el = el.children_named(env, "Code").next();
            let value = code_el.and_then(|c| c.children_named(env, "Value").next());
            let code = value
                .map(|v| fault_code(v, version))
                .unwrap_or(FaultCode::Other(String::new()));
            let subcode = code_el
                .and_then(|c| c.children_named(env, "Subcode").next())
                .and_then(|s| s.children_named(env, "Value").next())
                .map(qname_text);
            let reason = el
                .children_named(env, "Reason")
                .next()
                .and_then(|r| r.children_named(env, "Text").next())
                .map(|t| trimmed(&t.text))
                .unwrap_or_default();
            (
                code,
                subcode,
                reason,
                el.children_named(env, "Detail").next(),
            )
        }
    };
    let detail = detail
        .and_then(|d| d.children_named(COMMON_NS, "ClmFault").next())
        .and_then(|c| {
            let f = Fields::new(c, COMMON_NS, "ClmFault");
            Some(ClmFault {
                code: f.required_token("Code").ok()?,
                text: f.required_text("Text").ok()?,
                retryable: f.required_bool("Retryable").ok()?,
            })
        });
    Fault {
        code,
        subcode,
        reason,
        detail,
    }
}

fn fault_code(el: &Node, version: SoapVersion) -> FaultCode {
    let text = el.text.trim_matches(is_xml_space);
    let local = text.rsplit_once(':').map_or(text, |(_, l)| l);
    // An unprefixed code, or one in the envelope namespace, is a SOAP code; 1.1 codes may be
    // refined with dots (`Client.Authentication`).
    if el.text_ns.is_none() || el.text_ns.as_deref() == Some(version.ns()) {
        let base = local.split('.').next().unwrap_or(local);
        match base {
            "Client" | "Sender" => return FaultCode::Client,
            "Server" | "Receiver" => return FaultCode::Server,
            "VersionMismatch" => return FaultCode::VersionMismatch,
            "MustUnderstand" => return FaultCode::MustUnderstand,
            _ => {}
        }
    }
    FaultCode::Other(qname_text(el))
}

/// `{ns}local` of a QName-valued element, or its trimmed text when the prefix is unbound.
fn qname_text(el: &Node) -> String {
    let text = el.text.trim_matches(is_xml_space);
    match (&el.text_ns, text.rsplit_once(':')) {
        (Some(ns), Some((_, local))) => format!("{{{}}}{}", short(ns, 100), short(local, 64)),
        _ => short(text, 100),
    }
}

// --- element access -------------------------------------------------------------------------------

/// The children of one complex element in its content namespace, read by name; `ctx` names the
/// element in error messages (`Item 3`).
struct Fields<'a> {
    el: &'a Node,
    ns: &'static str,
    ctx: String,
}

impl<'a> Fields<'a> {
    fn new(el: &'a Node, ns: &'static str, ctx: impl Into<String>) -> Self {
        Fields {
            el,
            ns,
            ctx: ctx.into(),
        }
    }

    /// The one child named `name`, `None` when absent; an error when repeated.
    fn one(&self, name: &str) -> Result<Option<&'a Node>, SoapError> {
        let mut found = self.el.children_named(self.ns, name);
        let first = found.next();
        if found.next().is_some() {
            return Err(invalid(&self.ctx, &format!("{name} repeated")));
        }
        Ok(first)
    }

    fn required(&self, name: &str) -> Result<&'a Node, SoapError> {
        match self.one(name)? {
            None => Err(invalid(&self.ctx, &format!("{name} missing"))),
            Some(n) if is_nil(n) => Err(invalid(&self.ctx, &format!("{name} is nil"))),
            Some(n) => Ok(n),
        }
    }

    /// Absent, nil and empty are all `None`.
    fn optional(&self, name: &str) -> Result<Option<&'a Node>, SoapError> {
        Ok(self
            .one(name)?
            .filter(|n| !is_nil(n) && !n.text.trim_matches(is_xml_space).is_empty()))
    }

    /// An id-like value: surrounding whitespace dropped, must not be empty.
    fn required_token(&self, name: &str) -> Result<String, SoapError> {
        let value = trimmed(&self.required(name)?.text);
        if value.is_empty() {
            return Err(invalid(&self.ctx, &format!("{name} is empty")));
        }
        Ok(value)
    }

    /// Free text, kept as sent (may be empty).
    fn required_text(&self, name: &str) -> Result<String, SoapError> {
        Ok(self.required(name)?.text.clone())
    }

    fn optional_token(&self, name: &str) -> Result<Option<String>, SoapError> {
        Ok(self.optional(name)?.map(|n| trimmed(&n.text)))
    }

    fn optional_text(&self, name: &str) -> Result<Option<String>, SoapError> {
        Ok(self.optional(name)?.map(|n| n.text.clone()))
    }

    fn required_enum<T: std::str::FromStr>(&self, name: &str) -> Result<T, SoapError> {
        let node = self.required(name)?;
        node.text
            .trim_matches(is_xml_space)
            .parse()
            .map_err(|_| invalid(&self.ctx, &format!("{name} has no valid value")))
    }

    fn required_datetime(&self, name: &str) -> Result<DateTime<Utc>, SoapError> {
        parse_datetime(&self.required(name)?.text)
            .ok_or_else(|| invalid(&self.ctx, &format!("{name} is no dateTime with a zone")))
    }

    fn optional_datetime(&self, name: &str) -> Result<Option<DateTime<Utc>>, SoapError> {
        self.optional(name)?
            .map(|n| {
                parse_datetime(&n.text).ok_or_else(|| {
                    invalid(&self.ctx, &format!("{name} is no dateTime with a zone"))
                })
            })
            .transpose()
    }

    fn required_bool(&self, name: &str) -> Result<bool, SoapError> {
        match self.required(name)?.text.trim_matches(is_xml_space) {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(invalid(&self.ctx, &format!("{name} is no boolean"))),
        }
    }

    /// 1 to [`MAX_BUNDLE`] children named `name`, each read by `read` with its context
    /// (`Item 3`).
    fn repeated<T>(
        &self,
        name: &str,
        read: impl Fn(&Node, String) -> Result<T, SoapError>,
    ) -> Result<Vec<T>, SoapError> {
        let count = self.el.children_named(self.ns, name).count();
        if count == 0 {
            return Err(invalid(&self.ctx, &format!("no {name}")));
        }
        if count > MAX_BUNDLE {
            return Err(invalid(
                &self.ctx,
                &format!("more than {MAX_BUNDLE} {name} elements"),
            ));
        }
        self.unbounded(name, read)
    }

    /// Any number of children named `name` (bounded by the envelope size).
    fn unbounded<T>(
        &self,
        name: &str,
        read: impl Fn(&Node, String) -> Result<T, SoapError>,
    ) -> Result<Vec<T>, SoapError> {
        self.el
            .children_named(self.ns, name)
            .enumerate()
            .map(|(i, n)| {
                let ctx = format!("{} {}", name, i + 1);
                if is_nil(n) {
                    return Err(invalid(&self.ctx, &format!("{ctx} is nil")));
                }
                read(n, ctx)
            })
            .collect()
    }
}

fn required_token_of(el: &Node, ctx: &str) -> Result<String, SoapError> {
    if is_nil(el) {
        return Err(invalid(ctx, "is nil"));
    }
    let value = trimmed(&el.text);
    if value.is_empty() {
        return Err(invalid(ctx, "is empty"));
    }
    Ok(value)
}

fn is_nil(el: &Node) -> bool {
    el.attr(Some(XSI_NS), "nil")
        .is_some_and(|v| matches!(v.trim_matches(is_xml_space), "true" | "1"))
}

fn trimmed(s: &str) -> String {
    s.trim_matches(is_xml_space).to_owned()
}

/// An `xsd:dateTime` with a zone (`Z` or `±hh:mm`), converted to UTC. A value without a zone is
/// ambiguous and refused (`cmn:UtcDateTime`).
pub(super) fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim_matches(is_xml_space);
    // xsd:dateTime: yyyy-mm-ddThh:mm:ss(.s+)?(zone)?; chrono's RFC 3339 parser also takes a space
    // or a lower-case t, which xsd does not.
    if s.len() < 20 || s.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    if s.ends_with('z') {
        return None;
    }
    let dt = DateTime::parse_from_rfc3339(s).ok()?;
    // Guard against chrono accepting what xsd does not (e.g. a missing seconds field).
    NaiveDateTime::parse_from_str(&s[..19], "%Y-%m-%dT%H:%M:%S").ok()?;
    Some(dt.with_timezone(&Utc))
}

fn invalid(ctx: &str, what: &str) -> SoapError {
    SoapError::Invalid(format!("{ctx}: {what}"))
}

/// At most `max` characters of `s`, without control characters: safe to put in an answer.
fn short(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().filter(|c| !c.is_control()).nth(max).is_some() {
        out.push('…');
    }
    out
}
