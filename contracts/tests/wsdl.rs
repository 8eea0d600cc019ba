//! The SOAP contracts in `wsdl/`: every WSDL and XSD is well-formed and compiles, the WSDLs
//! declare what `wsdl/README.md` ("The services, v1") specifies, and every sample envelope in
//! `wsdl/samples/` validates against the schemas — or, for the `invalid-*` ones, is rejected for
//! the expected reason, which proves the schemas are strict.
//!
//! Uses `xmllint` (Debian's `libxml2-utils`). A missing `xmllint` fails these tests: they are
//! never skipped (`scripts/test.sh` installs it).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const SOAP11_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
const WSDL_SOAP11: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
const WSDL_SOAP12: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";
const COMMON_NS: &str = "urn:clm:common:v1";

/// The schemas in `wsdl/samples/` (test fixtures, not contracts).
const ENVELOPE_SOAP11: &str = "envelope-soap11.xsd";
const ENVELOPE_SOAP12: &str = "envelope-soap12.xsd";
const SAMPLE_SCHEMAS: &[&str] = &[ENVELOPE_SOAP11, ENVELOPE_SOAP12, "xml.xsd"];

/// One service of `wsdl/README.md`, "The services, v1".
#[derive(Debug)]
struct Service {
    /// File stem: `<stem>-v1.wsdl`, `<stem>-v1.xsd`, samples `<stem>-<operation>-….xml`.
    stem: &'static str,
    namespace: &'static str,
    port_type: &'static str,
    service: &'static str,
    operations: &'static [&'static str],
    /// The placeholder the hub rewrites (or configures) as the endpoint.
    address: &'static str,
    /// Has a SOAP 1.2 binding and port next to the SOAP 1.1 ones.
    soap12: bool,
}

const SERVICES: &[Service] = &[
    Service {
        stem: "sap-crm-campaign",
        namespace: "urn:clm:sap-crm:campaign:v1",
        port_type: "CampaignServicePortType",
        service: "CampaignService",
        operations: &["SendCommunications", "GetCommunicationStatus"],
        address: "http://sap-crm.example/clm/campaign",
        soap12: false,
    },
    Service {
        stem: "crm-esb",
        namespace: "urn:clm:crm-esb:v1",
        port_type: "EsbCommunicationPortType",
        service: "EsbCommunicationService",
        operations: &["SendCommunications", "GetCommunicationStatus"],
        address: "http://crm-esb.example/clm/communications",
        soap12: false,
    },
    Service {
        stem: "hub-responses",
        namespace: "urn:clm:hub:responses:v1",
        port_type: "ResponsePortType",
        service: "ResponseService",
        operations: &["SubmitResponses"],
        address: "http://localhost:8080/soap/responses",
        soap12: true,
    },
];

/// The deliberately invalid samples and a fragment of the error xmllint must report for each.
const INVALID_SAMPLES: &[(&str, &str)] = &[
    (
        "invalid-unknown-element-in-item.xml",
        "Element '{urn:clm:common:v1}Channel': This element is not expected",
    ),
    (
        "invalid-missing-message-id.xml",
        "Expected is ( {urn:clm:common:v1}MessageId )",
    ),
    (
        "invalid-unqualified-children.xml",
        "Element 'MessageId': This element is not expected",
    ),
    (
        "invalid-unknown-enum-value.xml",
        "The value 'Opened' is not an element of the set",
    ),
    (
        "invalid-local-datetime.xml",
        "The value '2026-02-02T12:15:00' is not accepted by the pattern",
    ),
    (
        "invalid-soap12-fault-without-reason.xml",
        "Expected is ( {http://www.w3.org/2003/05/soap-envelope}Reason )",
    ),
];

// --- helpers -----------------------------------------------------------------------------------

fn wsdl_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../wsdl")
}

fn samples_dir() -> PathBuf {
    wsdl_dir().join("samples")
}

