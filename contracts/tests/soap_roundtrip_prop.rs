//! Property tests of the SOAP codec (issue 10): every message written by `envelope` (and every
//! fault by `fault_envelope`), in both SOAP versions, with and without a WS-Security token, reads
//! back (`parse_envelope`) as the same message, and `parse_prelude` reads the same version and
//! token. Text is arbitrary XML 1.0 character data: markup characters, `]]>`, carriage returns,
//! non-ASCII and characters outside the BMP.
//!
//! What the reader normalises is generated in its normal form: ids and codes (`xsd:token`-like
//! values) have no surrounding whitespace and are not empty; an optional free text is absent
//! rather than blank (the reader takes a blank optional element as absent).

use chrono::{DateTime, TimeZone, Utc};
use clm_contracts::soap::codec::{
    Body, Fault, FaultCode, Limits, Parsed, Prelude, SoapVersion, WsSecurity, envelope,
    fault_envelope, parse_envelope, parse_prelude,
};
use clm_contracts::soap::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// One XML 1.0 character, biased toward what needs care: markup, whitespace, `]`, Cyrillic,
/// emoji and the edges of the legal ranges.
fn xml_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => select(vec!['<', '>', '&', '"', '\'', ']', ';', '#', '\r', '\n', '\t', ' ']),
        4 => prop::char::range('a', 'z'),
        2 => prop::char::range('а', 'я'),
        1 => select(vec!['😀', '\u{10FFFF}', '\u{FFFD}', '\u{D7FF}', '\u{E000}', '\u{85}', '\u{2028}', '\u{A0}', '\u{FEFF}']),
        2 => prop::char::ranges(vec!['\u{20}'..='\u{D7FF}', '\u{E000}'..='\u{FFFD}', '\u{10000}'..='\u{10FFFF}'].into()),
    ]
}

/// Free text as sent (kept as it is, may be empty or all whitespace).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(xml_char(), 0..24).prop_map(|c| c.into_iter().collect::<String>()),
        Just("]]>".to_owned()),
        Just("<![CDATA[x]]>&amp;&#13;".to_owned()),
    ]
}

/// Optional free text: absent, or with something besides whitespace.
fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(text().prop_filter("blank is read as absent", |s| {
        !s.trim_matches(is_xml_space).is_empty()
    }))
}

/// An id-like value: not empty, no surrounding whitespace.
fn token() -> impl Strategy<Value = String> {
    text().prop_filter_map("an id is trimmed and not empty", |s| {
        let t = s.trim_matches(is_xml_space);
        (!t.is_empty()).then(|| t.to_owned())
    })
}

fn opt_token() -> impl Strategy<Value = Option<String>> {
    prop::option::of(token())
}

/// Any instant of years 1 to 9999 (what `xsd:dateTime` writes with four digits), to the
/// nanosecond.
fn datetime() -> impl Strategy<Value = DateTime<Utc>> {
    let min = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap().timestamp();
    let max = Utc
        .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .unwrap()
        .timestamp();
    (
        min..=max,
        prop_oneof![Just(0_u32), 0..1000_u32, 0..1_000_000_000_u32],
    )
        .prop_map(|(s, n)| {
            let nanos = match n {
                n if n < 1000 => n * 1_000_000,
                n => n,
            };
            DateTime::from_timestamp(s, nanos).unwrap()
        })
}

fn item() -> impl Strategy<Value = CommunicationItem> {
    (
        (token(), token(), token(), opt_token()),
        (opt_text(), opt_text(), opt_token()),
        (prop::option::of(datetime()), prop::option::of(datetime())),
        vec(
            (token(), text()).prop_map(|(name, value)| Attribute { name, value }),
            0..3,
        ),
    )
        .prop_map(
            |(
                (message_id, campaign_id, customer_id, recipient),
                (subject, text, offer_code),
                (valid_from, valid_until),
                attributes,
            )| CommunicationItem {
                message_id,
                campaign_id,
                customer_id,
                recipient,
                subject,
                text,
                offer_code,
                valid_from,
                valid_until,
                attributes,
            },
        )
}

