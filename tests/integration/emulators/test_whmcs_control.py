"""WHMCS emulator control API: faults shaped as WHMCS fails, latency, request log, state."""

from __future__ import annotations

import time

from tests.fixtures.whmcs_emulator import WhmcsEmulatorHandle
from tests.integration.emulators._whmcs import call, raw_call

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
    assert call(whmcs_emulator, "GetOrders")["totalresults"] == "0"
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
    assert (order["id"], order["status"]) == ("1", "Pending")
    assert add_order(whmcs_emulator)["orderid"] == 2, "counters are restored too"