/// Runs xmllint (never over the network); fails the test when it is not installed.
fn xmllint(args: &[&str], file: &Path) -> Output {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| match Command::new("xmllint").arg("--version").output() {
        Ok(_) => {}
        Err(e) => panic!(
            "xmllint is required by the wsdl/ tests and could not be run ({e}): \
             apt-get install libxml2-utils (scripts/test.sh does it)"
        ),
    });
    Command::new("xmllint")
        .arg("--nonet")
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running xmllint on {}: {e}", file.display()))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// The string value of an XPath 1.0 expression (xmllint `--xpath`), trimmed.
fn xpath(file: &Path, expr: &str) -> String {
    let out = xmllint(&["--xpath", expr], file);
    assert!(
        out.status.success(),
        "xmllint --xpath '{expr}' {} failed: {}",
        file.display(),
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn xpath_count(file: &Path, expr: &str) -> usize {
    let v = xpath(file, &format!("count({expr})"));
    v.parse()
        .unwrap_or_else(|_| panic!("count({expr}) on {}: not a number: {v:?}", file.display()))
}

/// Files of `dir` with the given extension, sorted.
fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// What a valid sample's name says it is:
/// `<service>-<operation>[-soap12]-(request|response|fault)[-<variant>].xml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
    Fault,
}

#[derive(Debug)]
struct SampleName {
    service: &'static Service,
    operation: &'static str,
    soap12: bool,
    kind: Kind,
}

fn parse_sample_name(name: &str) -> Option<SampleName> {
    let stem = name.strip_suffix(".xml")?;
    for service in SERVICES {
        let Some(rest) = stem
            .strip_prefix(service.stem)
            .and_then(|r| r.strip_prefix('-'))
        else {
            continue;
        };
        for &operation in service.operations {
            let Some(rest) = rest
                .strip_prefix(operation)
                .and_then(|r| r.strip_prefix('-'))
            else {
                continue;
            };
            let (soap12, rest) = match rest.strip_prefix("soap12-") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let (kind_word, variant) = match rest.split_once('-') {
                Some((k, v)) => (k, Some(v)),
                None => (rest, None),
            };
            let kind = match kind_word {
                "request" => Kind::Request,
                "response" => Kind::Response,
                "fault" => Kind::Fault,
                _ => return None,
            };
            if variant.is_some_and(|v| {
                v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            }) {
                return None;
            }
            if soap12 && !service.soap12 {
                return None;
            }
            return Some(SampleName {
                service,
                operation,
                soap12,
                kind,
            });
        }
    }
    None
}

fn envelope_schema(soap12: bool) -> PathBuf {
    samples_dir().join(if soap12 {
        ENVELOPE_SOAP12
    } else {
        ENVELOPE_SOAP11
    })
}

/// Validates `file` against the envelope schema; `Err(xmllint's complaint)` when it does not.
fn validate(file: &Path, soap12: bool) -> Result<(), (i32, String)> {
    let schema = envelope_schema(soap12);
    let schema = schema.to_str().expect("utf-8 path");
    let out = xmllint(&["--noout", "--schema", schema], file);
    if out.status.success() {
        Ok(())
    } else {
        Err((out.status.code().unwrap_or(-1), stderr(&out)))
    }
}

const BODY_CHILD: &str = "/*[local-name()='Envelope']/*[local-name()='Body']/*";

// --- tests -------------------------------------------------------------------------------------

#[test]
fn every_wsdl_and_xsd_is_well_formed() {
    let mut files = Vec::new();
    for dir in [wsdl_dir(), samples_dir()] {
        files.extend(files_with_ext(&dir, "wsdl"));
        files.extend(files_with_ext(&dir, "xsd"));
    }
    assert!(
        files.len() >= 10,
        "expected the WSDLs and XSDs in wsdl/, found {files:?}"
    );
    let failed: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let out = xmllint(&["--noout"], f);
            (!out.status.success()).then(|| format!("{}: {}", name_of(f), stderr(&out)))
        })
        .collect();
    assert!(failed.is_empty(), "not well-formed:\n{}", failed.join("\n"));
}

