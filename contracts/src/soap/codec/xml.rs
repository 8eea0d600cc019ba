//! A small, defensive XML reader: bytes to a tree of namespace-resolved elements.
//!
//! Refuses before anything is expanded: DTDs (so no external or recursive entities can exist),
//! entity references other than the five predefined ones, processing instructions. Bounded in
//! size and depth; never recurses over the input.
//!
//! Memory is bounded by the input: a namespace URI is copied once per declaration and shared
//! ([`Rc`]) by every element, attribute and QName text in its scope, so a long URI on an element
//! with many children costs its length once, not once per child; everything else a node holds
//! (names, values, text) is at most the bytes it was read from, and the nodes themselves are
//! bounded by [`Limits::max_nodes`].

use std::rc::Rc;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{PrefixDeclaration, QName};
use quick_xml::reader::NsReader;

use super::{Limits, SoapError};

/// The namespace bound to the `xml` prefix (never declared).
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace bound to the `xmlns` prefix (never declared).
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// One element: its expanded name, attributes, child elements and text content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    /// Namespace URI (shared with every name in the declaration's scope); `None` for an element
    /// in no namespace.
    pub ns: Option<Rc<str>>,
    pub local: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Node>,
    /// All character data directly inside the element (text, references, CDATA), concatenated;
    /// comments dropped.
    pub text: String,
    /// When the (trimmed) text is a prefixed QName (`soap:Client`), the namespace its prefix is
    /// bound to in the element's scope.
    pub text_ns: Option<Rc<str>>,
}

/// One attribute (namespace declarations are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Attr {
    pub ns: Option<Rc<str>>,
    pub local: String,
    pub value: String,
}

impl Node {
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.local == local
    }

    pub fn attr(&self, ns: Option<&str>, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.as_deref() == ns && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// Child elements in `ns` named `local`.
    pub fn children_named<'a, 'n>(
        &'a self,
        ns: &'n str,
        local: &'n str,
    ) -> impl Iterator<Item = &'a Node> + use<'a, 'n> {
        self.children.iter().filter(move |c| c.is(ns, local))
    }
}

/// Reads `bytes` (UTF-8, or UTF-16 with a byte order mark) into the root element's tree.
pub(super) fn parse(bytes: &[u8], limits: Limits) -> Result<Node, SoapError> {
    read(bytes, limits, false).map(|(root, _)| root)
}

/// Reads `bytes` up to the start of the root's `Body` child (in the root's namespace): the root
/// with the children before it (the `Header`), or `None` when the document has no such `Body`.
/// Nothing after the `Body`'s start tag is read, so neither its errors nor its cost count.
pub(super) fn parse_head(bytes: &[u8], limits: Limits) -> Result<Option<Node>, SoapError> {
    read(bytes, limits, true).map(|(root, stopped)| stopped.then_some(root))
}

