"""WHMCS emulator control API: faults shaped as WHMCS fails, latency, request log, state."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fixtures.whmcs_emulator import WhmcsEmulatorHandle
from tests.integration.emulators._whmcs import call, custom_fields, raw_call

DB_ERROR = {"result": "error", "message": "Database Error"}


def add_order(whmcs: WhmcsEmulatorHandle) -> dict[str, object]:
    return call(whmcs, "AddOrder", {"clientid": 1, "paymentmethod": "stripe", "pid[0]": 1})


def test_fail_next_add_order_with_a_whmcs_error_body_then_succeed(
    whmcs_emulator: WhmcsEmulatorHandle,
) -> None:
    whmcs_emulator.seed_demo()
    whmcs_emulator.http.post(
        f"{whmcs_emulator.control_url}/faults",
        json={"kind": "fail", "count": 1, "status": 200, "body": DB_ERROR, "action": "AddOrder"},
    )
    assert call(whmcs_emulator, "GetPaymentMethods")["result"] == "success"
    assert add_order(whmcs_emulator) == DB_ERROR
    assert call(whmcs_emulator, "GetOrders")["totalresults"] == 0
    assert add_order(whmcs_emulator)["result"] == "success"


def test_fraction_of_calls_fail_with_503(whmcs_emulator: WhmcsEmulatorHandle) -> None:
    whmcs_emulator.http.post(
        f"{whmcs_emulator.control_url}/faults", json={"kind": "fail", "rate": 0.5, "status": 503}
    )
    statuses = [raw_call(whmcs_emulator, "GetPaymentMethods").status_code for _ in range(30)]
    assert set(statuses) == {200, 503}


def test_latency_slows_the_api(whmcs_emulator: WhmcsEmulatorHandle) -> None:
    whmcs_emulator.http.post(
        f"{whmcs_emulator.control_url}/faults",
        json={"kind": "latency", "ms": 200, "path": "/includes/api.php"},
    )
    started = time.monotonic()
    call(whmcs_emulator, "GetPaymentMethods")
    assert time.monotonic() - started >= 0.2


def test_request_log_counts_calls_per_action(whmcs_emulator: WhmcsEmulatorHandle) -> None:
    whmcs_emulator.seed_demo()
    add_order(whmcs_emulator)
    add_order(whmcs_emulator)
    call(whmcs_emulator, "GetOrders")
    log = whmcs_emulator.http.get(
        f"{whmcs_emulator.control_url}/requests", params={"action": "AddOrder"}
    ).json()
    assert log["count"] == 2


def test_state_shows_orders_services_and_invoices(whmcs_emulator: WhmcsEmulatorHandle) -> None:
    whmcs_emulator.seed_demo()
    add_order(whmcs_emulator)
    state = whmcs_emulator.http.get(f"{whmcs_emulator.control_url}/state").json()
    assert state["orders"]["1"]["status"] == "Pending"
    assert state["services"]["1"]["orderid"] == 1
    assert state["invoices"]["1"]["status"] == "Unpaid"
    assert sorted(state["clients"]) == ["1", "2", "3", "4"]


def test_reset_empties_the_emulator(whmcs_emulator: WhmcsEmulatorHandle) -> None:
    whmcs_emulator.seed_demo()
    whmcs_emulator.http.post(f"{whmcs_emulator.control_url}/reset")
    assert call(whmcs_emulator, "GetClientsDetails", clientid=1)["message"] == "Client Not Found"


def test_seed_records_adds_specific_clients_and_products(
    whmcs_emulator: WhmcsEmulatorHandle,
) -> None:
    created = whmcs_emulator.http.post(
        f"{whmcs_emulator.control_url}/seed",
        json={
            "records": {
                "gateways": [{"module": "paypal", "displayname": "PayPal"}],
                "groups": ["Mobile"],
                "products": [{"name": "Tiny SIM", "gid": 1, "monthly": "100"}],
                "clients": [{"firstname": "A", "lastname": "B", "email": "a@b.jp"}],
            }
        },
    ).json()
    assert created == {"gateways": ["paypal"], "groups": [1], "products": [1], "clients": [1]}
    assert call(whmcs_emulator, "GetProducts")["products"]["product"][0]["name"] == "Tiny SIM"


def test_tokens_expire_and_sessions_drop_are_no_ops_for_per_call_credentials(
    whmcs_emulator: WhmcsEmulatorHandle,
) -> None:
    # WHMCS authenticates every call with identifier/secret: nothing is handed out to expire.
    control = whmcs_emulator.control_url
    assert whmcs_emulator.http.post(f"{control}/tokens/expire").json() == {"expired": 0}
    assert whmcs_emulator.http.post(f"{control}/sessions/drop").json() == {"dropped": 0}
    assert call(whmcs_emulator, "GetPaymentMethods")["result"] == "success"


def test_state_put_back_restores_orders(whmcs_emulator: WhmcsEmulatorHandle) -> None:
    whmcs_emulator.seed_demo()
    add_order(whmcs_emulator)
    saved = whmcs_emulator.http.get(f"{whmcs_emulator.control_url}/state").json()
    whmcs_emulator.http.post(f"{whmcs_emulator.control_url}/reset")
    put = whmcs_emulator.http.put(f"{whmcs_emulator.control_url}/state", json=saved)
    assert put.json() == {"ok": True}
    [order] = call(whmcs_emulator, "GetOrders")["orders"]["order"]
    assert (order["id"], order["status"]) == (1, "Pending")
    assert add_order(whmcs_emulator)["orderid"] == "2", "counters are restored too"


def lose_next_reply(whmcs: WhmcsEmulatorHandle, action: str, **spec: object) -> None:
    reply = whmcs.http.post(
        f"{whmcs.control_url}/faults",
        json={"kind": "lose_reply", "count": 1, "action": action, **spec},
    )
    assert reply.status_code == 201, reply.text


def test_add_order_whose_reply_is_lost_is_there_on_the_next_read(
    whmcs_emulator: WhmcsEmulatorHandle,
) -> None:
    whmcs_emulator.seed_demo()
    lose_next_reply(whmcs_emulator, "AddOrder", mode="reset")
    with pytest.raises(httpx.RemoteProtocolError):
        raw_call(
            whmcs_emulator,
            "AddOrder",
            {
                "clientid": 1,
                "paymentmethod": "stripe",
                "pid[0]": 1,
                "customfields[0]": custom_fields({1: "802000000000001AAA"}),
            },
        )
    [service] = call(whmcs_emulator, "GetClientsProducts", clientid=1)["products"]["product"]
    marker = {f["name"]: f["value"] for f in service["customfields"]["customfield"]}
    assert marker["Salesforce Order Item ID"] == "802000000000001AAA"
    [order] = call(whmcs_emulator, "GetOrders", userid=1)["orders"]["order"]
    assert (order["id"], order["status"]) == (int(service["orderid"]), "Pending")


def test_accept_order_whose_reply_is_lost_has_activated_the_order(
    whmcs_emulator: WhmcsEmulatorHandle,
) -> None:
    whmcs_emulator.seed_demo()
    order_id = add_order(whmcs_emulator)["orderid"]
    lose_next_reply(whmcs_emulator, "AcceptOrder", status=502)
    assert raw_call(whmcs_emulator, "AcceptOrder", orderid=order_id).status_code == 502
    assert call(whmcs_emulator, "GetOrders", id=order_id)["orders"]["order"][0]["status"] == (
        "Active"
    )
    # The repeat a client might send is refused: only a read tells "already done" apart.
    assert call(whmcs_emulator, "AcceptOrder", orderid=order_id)["message"] == (
        "Order ID not found or Status not Pending"
    )


def test_cancel_order_whose_reply_hangs_has_cancelled_the_order(
    whmcs_emulator: WhmcsEmulatorHandle,
) -> None:
    whmcs_emulator.seed_demo()
    order_id = add_order(whmcs_emulator)["orderid"]
    lose_next_reply(whmcs_emulator, "CancelOrder", mode="hang")
    form = {
        "action": "CancelOrder",
        "identifier": whmcs_emulator.identifier,
        "secret": whmcs_emulator.secret,
        "responsetype": "json",
        "orderid": order_id,
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(whmcs_emulator.api_url, data=form, timeout=0.3)
    assert call(whmcs_emulator, "GetOrders", id=order_id)["orders"]["order"][0]["status"] == (
        "Cancelled"
    )
