"""A real third-party SOAP client against the hub's response service: Python zeep reads the WSDL
the hub serves (GET /soap/responses?wsdl, the schemas beside it) and calls SubmitResponses over
the SOAP 1.1 and 1.2 ports, authenticated by WS-Security UsernameToken and by HTTP Basic.

Run by hub/tests/it/soap.rs (python_zeep_reads_the_wsdl_and_submits_responses) with the Python
that scripts/test.sh provides (CLM_TEST_PYTHON):

    soap_client.py HUB_URL SAP_ID AMDOCS_ID B2C_CRM_ID UNKNOWN_ID

Prints one JSON object with what zeep got; the Rust test checks it. Exits non-zero only when zeep
itself fails (cannot read the WSDL, an unexpected error).
"""

import datetime
import json
import sys

import requests
import zeep
from zeep.exceptions import Fault
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

SAP = ("SAP_CRM_PRD", "Kampagne-2026!")
ESB = ("crm-esb", "esb-callback-2026")
CMN = "{urn:clm:common:v1}"
UTC = datetime.timezone.utc
MSK = datetime.timezone(datetime.timedelta(hours=3))


class RecordingTransport(Transport):
    """A transport that remembers the HTTP status of the last SOAP call."""

    def __init__(self, basic=None):
        session = requests.Session()
        session.auth = basic
        super().__init__(session=session, timeout=10, operation_timeout=10)
        self.last_status = None

    def post_xml(self, address, envelope, headers):
        response = super().post_xml(address, envelope, headers)
        self.last_status = response.status_code
        return response


def client(wsdl, soap12=False, token=None, basic=None):
    transport = RecordingTransport(basic)
    wsse = UsernameToken(*token) if token else None
    c = zeep.Client(wsdl, wsse=wsse, transport=transport)
    if soap12:
        service = c.bind("ResponseService", "ResponseSoap12Port")
    else:
        service = c.service
    return service, transport


def results(answer):
    """[ResponseId, Outcome] per Result, whichever shape zeep returns the wrapper in."""
    items = getattr(answer, "Result", answer)
    return [[r.ResponseId, r.Outcome] for r in items]


def expect_fault(call, transport):
    try:
        answer = call()
    except Fault as f:
        code = None
        if f.detail is not None:
            found = f.detail.find(".//" + CMN + "Code")
            code = found.text if found is not None else None
        return {
            "raised": "Fault",
            "message": f.message,
            "code": str(f.code),
            "detail_code": code,
            "http_status": transport.last_status,
        }
    except Exception as e:  # noqa: BLE001 - reported to the Rust test as it is
        return {"raised": type(e).__name__, "message": str(e)}
    return {"raised": None, "answer": str(answer)}


def main():
    hub, sap_id, amdocs_id, b2c_crm_id, unknown_id = sys.argv[1:6]
    wsdl = hub.rstrip("/") + "/soap/responses?wsdl"
    at = datetime.datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
    out = {"zeep": zeep.__version__}

    # SOAP 1.1, WS-Security UsernameToken (PasswordText).
    service, _ = client(wsdl, token=SAP)
    out["address"] = service._binding_options["address"]
    sap_bundle = [
        {
            "ResponseId": "zeep-sap-1",
            "MessageId": sap_id,
            "Kind": "OfferAccepted",
            "OccurredAt": at,
            "Detail": "Ответ клиента: «ДА»",
        },
        {"ResponseId": "zeep-sap-2", "MessageId": unknown_id, "Kind": "Delivered", "OccurredAt": at},
        # Neither MessageId nor CrmId.
        {"ResponseId": "zeep-sap-3", "Kind": "Read", "OccurredAt": at},
    ]
    out["token"] = results(service.SubmitResponses(SourceSystem="SAP_CRM", Response=sap_bundle))
    out["token_again"] = results(service.SubmitResponses(SourceSystem="SAP_CRM", Response=sap_bundle))

    # SOAP 1.1, HTTP Basic through a requests.Session.
    service, _ = client(wsdl, basic=ESB)
    out["basic"] = results(
        service.SubmitResponses(
            SourceSystem="AMDOCS",
            Response=[
                {"ResponseId": "zeep-amd-1", "MessageId": amdocs_id, "Kind": "Delivered", "OccurredAt": at},
                # A SAP CRM communication: not Amdocs'.
                {"ResponseId": "zeep-amd-2", "MessageId": sap_id, "Kind": "Read", "OccurredAt": at},
            ],
        )
    )

    # SOAP 1.2 port, UsernameToken, correlated by the CRM's id, a +03:00 timestamp.
    service, _ = client(wsdl, soap12=True, token=ESB)
    out["address12"] = service._binding_options["address"]
    out["soap12"] = results(
        service.SubmitResponses(
            SourceSystem="CRM_B2C",
            Response=[
                {
                    "ResponseId": "zeep-b2c-1",
                    "CrmId": b2c_crm_id,
                    "Kind": "Clicked",
                    "OccurredAt": datetime.datetime(2026, 3, 1, 10, 0, 0, tzinfo=MSK),
                }
            ],
        )
    )

    # Faults zeep must raise as zeep.exceptions.Fault.
    one = [{"ResponseId": "zeep-no", "MessageId": sap_id, "Kind": "Read", "OccurredAt": at}]
    service, transport = client(wsdl, token=(SAP[0], "wrong-password"))
    out["wrong_token"] = expect_fault(
        lambda: service.SubmitResponses(SourceSystem="SAP_CRM", Response=one), transport
    )
    service12, transport12 = client(wsdl, soap12=True, basic=(ESB[0], "wrong-password"))
    out["wrong_basic_soap12"] = expect_fault(
        lambda: service12.SubmitResponses(SourceSystem="AMDOCS", Response=one), transport12
    )
    service, transport = client(wsdl, basic=ESB)
    out["not_allowed"] = expect_fault(
        lambda: service.SubmitResponses(SourceSystem="SAP_CRM", Response=one), transport
    )

    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