/// The tree, and whether the reading stopped at the `Body` (`stop_at_body`).
fn read(bytes: &[u8], limits: Limits, stop_at_body: bool) -> Result<(Node, bool), SoapError> {
    if bytes.len() > limits.max_bytes {
        return Err(SoapError::TooLarge {
            max: limits.max_bytes,
            unit: "bytes",
        });
    }
    let text = decode(bytes)?;
    let mut reader = NsReader::from_str(&text);
    // A SOAP message needs a handful of namespaces; bounds the cost of resolving prefixes.
    reader
        .resolver_mut()
        .set_max_namespace_bindings(MAX_BINDINGS_IN_SCOPE);
    let mut scopes = Scopes::new();
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut nodes = 0usize;
    loop {
        // The reader checks the declarations (`xml` / `xmlns` misuse, bindings in scope); the
        // names are resolved against `scopes`, which shares each URI.
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                let at = reader.error_position();
                return Err(SoapError::NotXml(format!("{} at byte {at}", describe(&e))));
            }
        };
        // The reader passes characters XML 1.0 excludes (U+0000, other C0 controls, U+FFFE,
        // U+FFFF) through; a document with one is not well-formed, and values holding one could
        // not be written back. Checked per event, so that nothing after a `Body` the head stops
        // at is looked at.
        let raw: &str = match &event {
            Event::Start(e) | Event::Empty(e) => e,
            Event::Text(e) => e,
            Event::CData(e) => e,
            Event::Comment(e) => e,
            _ => "",
        };
        if !raw.chars().all(is_xml_char) {
            let at = reader.buffer_position();
            return Err(SoapError::NotXml(format!(
                "character not allowed in XML before byte {at}"
            )));
        }
        match event {
            Event::Decl(decl) => {
                if let Some(enc) = decl.encoding() {
                    let enc = enc.map_err(|_| SoapError::NotXml("bad XML declaration".into()))?;
                    let enc = enc.to_ascii_lowercase();
                    if !matches!(enc.as_str(), "utf-8" | "utf8" | "utf-16" | "us-ascii") {
                        return Err(SoapError::NotXml("unsupported encoding".into()));
                    }
                }
            }
            Event::DocType(_) => return Err(SoapError::Forbidden("DTD (DOCTYPE)")),
            Event::PI(_) => return Err(SoapError::Forbidden("processing instruction")),
            Event::Start(start) => {
                if root.is_some() {
                    return Err(SoapError::NotXml("content after the root element".into()));
                }
                if stack.len() + 1 > limits.max_depth {
                    return Err(SoapError::TooDeep {
                        max: limits.max_depth,
                    });
                }
                scopes.push(stack.len() + 1, &start);
                let node = open(&scopes, &start, &mut nodes, limits)?;
                if stop_at_body
                    && let [envelope] = stack.as_slice()
                    && node.local == "Body"
                    && node.ns.is_some()
                    && node.ns == envelope.ns
                {
                    return Ok((stack.swap_remove(0), true));
                }
                stack.push(node);
            }
            Event::Empty(start) => {
                if root.is_some() {
                    return Err(SoapError::NotXml("content after the root element".into()));
                }
                if stack.len() + 1 > limits.max_depth {
                    return Err(SoapError::TooDeep {
                        max: limits.max_depth,
                    });
                }
                scopes.push(stack.len() + 1, &start);
                let node = open(&scopes, &start, &mut nodes, limits)?;
                if stop_at_body
                    && let [envelope] = stack.as_slice()
                    && node.local == "Body"
                    && node.ns.is_some()
                    && node.ns == envelope.ns
                {
                    return Ok((stack.swap_remove(0), true));
                }
                close(&scopes, node, &mut stack, &mut root);
                scopes.pop(stack.len() + 1);
            }
            Event::End(_) => {
                // The reader checked that the end tag matches the open element.
                let node = stack
                    .pop()
                    .ok_or_else(|| SoapError::NotXml("unexpected end tag".into()))?;
                close(&scopes, node, &mut stack, &mut root);
                scopes.pop(stack.len() + 1);
            }
            Event::Text(t) => match stack.last_mut() {
                Some(top) => top.text.push_str(&t.xml10_content()),
                None if t.chars().all(is_xml_space) => {}
                None => return Err(SoapError::NotXml("text outside the root element".into())),
            },
            Event::CData(c) => match stack.last_mut() {
                Some(top) => top.text.push_str(&c.xml10_content()),
                None => return Err(SoapError::NotXml("CDATA outside the root element".into())),
            },
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) if is_xml_char(c) => c,
                        _ => return Err(SoapError::NotXml("bad character reference".into())),
                    }
                } else {
                    predefined(&r).ok_or(SoapError::Forbidden("entity reference"))?
                };
                match stack.last_mut() {
                    Some(top) => top.text.push(ch),
                    None => return Err(SoapError::NotXml("text outside the root element".into())),
                }
            }
            Event::Comment(_) => {}
            Event::Eof => {
                if !stack.is_empty() {
                    return Err(SoapError::NotXml("unexpected end of document".into()));
                }
                return root
                    .map(|root| (root, false))
                    .ok_or_else(|| SoapError::NotXml("no root element".into()));
            }
        }
    }
}

