//! SMS encoding and segmentation (3GPP TS 23.038 / 23.040).
//!
//! Text that fits the GSM 03.38 default alphabet (with its extension table) goes as 7-bit: 160
//! septets in one part, 153 per part when concatenated (the UDH takes 7). Anything else (Cyrillic,
//! emoji) goes as UCS-2: 70 characters in one part, 67 per part. Extension characters (`{`, `€`, …)
//! take two septets; characters outside the BMP take two UCS-2 units.

use serde::{Deserialize, Serialize};

/// The data coding an SMS needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coding {
    Gsm7,
    Ucs2,
}

/// How a text will travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segmentation {
    pub coding: Coding,
    /// Septets (GSM 7) or UTF-16 code units (UCS-2).
    pub units: usize,
    pub parts: usize,
}

const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXTENSION: &str = "\u{000C}^{}\\[~]|€";

/// Septets one character takes in GSM 7-bit, or `None` if it has no GSM encoding.
pub fn gsm_septets(c: char) -> Option<usize> {
    if GSM_BASIC.contains(c) {
        Some(1)
    } else if GSM_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Chooses the coding and counts the parts of `text`.
pub fn segment(text: &str) -> Segmentation {
    let septets: Option<usize> = text.chars().map(gsm_septets).sum();
    match septets {
        Some(units) => Segmentation {
            coding: Coding::Gsm7,
            units,
            parts: parts(units, 160, 153),
        },
        None => {
            let units = text.encode_utf16().count();
            Segmentation {
                coding: Coding::Ucs2,
                units,
                parts: parts(units, 70, 67),
            }
        }
    }
}

fn parts(units: usize, single: usize, multi: usize) -> usize {
    if units <= single {
        1
    } else {
        units.div_ceil(multi)
    }
}

/// The SMS gateway wire contract, both dialects. The connector sends these and the mock
/// (`clm-mocks`) serves them; neither is built from the other.
pub mod wire {
    use serde::{Deserialize, Serialize};

    /// Kannel `sendsms` query parameters (GET). `text` is percent-encoded bytes in `charset`:
    /// UTF-8 with `coding=0` (GSM 7-bit), UTF-16BE with `coding=2` (UCS-2).
    pub mod kannel {
        pub const USERNAME: &str = "username";
        pub const PASSWORD: &str = "password";
        pub const FROM: &str = "from";
        pub const TO: &str = "to";
        pub const TEXT: &str = "text";
        pub const CODING: &str = "coding";
        pub const CHARSET: &str = "charset";
        pub const DLR_MASK: &str = "dlr-mask";
        pub const DLR_URL: &str = "dlr-url";
        /// Minutes the SMSC keeps trying.
        pub const VALIDITY: &str = "validity";
        pub const CODING_GSM7: &str = "0";
        pub const CODING_UCS2: &str = "2";
        /// Delivered to phone, non-delivered to phone, queued on SMSC, delivered to SMSC,
        /// non-delivered to SMSC: everything (1 + 2 + 4 + 8 + 16).
        pub const DLR_MASK_ALL: u32 = 31;
        pub const DLR_DELIVERED: u32 = 1;
        pub const DLR_UNDELIVERED: u32 = 2;
        pub const DLR_QUEUED_ON_SMSC: u32 = 4;
        pub const DLR_DELIVERED_TO_SMSC: u32 = 8;
        pub const DLR_NOT_DELIVERED_TO_SMSC: u32 = 16;
        /// Kannel's answer bodies to `sendsms`.
        pub const ACCEPTED: &str = "0: Accepted for delivery";
        pub const QUEUED: &str = "3: Queued for later delivery";
        /// Query parameters the hub puts in its `dlr-url`; Kannel substitutes the `%` escapes
        /// (`%d` report type, `%A` SMSC answer, `%F` SMSC message id, `%T` unix time).
        pub const DLR_URL_QUERY: &str = "type=%d&answer=%A&smsc_id=%F&ts=%T";
    }

    /// JSON dialect: `POST <url>` with [`JsonSendRequest`], answered 200/202 with
    /// [`JsonSendResponse`]; errors are non-2xx with [`JsonError`] (429 and 503 with `Retry-After`).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct JsonSendRequest {
        pub from: String,
        pub to: String,
        pub text: String,
        /// The hub's communication id, echoed in delivery reports.
        pub client_ref: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub validity_minutes: Option<u32>,
        /// Where the gateway posts [`JsonDlr`]s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub dlr_url: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct JsonSendResponse {
        pub message_id: String,
        pub parts: u32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct JsonError {
        pub error: String,
    }

    /// A delivery report of the JSON dialect, POSTed to `dlr_url`. One per message.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct JsonDlr {
        pub message_id: String,
        #[serde(default)]
        pub client_ref: Option<String>,
        /// `delivered`, `undelivered`, `expired`, `rejected` or `buffered`.
        pub status: String,
        #[serde(default)]
        pub error_code: Option<String>,
        #[serde(default)]
        pub done_at: Option<chrono::DateTime<chrono::Utc>>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin_text_is_gsm7_and_160_fit_one_part() {
        let s = segment(&"a".repeat(160));
        assert_eq!((s.coding, s.parts), (Coding::Gsm7, 1));
        assert_eq!(segment(&"a".repeat(161)).parts, 2);
        assert_eq!(segment(&"a".repeat(306)).parts, 2);
        assert_eq!(segment(&"a".repeat(307)).parts, 3);
    }

    #[test]
    fn extension_characters_take_two_septets() {
        let s = segment("€{}");
        assert_eq!((s.coding, s.units), (Coding::Gsm7, 6));
    }

    #[test]
    fn cyrillic_is_ucs2_with_70_and_67() {
        let s = segment(&"ж".repeat(70));
        assert_eq!((s.coding, s.parts), (Coding::Ucs2, 1));
        assert_eq!(segment(&"ж".repeat(71)).parts, 2);
        assert_eq!(segment(&"ж".repeat(134)).parts, 2);
        assert_eq!(segment(&"ж".repeat(135)).parts, 3);
    }

    #[test]
    fn emoji_counts_two_units() {
        assert_eq!(segment("😀").units, 2);
    }
}