#[test]
fn every_xsd_compiles() {
    let trivial = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wsdl-trivial-{}.xml", std::process::id()));
    fs::write(&trivial, "<trivial/>\n").expect("writing the trivial document");
    let mut schemas = files_with_ext(&wsdl_dir(), "xsd");
    schemas.extend(files_with_ext(&samples_dir(), "xsd"));
    let mut failed = Vec::new();
    for schema in &schemas {
        let schema_arg = schema.to_str().expect("utf-8 path");
        let out = xmllint(&["--noout", "--schema", schema_arg], &trivial);
        // 3: the trivial document does not validate (expected); 5: the schema did not compile.
        // Any other message (a parser warning such as a skipped import) fails too.
        let err = stderr(&out);
        let only_the_expected = err.lines().all(|l| l.contains("wsdl-trivial-"));
        if out.status.code() != Some(3) || !only_the_expected {
            failed.push(format!("{}: {err}", name_of(schema)));
        }
    }
    assert!(
        failed.is_empty(),
        "schemas that do not compile:\n{}",
        failed.join("\n\n")
    );
}

#[test]
fn schemas_follow_the_conventions() {
    for service in SERVICES {
        let xsd = wsdl_dir().join(format!("{}-v1.xsd", service.stem));
        assert_eq!(
            xpath(&xsd, "string(/*/@targetNamespace)"),
            service.namespace,
            "{xsd:?}"
        );
        for op in service.operations {
            for wrapper in [op.to_string(), format!("{op}Response")] {
                assert_eq!(
                    xpath_count(
                        &xsd,
                        &format!("/*/*[local-name()='element' and @name='{wrapper}']")
                    ),
                    1,
                    "{}: no global wrapper element {wrapper}",
                    name_of(&xsd)
                );
            }
        }
    }
    let mut schemas: Vec<PathBuf> = SERVICES
        .iter()
        .map(|s| wsdl_dir().join(format!("{}-v1.xsd", s.stem)))
        .collect();
    schemas.push(wsdl_dir().join("clm-common-v1.xsd"));
    for xsd in &schemas {
        let name = name_of(xsd);
        assert_eq!(
            xpath(xsd, "string(/*/@elementFormDefault)"),
            "qualified",
            "{name}"
        );
        // Optional (non-repeating) elements are nillable: xsi:nil means absent.
        let not_nillable = xpath_count(
            xsd,
            "//*[local-name()='element' and @minOccurs='0' and not(@maxOccurs) and not(@nillable='true')]",
        );
        assert_eq!(
            not_nillable, 0,
            "{name}: optional elements without nillable=\"true\""
        );
        // Every import names its file, relative, next to the importing schema.
        let imports = xpath_count(xsd, "//*[local-name()='import']");
        let located = xpath_count(
            xsd,
            "//*[local-name()='import' and @namespace and @schemaLocation and not(contains(@schemaLocation, ':'))]",
        );
        assert_eq!(
            imports, located,
            "{name}: an xsd:import without a relative schemaLocation"
        );
    }
    let common = wsdl_dir().join("clm-common-v1.xsd");
    assert_eq!(xpath(&common, "string(/*/@targetNamespace)"), COMMON_NS);
    assert_eq!(
        xpath_count(&common, "/*/*[local-name()='element' and @name='ClmFault']"),
        1,
        "clm-common-v1.xsd: no global ClmFault element"
    );
}

