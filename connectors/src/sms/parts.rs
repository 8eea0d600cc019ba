//! When a multi-part SMS counts as delivered, from the delivery reports recorded for it.
//!
//! What Kannel sends (observed with Debian's Kannel 1.4.5, bearerbox + smsbox + `fakesmsc`, and
//! in its source): Kannel splits a long text itself and asks for a delivery report on the
//! *first* part only (`sms_split`: "only ask DLR for the first one"), so a 3-part message gets
//! one report for the whole message: type 8 ("delivered to SMSC", once all parts were sent) and
//! type 1 ("delivered"), both with the same `%F` (the SMSC id of the part that carries the
//! report), in either order. A gateway that reports per part (an SMSC or Kannel build that gives
//! every part its own receipt) sends one type-1 report per part, each with its own `%F`.
//!
//! The rule, for a message of `parts` > 1 parts (a report "names" the `%F` it carries):
//! 1. an undelivered report (type 2 or 16) for any part makes the message `failed` at once
//!    (the customer did not get the whole text); that is the store's ordinary rule;
//! 2. a delivered report that names no part speaks for the whole message;
//! 3. delivered reports naming `parts` distinct parts make it `delivered`;
//! 4. Kannel's per-message pair: when every report recorded names one and the same part, and
//!    both a delivered and a "delivered to SMSC" / "queued on SMSC" report (8 or 4) name it,
//!    that report speaks for the whole message.
//!
//! Per-part reports that name different parts never match rule 4, so they are counted (rule
//! 3). Rule 4 needs Kannel's type-8 report, which the connector therefore always asks for.

use clm_contracts::ResponseKind;

/// The dedupe key of a report: its kind and the part it names (`-` for none). Reports of one
/// kind for one part are one report, however often the gateway repeats it.
pub fn dedupe_key(kind: ResponseKind, part: Option<&str>) -> String {
    format!("{}:{}", kind.as_str(), part.unwrap_or("-"))
}

/// The part a report names, from its dedupe key (as [`dedupe_key`] makes it; a key without a
/// kind prefix is all part) and whether it speaks for the whole message.
pub fn part_of(dedupe_key: &str, whole_message: bool) -> Option<&str> {
    if whole_message {
        return None;
    }
    let part = dedupe_key
        .split_once(':')
        .map_or(dedupe_key, |(_, part)| part);
    (!part.is_empty() && part != "-").then_some(part)
}

/// Whether the reports recorded for a message of `parts` parts (kind, part named) make it
/// delivered. Undelivered reports are not looked at here (rule 1 is the caller's).
pub fn delivered<'a>(
    parts: u32,
    reports: impl IntoIterator<Item = (ResponseKind, Option<&'a str>)>,
) -> bool {
    let reports: Vec<(ResponseKind, Option<&str>)> = reports.into_iter().collect();
    let is_delivered = |k: &ResponseKind| *k == ResponseKind::Delivered;
    if !reports.iter().any(|(k, _)| is_delivered(k)) {
        return false;
    }
    if parts <= 1 || reports.iter().any(|(k, p)| is_delivered(k) && p.is_none()) {
        return true;
    }
    let mut delivered_parts: Vec<&str> = reports
        .iter()
        .filter(|(k, _)| is_delivered(k))
        .filter_map(|(_, p)| *p)
        .collect();
    delivered_parts.sort_unstable();
    delivered_parts.dedup();
    if delivered_parts.len() >= parts as usize {
        return true;
    }
    let mut named: Vec<&str> = reports.iter().filter_map(|(_, p)| *p).collect();
    named.sort_unstable();
    named.dedup();
    let one_part = named.len() == 1;
    let to_smsc = reports
        .iter()
        .any(|(k, p)| *k == ResponseKind::Buffered && p.is_some());
    one_part && to_smsc
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResponseKind::{Buffered, Delivered, Undelivered};

    fn ok(parts: u32, reports: &[(ResponseKind, Option<&str>)]) -> bool {
        delivered(parts, reports.iter().copied())
    }

    #[test]
    fn kannel_per_message_pair_delivers_in_either_order() {
        // What Kannel 1.4.5 sent for a 3-part UCS-2 message: type 1 and type 8, same %F.
        assert!(ok(3, &[(Delivered, Some("u1")), (Buffered, Some("u1"))]));
        assert!(ok(3, &[(Buffered, Some("u1")), (Delivered, Some("u1"))]));
        // Only the type 8 so far: not yet.
        assert!(!ok(3, &[(Buffered, Some("u1"))]));
    }

    #[test]
    fn per_part_reports_are_counted_by_distinct_part() {
        assert!(!ok(3, &[(Delivered, Some("a"))]));
        assert!(!ok(3, &[(Delivered, Some("a")), (Delivered, Some("b"))]));
        assert!(ok(
            3,
            &[
                (Delivered, Some("a")),
                (Delivered, Some("b")),
                (Delivered, Some("c"))
            ]
        ));
        // Per-part "delivered to SMSC" reports name several parts: counting goes on.
        assert!(!ok(
            3,
            &[
                (Buffered, Some("a")),
                (Buffered, Some("b")),
                (Buffered, Some("c")),
                (Delivered, Some("a"))
            ]
        ));
        // A type 8 for the message plus the first part's receipt from another part: counting.
        assert!(!ok(3, &[(Buffered, Some("c")), (Delivered, Some("a"))]));
    }

    #[test]
    fn a_report_without_a_part_speaks_for_the_whole_message() {
        assert!(ok(3, &[(Delivered, None)]));
        assert!(ok(1, &[(Delivered, Some("x"))]));
        assert!(!ok(3, &[(Buffered, None)]));
        assert!(!ok(2, &[(Undelivered, Some("a"))]));
    }

    #[test]
    fn keys_round_trip() {
        let k = dedupe_key(Delivered, Some("4cac2f7b-79e6"));
        assert_eq!(k, "delivered:4cac2f7b-79e6");
        assert_eq!(part_of(&k, false), Some("4cac2f7b-79e6"));
        assert_eq!(part_of(&k, true), None);
        assert_eq!(part_of(&dedupe_key(Delivered, None), false), None);
        assert_eq!(part_of("part-1", false), Some("part-1"));
    }
}
