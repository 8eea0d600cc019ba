//! Credentials: HTTP Basic or a WS-Security UsernameToken, else a `Client` fault.

use clm_contracts::soap::codec::{Body, FaultCode, SoapVersion, WsSecurity, envelope};
use clm_contracts::soap::{CrmService, ItemStatusCode, TargetSystem};
use clm_mocks::{CrmKind, CrmMockConfig};

use crate::harness::{BOTH, bundle, call, client, id, item, start_with, xmllint};

fn token(username: &str, password: &str) -> WsSecurity {
    WsSecurity {
        username: username.to_owned(),
        password: password.to_owned(),
    }
}

#[tokio::test]
async fn basic_or_username_token_else_a_client_fault() {
    let mock = start_with(
        CrmKind::Esb,
        CrmMockConfig {
            auth: Some(("CLM_HUB".into(), "pa55 & <word>".into())),
            ..CrmMockConfig::default()
        },
    )
    .await;
    for version in BOTH {
        let message =
            Body::SendCommunications(bundle(Some(TargetSystem::Amdocs), vec![item(&id(), "c")]));
        // None, a wrong password, a wrong user.
        for security in [
            None,
            Some(token("CLM_HUB", "wrong")),
            Some(token("OTHER", "pa55 & <word>")),
        ] {
            let reply = call(&mock.url(), version, &message, security.as_ref()).await;
            let fault = reply.assert_fault(version, FaultCode::Client);
            assert_eq!(fault.detail.unwrap().code, "NOT_AUTHORIZED");
        }
        // The right UsernameToken (escaped in XML, read back as sent).
        let good = token("CLM_HUB", "pa55 & <word>");
        let reply = call(&mock.url(), version, &message, Some(&good)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        xmllint(&reply.text, version);
        // HTTP Basic, right and wrong.
        let action = message.soap_action().unwrap();
        for (password, expected) in [("pa55 & <word>", 200), ("nope", version_client(version))] {
            let mut request = client()
                .post(mock.url())
                .basic_auth("CLM_HUB", Some(password))
                .header("Content-Type", version.content_type(Some(action)))
                .body(envelope(version, &message, None));
            if let Some(sa) = version.soap_action_header(action) {
                request = request.header("SOAPAction", sa);
            }
            let answer = crate::harness::reply(request.send().await.unwrap()).await;
            assert_eq!(answer.status, expected, "{}", answer.text);
            if expected == 200 {
                let results = answer.send_response(CrmService::Esb).results;
                assert_eq!(results[0].status, ItemStatusCode::Duplicate);
            }
        }
    }
    let stats = mock.stats();
    assert_eq!(stats.unauthorized, 8);
    assert_eq!(stats.bundles, 4);

    // Auth off mid-run: anyone may call.
    mock.set_auth(None);
    let message =
        Body::SendCommunications(bundle(Some(TargetSystem::CrmB2c), vec![item(&id(), "c")]));
    assert_eq!(
        call(&mock.url(), SoapVersion::V11, &message, None)
            .await
            .status,
        200
    );
}

/// The HTTP status of a `Client` fault.
fn version_client(version: SoapVersion) -> u16 {
    version.fault_http_status(&FaultCode::Client)
}