fn target() -> impl Strategy<Value = Option<TargetSystem>> {
    prop::option::of(select(TargetSystem::ALL))
}

fn service() -> impl Strategy<Value = CrmService> {
    select(vec![CrmService::SapCrm, CrmService::Esb])
}

fn body() -> impl Strategy<Value = Body> {
    let send =
        (target(), token(), vec(item(), 1..4)).prop_map(|(target_system, bundle_id, items)| {
            Body::SendCommunications(SendCommunications {
                target_system,
                bundle_id,
                items,
            })
        });
    let result = (
        token(),
        select(ItemStatusCode::ALL),
        opt_token(),
        opt_token(),
        opt_text(),
    )
        .prop_map(
            |(message_id, status, crm_id, error_code, error_text)| ItemResult {
                message_id,
                status,
                crm_id,
                error_code,
                error_text,
            },
        );
    let send_response =
        (service(), token(), vec(result, 1..4)).prop_map(|(s, bundle_id, results)| {
            Body::SendCommunicationsResponse(s, SendCommunicationsResponse { bundle_id, results })
        });
    let status = (target(), vec(token(), 1..5)).prop_map(|(target_system, message_ids)| {
        Body::GetCommunicationStatus(GetCommunicationStatus {
            target_system,
            message_ids,
        })
    });
    let item_status = (token(), select(ItemState::ALL), opt_token(), opt_text()).prop_map(
        |(message_id, state, crm_id, error_text)| ItemStatus {
            message_id,
            state,
            crm_id,
            error_text,
        },
    );
    let status_response = (service(), vec(item_status, 1..4)).prop_map(|(s, statuses)| {
        Body::GetCommunicationStatusResponse(s, GetCommunicationStatusResponse { statuses })
    });
    let response = (
        token(),
        opt_token(),
        opt_token(),
        select(CrmResponseKind::ALL),
        datetime(),
        opt_text(),
    )
        .prop_map(
            |(response_id, message_id, crm_id, kind, occurred_at, detail)| CrmResponse {
                response_id,
                message_id,
                crm_id,
                kind,
                occurred_at,
                detail,
            },
        );
    let submit =
        (select(SourceSystem::ALL), vec(response, 1..4)).prop_map(|(source_system, responses)| {
            Body::SubmitResponses(SubmitResponses {
                source_system,
                responses,
            })
        });
    let outcome = (token(), select(ResponseOutcome::ALL), opt_text()).prop_map(
        |(response_id, outcome, error_text)| ResponseResult {
            response_id,
            outcome,
            error_text,
        },
    );
    let submit_response = vec(outcome, 1..4)
        .prop_map(|results| Body::SubmitResponsesResponse(SubmitResponsesResponse { results }));
    prop_oneof![
        send,
        send_response,
        status,
        status_response,
        submit,
        submit_response
    ]
}

fn version() -> impl Strategy<Value = SoapVersion> {
    select(vec![SoapVersion::V11, SoapVersion::V12])
}

/// A UsernameToken: the username is read trimmed, the password as sent.
fn security() -> impl Strategy<Value = Option<WsSecurity>> {
    prop::option::of(
        (token(), text()).prop_map(|(username, password)| WsSecurity { username, password }),
    )
}

