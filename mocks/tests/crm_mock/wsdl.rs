//! `GET <url>?wsdl`: the service's WSDL with its address rewritten, its schemas beside it.

use clm_mocks::CrmKind;

use crate::harness::{client, start, wsdl_file, xmllint_well_formed};

#[tokio::test]
async fn each_mock_serves_its_wsdl_and_schemas() {
    for (kind, wsdl, placeholder, schemas) in [
        (
            CrmKind::SapCrm,
            "sap-crm-campaign-v1.wsdl",
            "http://sap-crm.example/clm/campaign",
            ["clm-common-v1.xsd", "sap-crm-campaign-v1.xsd"],
        ),
        (
            CrmKind::Esb,
            "crm-esb-v1.wsdl",
            "http://crm-esb.example/clm/communications",
            ["clm-common-v1.xsd", "crm-esb-v1.xsd"],
        ),
    ] {
        let mock = start(kind).await;
        for query in ["wsdl", "WSDL"] {
            let response = client()
                .get(format!("{}?{query}", mock.url()))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/xml")
            );
            let served = response.text().await.unwrap();
            xmllint_well_formed(&served);
            assert!(
                served.contains(&format!("location=\"{}\"", mock.url())),
                "address rewritten to {}",
                mock.url()
            );
            assert!(!served.contains(placeholder));
            let committed = std::fs::read_to_string(wsdl_file(wsdl)).unwrap();
            assert_eq!(served, committed.replace(placeholder, &mock.url()));
        }
        // Relative schemaLocations resolve beside the endpoint.
        for schema in schemas {
            let url = reqwest::Url::parse(&mock.url())
                .unwrap()
                .join(schema)
                .unwrap();
            let response = client().get(url.clone()).send().await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            let served = response.text().await.unwrap();
            assert_eq!(served, std::fs::read_to_string(wsdl_file(schema)).unwrap());
        }
        // Without ?wsdl: a hint, not the WSDL.
        let hint = client().get(mock.url()).send().await.unwrap();
        assert_eq!(hint.status(), 200);
        assert!(hint.text().await.unwrap().contains("?wsdl"));
    }
}

#[tokio::test]
async fn the_address_follows_the_host_the_client_used() {
    let mock = start(CrmKind::Esb).await;
    let served = client()
        .get(mock.wsdl_url())
        .header("Host", "crm-mocks:9100")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        served.contains("location=\"http://crm-mocks:9100/esb/communications\""),
        "{served}"
    );
    // A Host that is no host name is not written into the WSDL.
    let served = client()
        .get(mock.wsdl_url())
        .header("Host", "evil\"><x")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!served.contains("evil"));
    assert!(served.contains(&format!("location=\"{}\"", mock.url())));
}