#[test]
fn wsdls_declare_the_contract() {
    for s in SERVICES {
        let wsdl = wsdl_dir().join(format!("{}-v1.wsdl", s.stem));
        let name = name_of(&wsdl);
        let text = fs::read_to_string(&wsdl).expect("reading the WSDL");
        let ns = s.namespace;
        let ops = s.operations.len();
        let bindings = if s.soap12 { 2 } else { 1 };
        let count = |expr: &str| xpath_count(&wsdl, expr);

        assert_eq!(xpath(&wsdl, "string(/*/@targetNamespace)"), ns, "{name}");
        assert!(
            !text.contains("soap/encoding"),
            "{name}: no SOAP encoding (WS-I BP)"
        );
        assert_eq!(
            count("//@use[. != 'literal']"),
            0,
            "{name}: use=\"literal\" only"
        );
        assert_eq!(
            count("//@style[. != 'document']"),
            0,
            "{name}: style=\"document\" only"
        );

        // types: the service schema and the common one, imported by relative file name.
        for (import_ns, file) in [
            (ns, format!("{}-v1.xsd", s.stem)),
            (COMMON_NS, "clm-common-v1.xsd".into()),
        ] {
            assert_eq!(
                count(&format!(
                    "/*/*[local-name()='types']/*[local-name()='schema']/*[local-name()='import' and @namespace='{import_ns}' and @schemaLocation='{file}']"
                )),
                1,
                "{name}: types must import {import_ns} from {file}"
            );
            assert!(wsdl_dir().join(&file).is_file(), "{name}: {file} missing");
        }

        // messages: one part named parameters per input/output message, plus the fault message.
        assert_eq!(
            count("/*/*[local-name()='message']"),
            2 * ops + 1,
            "{name}: messages"
        );
        assert_eq!(
            count("/*/*[local-name()='message' and count(*[local-name()='part']) = 1]"),
            2 * ops + 1,
            "{name}: one part per message"
        );
        assert_eq!(
            count("/*/*[local-name()='message']/*[local-name()='part' and @name='parameters']"),
            2 * ops,
            "{name}: input/output parts are named parameters"
        );
        assert_eq!(
            count(
                "/*/*[local-name()='message' and @name='ClmFault']/*[local-name()='part' and @element='cmn:ClmFault']"
            ),
            1,
            "{name}: fault message with the ClmFault element"
        );

        // port type
        assert_eq!(
            count("/*/*[local-name()='portType']"),
            1,
            "{name}: one port type"
        );
        let pt = format!("/*/*[local-name()='portType' and @name='{}']", s.port_type);
        assert_eq!(
            count(&format!("{pt}/*[local-name()='operation']")),
            ops,
            "{name}: {}",
            s.port_type
        );

        // bindings
        assert_eq!(
            count("/*/*[local-name()='binding']"),
            bindings,
            "{name}: bindings"
        );
        assert_eq!(
            count(&format!(
                "/*/*[local-name()='binding' and @type='tns:{}']/*[local-name()='binding' and @style='document' and @transport='http://schemas.xmlsoap.org/soap/http']",
                s.port_type
            )),
            bindings,
            "{name}: document style over HTTP"
        );
        assert_eq!(
            count(&format!(
                "/*/*[local-name()='binding']/*[local-name()='binding' and namespace-uri()='{WSDL_SOAP11}']"
            )),
            1,
            "{name}: one SOAP 1.1 binding"
        );
        assert_eq!(
            count(&format!(
                "/*/*[local-name()='binding']/*[local-name()='binding' and namespace-uri()='{WSDL_SOAP12}']"
            )),
            bindings - 1,
            "{name}: SOAP 1.2 binding"
        );

        for op in s.operations {
            let in_msg = format!(
                "/*/*[local-name()='message' and @name=substring-after(string({pt}/*[local-name()='operation' and @name='{op}']/*[local-name()='input']/@message), ':')]"
            );
            let out_msg = format!(
                "/*/*[local-name()='message' and @name=substring-after(string({pt}/*[local-name()='operation' and @name='{op}']/*[local-name()='output']/@message), ':')]"
            );
            assert_eq!(
                count(&format!(
                    "{in_msg}/*[local-name()='part' and @element='tns:{op}']"
                )),
                1,
                "{name}: {op} input is the wrapper element tns:{op}"
            );
            assert_eq!(
                count(&format!(
                    "{out_msg}/*[local-name()='part' and @element='tns:{op}Response']"
                )),
                1,
                "{name}: {op} output is the wrapper element tns:{op}Response"
            );
            assert_eq!(
                count(&format!(
                    "{pt}/*[local-name()='operation' and @name='{op}']/*[local-name()='fault' and @name='ClmFault' and @message='tns:ClmFault']"
                )),
                1,
                "{name}: {op} declares the ClmFault fault"
            );
            let bop = format!(
                "/*/*[local-name()='binding']/*[local-name()='operation' and @name='{op}']"
            );
            assert_eq!(
                count(&format!(
                    "{bop}/*[local-name()='operation' and @soapAction='{ns}#{op}']"
                )),
                bindings,
                "{name}: {op} soapAction {ns}#{op} in every binding"
            );
            assert_eq!(
                count(&format!(
                    "{bop}/*[local-name()='input' or local-name()='output']/*[local-name()='body' and @use='literal' and not(@namespace) and not(@encodingStyle)]"
                )),
                2 * bindings,
                "{name}: {op} input/output soap:body use=\"literal\""
            );
            assert_eq!(
                count(&format!(
                    "{bop}/*[local-name()='fault' and @name='ClmFault']/*[local-name()='fault' and @name='ClmFault' and @use='literal']"
                )),
                bindings,
                "{name}: {op} fault in every binding"
            );
        }

        // service and ports
        assert_eq!(
            count("/*/*[local-name()='service']"),
            1,
            "{name}: one service"
        );
        let svc = format!("/*/*[local-name()='service' and @name='{}']", s.service);
        assert_eq!(
            count(&format!("{svc}/*[local-name()='port']")),
            bindings,
            "{name}: ports of {}",
            s.service
        );
        assert_eq!(
            count(&format!(
                "{svc}/*[local-name()='port']/*[local-name()='address' and @location='{}']",
                s.address
            )),
            bindings,
            "{name}: soap:address {}",
            s.address
        );
    }
}

