"""The "late_commit" fault: a write that takes effect after its caller gave up.

No reply is sent; the request is applied `ms` after it arrived, whether or not the caller is
still there; then the connection closes. Driven over real HTTP against a toy emulator and each
of the three real emulators, whose clients must tell "my call timed out" from "nothing happened".
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import requests

from emulators.whmcs import demo as whmcs_demo
from tests.fixtures.freebit_emulator import FreebitEmulatorHandle
from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle
from tests.fixtures.whmcs_emulator import WhmcsEmulatorHandle
from tests.integration.emulators._freebit import auth_key
from tests.integration.emulators._whmcs import call, custom_fields
from tests.integration.emulators.test_common_lost_reply import (
    add,
    eventually,
    logged,
    stored,
)

FAULTS = "/__emulator__/faults"


def late_commit(client: httpx.Client, url: str = FAULTS, **spec: Any) -> dict[str, Any]:
    reply = client.post(url, json={"kind": "late_commit", **spec})
    assert reply.status_code == 201, reply.text
    rule: dict[str, Any] = reply.json()
    return rule


def test_the_write_lands_after_the_caller_timed_out(notes: httpx.Client) -> None:
    rule = late_commit(notes, ms=600, count=1, action="add")
    assert (rule["kind"], rule["ms"], rule["count"]) == ("late_commit", 600, 1)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        add(notes, "late", timeout=0.2)
    # Gave up, looked, found nothing: what makes a naive retry send the write again.
    assert stored(notes) == []
    eventually(lambda: stored(notes) == ["late"])
    assert time.monotonic() - started >= 0.6
    eventually(lambda: logged(notes) == [(200, "late_commit")])
    assert add(notes, "next").status_code == 200
    assert stored(notes) == ["late", "next"]


def test_a_caller_that_waits_sees_the_connection_close_without_a_reply(
    notes: httpx.Client,
) -> None:
    late_commit(notes, ms=300, count=1)
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        add(notes, "x", timeout=5)
    assert time.monotonic() - started >= 0.3
    assert stored(notes) == ["x"]


def test_other_requests_are_answered_while_a_commit_is_pending(
    notes: httpx.Client,
) -> None:
    late_commit(notes, ms=1500, count=1, action="add")
    with pytest.raises(httpx.ReadTimeout):
        add(notes, "late", timeout=0.1)
    started = time.monotonic()
    assert notes.get("/__emulator__/state").status_code == 200
    assert time.monotonic() - started < 1
    eventually(lambda: stored(notes) == ["late"], timeout=5)


def test_reset_drops_a_pending_commit_unapplied(notes: httpx.Client) -> None:
    late_commit(notes, ms=800, count=1)
    with pytest.raises(httpx.ReadTimeout):
        add(notes, "never", timeout=0.1)
    notes.post("/__emulator__/reset", json={"seed": 1}).raise_for_status()
    time.sleep(1.0)
    assert stored(notes) == []


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"count": 1}, "late_commit needs an integer 'ms'"),
        ({"ms": 0, "count": 1}, "late_commit needs an integer 'ms'"),
        ({"ms": 100}, "needs 'count' or 'rate'"),
        ({"ms": 100, "count": 1, "status": 502}, "sends no reply"),
        ({"ms": 100, "count": 1, "mode": "reset"}, "'mode' applies only"),
    ],
)
def test_a_malformed_rule_is_refused_with_its_reason(
    notes: httpx.Client, spec: dict[str, Any], error: str
) -> None:
    reply = notes.post(FAULTS, json={"kind": "late_commit", **spec})
    assert reply.status_code == 400
    assert error in reply.json()["error"]


# -- on the real emulators ---------------------------------------------------------------------


def test_whmcs_add_order_lands_after_the_client_gave_up(
    whmcs_emulator: WhmcsEmulatorHandle,
) -> None:
    whmcs_emulator.seed_demo()
    late_commit(
        whmcs_emulator.http,
        f"{whmcs_emulator.control_url}/faults",
        ms=700,
        count=1,
        action="AddOrder",
    )
    form = {
        "action": "AddOrder",
        "identifier": whmcs_emulator.identifier,
        "secret": whmcs_emulator.secret,
        "responsetype": "json",
        "clientid": whmcs_demo.CLIENT_WITH_CARD,
        "paymentmethod": "stripe",
        "pid[0]": whmcs_demo.PRODUCT_VPN_BASIC,
        "billingcycle[0]": "monthly",
        "customfields[0]": custom_fields({5: "802000000000001AAA"}),
    }
    before = int(call(whmcs_emulator, "GetOrders")["totalresults"])
    with pytest.raises(httpx.ReadTimeout):
        whmcs_emulator.http.post(whmcs_emulator.api_url, data=form, timeout=0.2)
    assert int(call(whmcs_emulator, "GetOrders")["totalresults"]) == before
    eventually(lambda: int(call(whmcs_emulator, "GetOrders")["totalresults"]) == before + 1)


def test_freebit_registration_lands_after_the_client_gave_up(
    freebit_emulator: FreebitEmulatorHandle,
) -> None:
    freebit_emulator.seed_demo()
    key = auth_key(freebit_emulator)
    register = f"{freebit_emulator.api_url}master/addAcnt/"
    late_commit(
        freebit_emulator.http,
        f"{freebit_emulator.control_url}/faults",
        ms=700,
        count=1,
        path="/emptool/api/master/addAcnt/",
    )
    request = {
        "authKey": key,
        "account": "08012349999",
        "addKind": "N",
        "createType": "new",
        "planCode": "PASI_3G",
    }

    def lines() -> dict[str, Any]:
        state = freebit_emulator.http.get(f"{freebit_emulator.control_url}/state").json()
        return dict(state["accounts"])

    with pytest.raises(httpx.ReadTimeout):
        freebit_emulator.http.post(register, data={"json": json.dumps(request)}, timeout=0.2)
    assert "08012349999" not in lines()
    eventually(lambda: "08012349999" in lines())


def test_salesforce_update_lands_after_the_client_gave_up(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    demo = sf_emulator.seed_demo()
    sf = sf_emulator.client()
    order_id = next(iter(demo["orders"].values()))
    sf_emulator.control(
        "POST", "faults", {"kind": "late_commit", "ms": 700, "count": 1, "method": "PATCH"}
    )
    with pytest.raises(requests.exceptions.ReadTimeout):
        sf.restful(
            f"sobjects/Order/{order_id}",
            method="PATCH",
            json={"Activation_Error_Message__c": "late"},
            timeout=0.2,
        )

    def message() -> object:
        record = sf.restful(f"sobjects/Order/{order_id}")
        assert isinstance(record, dict)
        return record.get("Activation_Error_Message__c")

    assert message() != "late"
    eventually(lambda: message() == "late")
