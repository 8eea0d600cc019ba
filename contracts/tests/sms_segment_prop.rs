//! Property tests of SMS segmenting (`clm_contracts::sms::segment`, issue 10): the coding is
//! GSM 7-bit exactly when every character has a GSM 03.38 encoding; units are septets
//! (extension characters two) or UTF-16 code units (characters outside the BMP two); one part
//! holds 160 septets or 70 units, a concatenated part 153 or 67, and the part count is the least
//! that carries the units.

use clm_contracts::sms::{Coding, gsm_septets, segment};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// Every character of the GSM 03.38 default alphabet and its extension table.
fn gsm_alphabet() -> Vec<char> {
    (0..0x2200_u32)
        .filter_map(char::from_u32)
        .filter(|c| gsm_septets(*c).is_some())
        .collect()
}

fn gsm_text() -> impl Strategy<Value = String> {
    let alphabet = gsm_alphabet();
    let extension: Vec<char> = alphabet
        .iter()
        .copied()
        .filter(|c| gsm_septets(*c) == Some(2))
        .collect();
    vec(
        prop_oneof![
            6 => select(alphabet),
            1 => select(extension),
        ],
        0..500,
    )
    .prop_map(|c| c.into_iter().collect())
}

/// Text that needs UCS-2: Cyrillic, emoji (two UTF-16 units) and anything else, with GSM
/// characters mixed in.
fn ucs2_text() -> impl Strategy<Value = String> {
    (
        vec(
            prop_oneof![
                4 => prop::char::range('а', 'я'),
                2 => prop::char::range('a', 'z'),
                1 => select(vec!['😀', '👍', '€', '{', '\u{10FFFF}', 'ё', '中']),
                1 => any::<char>(),
            ],
            0..300,
        ),
        prop::char::range('а', 'я'),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut chars, cyr, at)| {
            // At least one character outside the GSM alphabet.
            let i = at.index(chars.len() + 1);
            chars.insert(i, cyr);
            chars.into_iter().collect()
        })
}

/// The fewest parts of `single` units (one part) or `multi` units (each of several parts).
fn least_parts(units: usize, single: usize, multi: usize) -> usize {
    (1..)
        .find(|&n| {
            if n == 1 {
                units <= single
            } else {
                units <= n * multi
            }
        })
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn gsm_text_counts_septets_160_then_153(text in gsm_text()) {
        let s = segment(&text);
        prop_assert_eq!(s.coding, Coding::Gsm7);
        let septets: usize = text.chars().map(|c| gsm_septets(c).unwrap()).sum();
        prop_assert_eq!(s.units, septets);
        prop_assert_eq!(s.parts, least_parts(septets, 160, 153));
        if septets <= 160 {
            prop_assert_eq!(s.parts, 1);
        } else {
            prop_assert!(s.parts >= 2);
            // Every part but the last is full: the units fill parts of 153 each.
            prop_assert!(septets <= s.parts * 153 && septets > (s.parts - 1) * 153);
        }
    }

    #[test]
    fn other_text_counts_utf16_units_70_then_67(text in ucs2_text()) {
        let s = segment(&text);
        prop_assert_eq!(s.coding, Coding::Ucs2);
        let units = text.encode_utf16().count();
        prop_assert_eq!(s.units, units);
        prop_assert!(units >= text.chars().count());
        prop_assert_eq!(s.parts, least_parts(units, 70, 67));
        if units <= 70 {
            prop_assert_eq!(s.parts, 1);
        } else {
            prop_assert!(units <= s.parts * 67 && units > (s.parts - 1) * 67);
        }
    }

    /// GSM 7-bit exactly when every character has a GSM encoding; more text never takes fewer
    /// parts in the same coding.
    #[test]
    fn coding_and_monotonic_parts(text in prop_oneof![gsm_text(), ucs2_text()], more in prop_oneof![gsm_text(), ucs2_text()]) {
        let s = segment(&text);
        let all_gsm = text.chars().all(|c| gsm_septets(c).is_some());
        prop_assert_eq!(s.coding == Coding::Gsm7, all_gsm);
        let longer = segment(&format!("{text}{more}"));
        if longer.coding == s.coding {
            prop_assert!(longer.parts >= s.parts);
            prop_assert!(longer.units >= s.units);
        } else {
            // Only GSM text becomes UCS-2 by adding to it, never the other way round.
            prop_assert_eq!((s.coding, longer.coding), (Coding::Gsm7, Coding::Ucs2));
        }
    }
}