#[test]
fn every_operation_has_its_samples() {
    let present: BTreeSet<String> = files_with_ext(&samples_dir(), "xml")
        .iter()
        .map(|p| name_of(p))
        .collect();
    let mut missing = Vec::new();
    for s in SERVICES {
        for op in s.operations {
            let mut versions = vec![""];
            if s.soap12 {
                versions.push("soap12-");
            }
            for v in versions {
                for kind in ["request", "response", "fault"] {
                    let name = format!("{}-{op}-{v}{kind}.xml", s.stem);
                    if !present.contains(&name) {
                        missing.push(name);
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "missing samples in wsdl/samples/: {missing:?}"
    );
}

#[test]
fn every_sample_validates_against_the_schemas() {
    let mut checked = 0;
    let mut failed = Vec::new();
    let mut unchecked = Vec::new();
    for file in fs::read_dir(samples_dir()).expect("reading wsdl/samples") {
        let path = file.expect("directory entry").path();
        let name = name_of(&path);
        if SAMPLE_SCHEMAS.contains(&name.as_str())
            || INVALID_SAMPLES.iter().any(|(n, _)| *n == name)
        {
            continue; // checked by every_xsd_compiles / invalid_samples_are_rejected
        }
        let Some(sample) = parse_sample_name(&name) else {
            unchecked.push(name);
            continue;
        };
        checked += 1;
        if let Err((code, err)) = validate(&path, sample.soap12) {
            failed.push(format!("{name} (xmllint exit {code}):\n{err}"));
            continue;
        }
        // The body element is what the name says.
        let body = xpath(
            &path,
            &format!("concat(namespace-uri({BODY_CHILD}), ' ', local-name({BODY_CHILD}))"),
        );
        let expected = match sample.kind {
            Kind::Request => format!("{} {}", sample.service.namespace, sample.operation),
            Kind::Response => format!("{} {}Response", sample.service.namespace, sample.operation),
            Kind::Fault => {
                let env = if sample.soap12 {
                    SOAP12_ENV
                } else {
                    SOAP11_ENV
                };
                format!("{env} Fault")
            }
        };
        if body != expected {
            failed.push(format!(
                "{name}: body element is {{{body}}}, expected {{{expected}}}"
            ));
        }
        if sample.kind == Kind::Fault {
            let detail = xpath_count(
                &path,
                &format!(
                    "{BODY_CHILD}//*[local-name()='ClmFault' and namespace-uri()='{COMMON_NS}']"
                ),
            );
            if detail != 1 {
                failed.push(format!(
                    "{name}: a fault sample must carry one ClmFault detail"
                ));
            }
        }
    }
    if !unchecked.is_empty() {
        failed.push(format!(
            "files in wsdl/samples/ that no test checks (name them \
             <service>-<operation>[-soap12]-(request|response|fault)[-<variant>].xml, or add them \
             to INVALID_SAMPLES / SAMPLE_SCHEMAS in contracts/tests/wsdl.rs): {unchecked:?}"
        ));
    }
    assert!(
        failed.is_empty(),
        "samples that fail:\n\n{}",
        failed.join("\n\n")
    );
    assert!(checked >= 15, "only {checked} samples checked");
}

#[test]
fn invalid_samples_are_rejected() {
    let mut wrong = Vec::new();
    for (name, reason) in INVALID_SAMPLES {
        let path = samples_dir().join(name);
        assert!(path.is_file(), "{name} is missing from wsdl/samples/");
        match validate(&path, name.contains("soap12")) {
            Ok(()) => wrong.push(format!("{name}: accepted, but must be rejected ({reason})")),
            // 3: a validity error; anything else (1: not well-formed, 5: schema) is a broken fixture.
            Err((3, err)) if err.contains(reason) => {}
            Err((code, err)) => wrong.push(format!(
                "{name}: rejected (exit {code}), but not for the expected reason {reason:?}:\n{err}"
            )),
        }
    }
    // Every invalid-* file is listed above (with its reason).
    for path in files_with_ext(&samples_dir(), "xml") {
        let name = name_of(&path);
        if name.starts_with("invalid-") && !INVALID_SAMPLES.iter().any(|(n, _)| *n == name) {
            wrong.push(format!("{name}: not listed in INVALID_SAMPLES"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn a_bundle_holds_at_most_1000_items() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let envelope = |n: usize| {
        let ids: String = (0..n)
            .map(|i| format!("<esb:MessageId>00000000-0000-4000-8000-{i:012}</esb:MessageId>"))
            .collect();
        format!(
            "<soap:Envelope xmlns:soap=\"{SOAP11_ENV}\" xmlns:esb=\"urn:clm:crm-esb:v1\"><soap:Body>\
             <esb:GetCommunicationStatus><esb:TargetSystem>AMDOCS</esb:TargetSystem>{ids}\
             </esb:GetCommunicationStatus></soap:Body></soap:Envelope>"
        )
    };
    let pid = std::process::id();
    let full = dir.join(format!("wsdl-bundle-1000-{pid}.xml"));
    fs::write(&full, envelope(1000)).expect("writing");
    validate(&full, false).unwrap_or_else(|(_, err)| panic!("1000 items must validate: {err}"));
    let over = dir.join(format!("wsdl-bundle-1001-{pid}.xml"));
    fs::write(&over, envelope(1001)).expect("writing");
    assert!(
        validate(&over, false).is_err(),
        "1001 items must be rejected"
    );
    let empty = dir.join(format!("wsdl-bundle-0-{pid}.xml"));
    fs::write(&empty, envelope(0)).expect("writing");
    assert!(
        validate(&empty, false).is_err(),
        "a bundle without items must be rejected"
    );
}
