//! The SOAP reader's memory is bounded by its input: namespace- and attribute-heavy envelopes
//! (issue 10: 271 KiB of XML once made the hub's peak memory grow by 1.3 GB).
//!
//! Peak memory is the kernel's `VmHWM` of a fresh child process: each test runs itself again
//! (`current_exe`, only that test, one thread), and the child resets its high-water mark
//! (`/proc/self/clear_refs`), parses, and prints how far the peak grew. Linux only; elsewhere
//! the tests only check that the attacks are read or refused.

use std::process::Command;
use std::time::{Duration, Instant};

use clm_contracts::soap::codec::{Limits, parse_envelope};
use clm_contracts::soap::{RESPONSES_NS, SOAP11_NS};

const CHILD: &str = "CLM_SOAP_MEMORY_CHILD";
const MIB: usize = 1024 * 1024;

/// `<soap:Envelope><soap:Body><h:SubmitResponses>{inner}</h:SubmitResponses></soap:Body>…`
fn envelope(inner: &str) -> String {
    format!(
        r#"<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body><h:SubmitResponses xmlns:h="{RESPONSES_NS}">{inner}</h:SubmitResponses></soap:Body></soap:Envelope>"#
    )
}

fn long_uri(len: usize) -> String {
    let mut uri = String::from("urn:x:");
    uri.extend(std::iter::repeat_n('a', len - uri.len()));
    uri
}

/// The issue's attack: a 256 KiB default namespace on an element with 4 000 empty children.
fn default_namespace_attack() -> String {
    let children = "<a/>".repeat(4000);
    envelope(&format!(
        r#"<x xmlns="{}">{children}</x>"#,
        long_uri(256 * 1024)
    ))
}

/// 4 000 attributes in a 256 KiB namespace.
fn attribute_attack() -> String {
    let attrs: String = (0..4000).map(|i| format!(r#" p:a{i}="""#)).collect();
    envelope(&format!(
        r#"<x xmlns:p="{}"><y{attrs}/></x>"#,
        long_uri(256 * 1024)
    ))
}

/// 60 prefixes bound to 4 KiB namespaces each, used by 4 000 elements and attributes.
fn many_namespaces_attack() -> String {
    let decls: String = (0..60)
        .map(|i| format!(r#" xmlns:p{i}="{}{i}""#, long_uri(4096)))
        .collect();
    let children: String = (0..4000)
        .map(|i| format!(r#"<p{0}:a p{1}:b=""/>"#, i % 60, (i + 1) % 60))
        .collect();
    envelope(&format!("<x{decls}>{children}</x>"))
}

/// 4 000 QName-valued texts whose prefix is bound to a 256 KiB namespace.
fn qname_text_attack() -> String {
    let children = "<a>p:q</a>".repeat(4000);
    envelope(&format!(
        r#"<x xmlns:p="{}">{children}</x>"#,
        long_uri(256 * 1024)
    ))
}

/// As many empty elements as [`Limits::max_nodes`] allows, the densest envelope there is.
fn densest_envelope() -> String {
    envelope(&format!(
        "<x>{}</x>",
        "<a/>".repeat(Limits::DEFAULT.max_nodes - 10)
    ))
}

fn status_kib(field: &str) -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// In the child: parses `xml` and prints `peak_growth=<bytes> elapsed_ms=<ms>`.
fn measure(xml: &str) {
    let bytes = xml.as_bytes();
    // Reset the high-water mark to the current resident size.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = if reset {
        status_kib("VmRSS:")
    } else {
        status_kib("VmHWM:")
    };
    let started = Instant::now();
    let result = parse_envelope(bytes, Limits::DEFAULT);
    let elapsed = started.elapsed();
    let after = status_kib("VmHWM:");
    drop(result);
    if let (Some(before), Some(after)) = (before, after) {
        println!(
            "peak_growth={} elapsed_ms={}",
            after.saturating_sub(before) * 1024,
            elapsed.as_millis()
        );
    }
}

/// Runs test `name` again in a child process and checks how far its peak memory grew while
/// parsing `xml`: at most 16 times the input and 4 MiB.
fn check(name: &str, xml: fn() -> String) {
    check_within(name, xml, |input| 16 * input + 4 * MIB);
}

/// Like [`check`], with the bound a function of the input's length.
fn check_within(name: &str, xml: fn() -> String, bound: fn(usize) -> usize) {
    if std::env::var_os(CHILD).is_some() {
        measure(&xml());
        return;
    }
    let input = xml().len();
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    // libtest prints the child's output after `test … ` on the same line.
    let Some(line) = stdout.find("peak_growth=").map(|at| &stdout[at..]) else {
        if cfg!(target_os = "linux") {
            panic!("no measurement: {stdout}");
        }
        eprintln!("no /proc/self/status here: memory not measured");
        return;
    };
    let line = line.lines().next().unwrap_or_default();
    let field = |key: &str| -> usize {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .expect("child output")
    };
    let growth = field("peak_growth=");
    let elapsed = Duration::from_millis(field("elapsed_ms=") as u64);
    let bound = bound(input);
    eprintln!(
        "{name}: input {} KiB, peak memory grew {} KiB (bound {} KiB) in {elapsed:?}",
        input / 1024,
        growth / 1024,
        bound / 1024
    );
    assert!(
        growth <= bound,
        "{name}: parsing {input} bytes grew the peak memory by {growth} bytes (bound {bound})"
    );
}

#[test]
fn default_namespace_on_many_children_costs_memory_in_proportion_to_the_input() {
    check(
        "default_namespace_on_many_children_costs_memory_in_proportion_to_the_input",
        default_namespace_attack,
    );
}

#[test]
fn many_attributes_in_a_long_namespace_cost_memory_in_proportion_to_the_input() {
    check(
        "many_attributes_in_a_long_namespace_cost_memory_in_proportion_to_the_input",
        attribute_attack,
    );
}

#[test]
fn many_namespace_declarations_cost_memory_in_proportion_to_the_input() {
    check(
        "many_namespace_declarations_cost_memory_in_proportion_to_the_input",
        many_namespaces_attack,
    );
}

#[test]
fn qname_texts_in_a_long_namespace_cost_memory_in_proportion_to_the_input() {
    check(
        "qname_texts_in_a_long_namespace_cost_memory_in_proportion_to_the_input",
        qname_text_attack,
    );
}

/// Each element costs its node (about a hundred bytes) whatever its size in the input, so the
/// densest envelope is bounded by [`Limits::max_nodes`], not by its length.
#[test]
fn the_densest_envelope_within_the_limits_stays_small() {
    check_within(
        "the_densest_envelope_within_the_limits_stays_small",
        densest_envelope,
        |_| 48 * MIB,
    );
}