/// Most namespace declarations in scope at once (the reader refuses more).
const MAX_BINDINGS_IN_SCOPE: usize = 64;

/// The namespace declarations in scope, innermost last; each URI is allocated once, when it is
/// declared, and shared by every name resolved to it.
struct Scopes {
    bindings: Vec<Binding>,
    xml: Rc<str>,
    xmlns: Rc<str>,
}

struct Binding {
    /// Depth of the declaring element (the root is 1).
    depth: usize,
    /// `None` for the default namespace.
    prefix: Option<Box<str>>,
    /// `None` when the declaration undeclares (`xmlns=""`, `xmlns:p=""`).
    uri: Option<Rc<str>>,
}

/// What a name's prefix resolves to.
enum Resolved {
    Bound(Rc<str>),
    Unbound,
    Unknown,
}

impl Scopes {
    fn new() -> Self {
        Scopes {
            bindings: Vec::new(),
            xml: Rc::from(XML_NS),
            xmlns: Rc::from(XMLNS_NS),
        }
    }

    /// Adds the declarations of the element at `depth` (already checked by the reader, which
    /// reads the same raw values).
    fn push(&mut self, depth: usize, start: &BytesStart<'_>) {
        for attr in start.attributes().with_checks(false) {
            let Ok(attr) = attr else { break };
            let prefix = match attr.key.as_namespace_binding() {
                None | Some(PrefixDeclaration::Named("xml" | "xmlns")) => continue,
                Some(PrefixDeclaration::Default) => None,
                Some(PrefixDeclaration::Named(p)) => Some(Box::from(p)),
            };
            let uri = (!attr.value.is_empty()).then(|| Rc::from(attr.value.as_ref()));
            self.bindings.push(Binding { depth, prefix, uri });
        }
    }

    /// Drops the declarations of the element at `depth` and deeper.
    fn pop(&mut self, depth: usize) {
        while self.bindings.last().is_some_and(|b| b.depth >= depth) {
            self.bindings.pop();
        }
    }

    /// `prefix` (`None`: no prefix) of an element name (`use_default`), an attribute name or a
    /// QName text.
    fn resolve(&self, prefix: Option<&str>, use_default: bool) -> Resolved {
        match prefix {
            None if !use_default => Resolved::Unbound,
            None => match self.bindings.iter().rev().find(|b| b.prefix.is_none()) {
                Some(Binding { uri: Some(uri), .. }) => Resolved::Bound(uri.clone()),
                _ => Resolved::Unbound,
            },
            Some("xml") => Resolved::Bound(self.xml.clone()),
            Some("xmlns") => Resolved::Bound(self.xmlns.clone()),
            Some(p) => match self
                .bindings
                .iter()
                .rev()
                .find(|b| b.prefix.as_deref() == Some(p))
            {
                Some(Binding { uri: Some(uri), .. }) => Resolved::Bound(uri.clone()),
                _ => Resolved::Unknown,
            },
        }
    }

    /// The namespace of an element or attribute name.
    fn name_ns(&self, name: QName<'_>, element: bool) -> Result<Option<Rc<str>>, SoapError> {
        match self.resolve(name.prefix().map(|p| p.into_inner()), element) {
            Resolved::Bound(uri) => Ok(Some(uri)),
            Resolved::Unbound => Ok(None),
            Resolved::Unknown => Err(SoapError::NotXml("undeclared namespace prefix".into())),
        }
    }
}

