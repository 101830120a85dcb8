"""The control API on the Salesforce emulator: faults, reset, seed, state, restart from a file."""

import time
from typing import Any

import pytest
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceGeneralError, SalesforceRefusedRequest

from emulators.common.server import ThreadedServer
from emulators.salesforce.app import create_app

LIMIT_EXCEEDED = [
    {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
]


def _content(error: Any) -> Any:
    """The decoded error body simple-salesforce keeps on its exception."""
    return error.content


def test_fail_next_calls_with_a_status_and_error_body(sf_emulator):
    sf = sf_emulator.client()
    sf_emulator.control(
        "POST",
        "faults",
        {
            "kind": "fail",
            "count": 2,
            "status": 403,
            "body": LIMIT_EXCEEDED,
            "path": "/services/data",
        },
    )
    for _ in range(2):
        with pytest.raises(SalesforceRefusedRequest) as caught:
            sf.query("SELECT Id FROM Account")
        assert _content(caught.value) == LIMIT_EXCEEDED
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 0
    assert sf_emulator.control("GET", "faults")["faults"] == []


def test_fail_a_fraction_of_calls_deterministically_under_a_seed(sf_emulator):
    sf = sf_emulator.client()

    def outcomes() -> list[bool]:
        sf_emulator.control("POST", "reset", {"seed": 5})
        sf_emulator.control("POST", "faults", {"kind": "fail", "rate": 0.5, "status": 503})
        seen: list[bool] = []
        for _ in range(16):
            try:
                sf.query("SELECT Id FROM Account")
                seen.append(True)
            except SalesforceGeneralError as exc:
                assert exc.status == 503
                seen.append(False)
        return seen

    first = outcomes()
    assert 0 < first.count(False) < 16
    assert outcomes() == first


def test_latency_slows_matching_calls(sf_emulator):
    sf = sf_emulator.client()
    sf_emulator.control("POST", "faults", {"kind": "latency", "ms": 300, "path": "/services/data"})
    started = time.monotonic()
    sf.query("SELECT Id FROM Account")
    assert time.monotonic() - started >= 0.3
    sf_emulator.control("DELETE", "faults")
    started = time.monotonic()
    sf.query("SELECT Id FROM Account")
    assert time.monotonic() - started < 0.3


def test_the_token_endpoint_can_fail_too(sf_emulator):
    sf_emulator.control(
        "POST", "faults", {"kind": "fail", "count": 1, "status": 503, "path": "/services/oauth2"}
    )
    reply = sf_emulator.http().post(sf_emulator.token_url, data={"grant_type": "password"})
    assert reply.status_code == 503


def test_reset_empties_the_org_but_keeps_the_standard_price_book(sf_emulator):
    sf_emulator.seed_demo()
    sf = sf_emulator.client()
    assert sf.query("SELECT COUNT() FROM Order")["totalSize"] == 5
    sf_emulator.control("POST", "reset", {})
    assert sf.query("SELECT COUNT() FROM Order")["totalSize"] == 0
    standard = sf.query("SELECT Name, IsStandard, IsActive FROM Pricebook2")["records"]
    assert [(p["Name"], p["IsStandard"], p["IsActive"]) for p in standard] == [
        ("Standard Price Book", True, True)
    ]


def test_demo_seed_is_deterministic_under_a_seed(sf_emulator):
    first = sf_emulator.seed_demo()
    sf_emulator.control("POST", "reset", {"seed": 0})
    assert sf_emulator.seed_demo() == first
    sf = sf_emulator.client()
    unmapped = sf.query(
        "SELECT Name FROM Product2 WHERE WHMCS_Product_Id__c = null AND Item_Class__c = 'Service'"
    )
    assert [r["Name"] for r in unmapped["records"]] == ["Legacy Phone Plan"]
    linked = sf.query("SELECT WH_Account__c FROM Account WHERE WH_Account__c != null")
    assert sorted(r["WH_Account__c"] for r in linked["records"]) == ["1", "2", "3", "4"]


def test_seeding_bad_records_is_refused_as_a_whole(sf_emulator):
    reply = sf_emulator.http().post(
        f"{sf_emulator.control_url}/seed",
        json={
            "records": [
                {"attributes": {"type": "Account"}, "Name": "fine"},
                {"attributes": {"type": "Order"}, "Status": "Draft"},
            ]
        },
    )
    assert reply.status_code == 400
    assert "REQUIRED_FIELD_MISSING" in reply.json()["error"]
    assert sf_emulator.client().query("SELECT COUNT() FROM Account")["totalSize"] == 0


def test_state_shows_the_records(sf_emulator):
    ids = sf_emulator.seed_demo()
    state = sf_emulator.control("GET", "state")
    assert ids["orders"]["esim"] in state["store"]["tables"]["Order"]


def test_restart_from_the_state_file_keeps_records_events_and_sessions(tmp_path):
    state_file = tmp_path / "salesforce.json"
    certs = tmp_path / "certs"

    def start() -> tuple[ThreadedServer, Any]:
        app = create_app(seed=1, state_file=state_file, certs_dir=certs, demo=True)
        return ThreadedServer(
            app, ssl_certfile=app.state.ssl_certfile, ssl_keyfile=app.state.ssl_keyfile
        ).start(), app

    server, app = start()
    session = requests.Session()
    session.verify = app.state.ca_file
    session.trust_env = False
    form = {
        "grant_type": "password",
        "client_id": "3MVG9emulator.fulfillment.local",
        "client_secret": "emulator-client-secret",
        "username": "integration@fulfillment.local",
        "password": "emulator-password",
    }
    token = session.post(f"{server.base_url}/services/oauth2/token", data=form).json()
    sf: Any = Salesforce(
        instance_url=server.base_url,
        session_id=token["access_token"],
        session=session,
        version="60.0",
    )
    order_id = sf.query("SELECT Id FROM Order LIMIT 1")["records"][0]["Id"]
    sf.Order.update(order_id, {"Status": "Activated"})
    server.stop()

    server, app = start()
    sf = Salesforce(
        instance_url=server.base_url,
        session_id=token["access_token"],
        session=session,
        version="60.0",
    )
    try:
        assert sf.Order.get(order_id)["Status"] == "Activated"
        assert sf.query("SELECT COUNT() FROM Order")["totalSize"] == 5
        events = session.get(
            f"{server.base_url}/__emulator__/events?channel=/data/OrderChangeEvent"
        ).json()["events"]
        assert [e["data"]["payload"]["ChangeEventHeader"]["recordIds"] for e in events] == [
            [order_id]
        ]
    finally:
        server.stop()