fn read(xml: &str) -> Parsed {
    match parse_envelope(xml.as_bytes(), Limits::DEFAULT) {
        Ok(p) => p,
        Err(e) => panic!("refused: {e}\n{xml}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn messages_round_trip(version in version(), body in body(), security in security()) {
        let xml = envelope(version, &body, security.as_ref());
        let parsed = read(&xml);
        prop_assert_eq!(
            &parsed,
            &Parsed { version, security: security.clone(), must_understand: vec![], body },
            "{}", xml
        );
        prop_assert_eq!(
            parse_prelude(xml.as_bytes(), Limits::DEFAULT),
            Some(Prelude { version, security })
        );
    }

    #[test]
    fn faults_round_trip(
        version in version(),
        code in select(vec![FaultCode::Client, FaultCode::Server, FaultCode::MustUnderstand, FaultCode::VersionMismatch]),
        reason in token(),
        detail in prop::option::of((token(), text(), any::<bool>()).prop_map(|(code, text, retryable)| ClmFault { code, text, retryable })),
    ) {
        let xml = fault_envelope(version, code.clone(), &reason, detail.as_ref());
        let parsed = read(&xml);
        prop_assert_eq!(
            parsed.body,
            Body::Fault(Fault { code, subcode: None, reason, detail }),
            "{}", xml
        );
    }

    /// Characters XML cannot carry are written as U+FFFD, so the envelope is still read.
    #[test]
    fn any_text_is_written_as_readable_xml(version in version(), raw in vec(any::<char>(), 1..40)) {
        let raw: String = raw.into_iter().collect();
        let body = Body::SubmitResponsesResponse(SubmitResponsesResponse {
            results: vec![ResponseResult {
                response_id: "r".into(),
                outcome: ResponseOutcome::Invalid,
                error_text: Some(raw.clone()),
            }],
        });
        let parsed = read(&envelope(version, &body, None));
        let Body::SubmitResponsesResponse(r) = parsed.body else { panic!() };
        let expected: String = raw
            .chars()
            .map(|c| match c {
                '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'.. => c,
                _ => '\u{FFFD}',
            })
            .collect();
        let expected = (!expected.trim_matches(is_xml_space).is_empty()).then_some(expected);
        prop_assert_eq!(r.results[0].error_text.clone(), expected);
    }
}

/// Found by the fuzz target `soap_envelope` (seed `nul-byte.xml`): a raw U+0000 in a value was
/// read (and so could not be written back: the writer replaces it). Characters XML 1.0 excludes
/// are refused wherever they are, raw or as a reference; the prelude looks only at what it reads.
#[test]
fn characters_xml_excludes_are_refused() {
    use clm_contracts::soap::codec::SoapError;
    let env = |header: &str, inner: &str| {
        format!(
            r#"<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Header>{header}</soap:Header><soap:Body><h:SubmitResponsesResponse xmlns:h="{RESPONSES_NS}"><h:Result><h:ResponseId>r</h:ResponseId><h:Outcome>Recorded</h:Outcome><h:ErrorText>{inner}</h:ErrorText></h:Result></h:SubmitResponsesResponse></soap:Body></soap:Envelope>"#
        )
    };
    assert!(parse_envelope(env("", "ok").as_bytes(), Limits::DEFAULT).is_ok());
    for bad in [
        env("", "a\0b"),
        env("", "\u{1}"),
        env("", "\u{FFFE}"),
        env("", "<![CDATA[\u{1F}]]>"),
        env("", "<!-- \u{FFFF} -->x"),
        env("", "&#0;"),
        env("", "&#xD800;"),
        env(r#"<t:T xmlns:t="urn:t" a="&#0;"/>"#, "x"),
        env("<t:T xmlns:t=\"urn:t\" a=\"\u{7}\"/>", "x"),
        env("<t:T\u{0} xmlns:t=\"urn:t\"/>", "x"),
    ] {
        let result = parse_envelope(bad.as_bytes(), Limits::DEFAULT);
        assert!(
            matches!(result, Err(SoapError::NotXml(_))),
            "{result:?}: {bad:?}"
        );
    }
    // Before the Body: the prelude refuses too; after it: not its business.
    assert_eq!(
        parse_prelude(
            env("<t:T xmlns:t=\"urn:t\">\u{0}</t:T>", "x").as_bytes(),
            Limits::DEFAULT
        ),
        None
    );
    assert!(parse_prelude(env("", "\u{0}").as_bytes(), Limits::DEFAULT).is_some());
}