/// Strips a UTF-8 byte order mark, transcodes UTF-16 (with a byte order mark).
fn decode(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, SoapError> {
    let utf16 = |be: bool| -> Result<std::borrow::Cow<'_, str>, SoapError> {
        let body = &bytes[2..];
        if !body.len().is_multiple_of(2) {
            return Err(SoapError::NotXml("truncated UTF-16".into()));
        }
        let units = body.chunks_exact(2).map(|p| {
            if be {
                u16::from_be_bytes([p[0], p[1]])
            } else {
                u16::from_le_bytes([p[0], p[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map(Into::into)
            .map_err(|_| SoapError::NotXml("invalid UTF-16".into()))
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => std::str::from_utf8(rest)
            .map(Into::into)
            .map_err(|_| SoapError::NotXml("invalid UTF-8".into())),
        [0xFE, 0xFF, ..] => utf16(true),
        [0xFF, 0xFE, ..] => utf16(false),
        _ => std::str::from_utf8(bytes)
            .map(Into::into)
            .map_err(|_| SoapError::NotXml("invalid UTF-8".into())),
    }
}

fn open(
    scopes: &Scopes,
    start: &BytesStart<'_>,
    nodes: &mut usize,
    limits: Limits,
) -> Result<Node, SoapError> {
    let mut count = || {
        *nodes += 1;
        if *nodes > limits.max_nodes {
            return Err(SoapError::TooLarge {
                max: limits.max_nodes,
                unit: "elements and attributes",
            });
        }
        Ok(())
    };
    count()?;
    let ns = scopes.name_ns(start.name(), true)?;
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|_| SoapError::NotXml("bad attribute".into()))?;
        count()?;
        if attr.key.as_namespace_binding().is_some() {
            continue;
        }
        check_refs(&attr.value)?;
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|_| SoapError::NotXml("bad attribute value".into()))?;
        // A character reference to a character XML excludes (`&#0;`), as in text.
        if !value.chars().all(is_xml_char) {
            return Err(SoapError::NotXml("bad character reference".into()));
        }
        let ns = scopes.name_ns(attr.key, false)?;
        attrs.push(Attr {
            ns,
            local: attr.key.local_name().as_ref().to_owned(),
            value: value.into_owned(),
        });
    }
    Ok(Node {
        ns,
        local: start.local_name().as_ref().to_owned(),
        attrs,
        children: Vec::new(),
        text: String::new(),
        text_ns: None,
    })
}

/// Finishes `node` (still in its namespace scope) and hangs it into its parent or makes it the
/// root.
fn close(scopes: &Scopes, mut node: Node, stack: &mut [Node], root: &mut Option<Node>) {
    let text = node.text.trim_matches(is_xml_space);
    if node.children.is_empty() && text.len() <= 256 && !text.contains(is_xml_space) {
        let qname = QName(text);
        if let Some(prefix) = qname.prefix()
            && let Resolved::Bound(ns) = scopes.resolve(Some(prefix.into_inner()), true)
        {
            node.text_ns = Some(ns);
        }
    }
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

/// Refuses entity references other than the predefined ones and character references in an
/// attribute value (the reader would otherwise report them as plain syntax errors).
fn check_refs(raw: &str) -> Result<(), SoapError> {
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        rest = &rest[i + 1..];
        let end = rest
            .find(';')
            .ok_or_else(|| SoapError::NotXml("bad attribute value".into()))?;
        let name = &rest[..end];
        if !name.starts_with('#') && predefined(name).is_none() {
            return Err(SoapError::Forbidden("entity reference"));
        }
        rest = &rest[end + 1..];
    }
    Ok(())
}

fn predefined(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

pub(super) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// The `Char` production of XML 1.0.
pub(super) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A short description of a reader error that echoes nothing of the input.
fn describe(e: &quick_xml::Error) -> &'static str {
    use quick_xml::Error;
    match e {
        Error::Io(_) => "read error",
        Error::Syntax(_) => "syntax error",
        Error::IllFormed(_) => "ill-formed document",
        Error::InvalidAttr(_) => "bad attribute",
        Error::Encoding(_) => "bad encoding",
        Error::Escape(_) => "bad reference",
        Error::Namespace(_) => "bad namespace declaration",
    }
}
