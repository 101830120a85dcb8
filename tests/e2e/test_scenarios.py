"""The engine's scenarios end to end, as its users meet them.

One `fulfillment dev` stack for the module — real processes: Temporal, Postgres, Redis, the three
emulators, the worker, the listener and the API — and every scenario driven only through outer
doors: Salesforce REST on the emulator (as the portal), `fulfillment demo order` and the operator
commands as processes, the WHMCS API, the emulators' control APIs (to add a card, to slow Freebit
down), the HTTP API with stack.json's tokens, and the Temporal client. What is asserted is what a
user would see: the Salesforce record, the WHMCS orders, the Freebit line, the API's answer, the
runs Temporal holds under the order's workflow id.

The scenarios share the stack, so each one makes its own order and looks only at what belongs to
it (WHMCS orders are found by the Salesforce item ids they are marked with, never by counting
everything). The two that kill a child come last: a stack that fails to recover from them leaves
the earlier scenarios' results standing.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType

from cli.demo import NO_PAYMENT_CUSTOMER, PRODUCTS
from clients.soql import quote
from domain.fulfillment import FulfillmentStatus, TriggerSource
from tests.e2e._stack import Ran, Stack
from tests.e2e.test_dev_stack import DevRun, soql, wait_until

FIBRE, PHYSICAL_SIM = PRODUCTS[None], PRODUCTS["physical"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("scenarios")
    # No child here kills Postgres, so its fsync buys nothing but seconds.
    run = DevRun(root / ".dev", root / "console.txt", "--no-fsync")
    try:
        started = Stack(run, run.wait_up())
        try:
            yield started
        finally:
            started.close()
    finally:
        code = run.interrupt()
    assert code == 0, run.text()


def phone_number() -> str:
    # 080: never the Freebit emulator's failing account (090…), nor a demo line (080111…).
    return f"0802{secrets.randbelow(10**7):07d}"


def assert_demo_links(stack: Stack, ran: Ran, order_id: str) -> None:
    """The demo prints what to open: the Temporal UI on the order's workflow, the API's read."""
    ui, api = stack.data["temporal"]["ui_url"], stack.data["api"]["url"]
    assert f"Temporal UI: {ui}/namespaces/default/workflows/order-fulfillment-{order_id}\n" in (
        ran.out
    ), ran
    assert f"API:         {api}/api/orders/{order_id}/fulfillment\n" in ran.out, ran


def api_fulfillment(stack: Stack, order_id: str, status: str) -> dict[str, Any]:
    """The portal's read of the order once it shows `status` (the read model is written after
    Salesforce, so a reader polls as the portal would)."""
    reads: list[httpx.Response] = []

    def shows() -> bool:
        reads.append(stack.api_get(f"/api/orders/{order_id}/fulfillment"))
        return reads[-1].status_code == 200 and reads[-1].json()["status"] == status

    assert wait_until(shows, timeout=20), f"{reads[-1].status_code} {reads[-1].text}"
    body: dict[str, Any] = reads[-1].json()
    return body


def assert_activated_once(stack: Stack, order_id: str, timeout: float = 30) -> dict[str, Any]:
    """Activated everywhere a user looks, by one run of one workflow, with one WHMCS order:
    Salesforce (status, WHMCS ids, no error), WHMCS (the order Active, its services the items'),
    Temporal's runs and result, the API's read. Returns the Salesforce order."""
    order = stack.activation_becomes(order_id, "Activated", timeout)
    assert order["Activation_Status__c"] == "Activated", order
    assert order["Activation_Error_Code__c"] is None, order
    assert order["Activation_Error_Message__c"] is None, order

    whmcs_order_id = int(order["WHMCS_Order_ID__c"])
    assert stack.whmcs_orders_of(order_id) == {whmcs_order_id}, "one WHMCS order, no strays"
    billed = stack.whmcs_order(whmcs_order_id)
    assert billed["status"] == "Active", billed
    services = {str(line["relid"]) for line in billed["lineitems"]["lineitem"]}
    assert {str(item["WHMCS_Service_ID__c"]) for item in stack.order_items(order_id)} == services

    result = stack.result(order_id)
    assert result.status is FulfillmentStatus.ACTIVATED, result
    assert result.whmcs_order_id == whmcs_order_id, result
    # Read once the run has ended (a portal polling meanwhile is the test further down).
    read = api_fulfillment(stack, order_id, "activated")
    assert read["whmcs_order_id"] == whmcs_order_id, read
    assert read["error_code"] is None, read

    runs = stack.runs(order_id)
    assert [run.trigger.source for run in runs] == [TriggerSource.CDC], runs
    return order


def test_an_internet_order_is_billed_and_activated(stack: Stack) -> None:
    ran = stack.demo()

    assert ran.code == 0, ran
    order_id = ran.demo_order_id()
    assert_demo_links(stack, ran, order_id)
    assert "Activated. Salesforce, WHMCS and Freebit all say so." in ran.out
    assert_activated_once(stack, order_id)


def test_an_esim_order_gets_its_line_activated_at_freebit(stack: Stack) -> None:
    ran = stack.demo("--sim", "esim")

    assert ran.code == 0, ran
    order_id = ran.demo_order_id()
    assert_demo_links(stack, ran, order_id)
    order = assert_activated_once(stack, order_id)
    assert order["SIM_Type__c"] == "eSIM"
    line = stack.freebit_line(order["SIM_Phone_Number__c"])
    assert line is not None, "Freebit has the order's number"
    assert (line["simType"], line["eid"], line["addKind"], line["state"]) == (
        "esim",
        order["EID__c"],
        "N",
        "active",
    )


def test_a_physical_sim_with_a_number_ported_in_is_registered_as_a_port_in(
    stack: Stack,
) -> None:
    number = phone_number()
    order_id = stack.create_order(
        PHYSICAL_SIM,
        {
            "SIM_Type__c": "Physical SIM",
            "SIM_Phone_Number__c": number,
            "MNP_Reservation_Number__c": f"{secrets.randbelow(10**10):010d}",
            "MNP_Expiry_Date__c": (date.today() + timedelta(days=10)).isoformat(),
            "MNP_Last_Name_Kanji__c": "山田",
            "MNP_First_Name_Kanji__c": "花子",
            "MNP_Last_Name_Kana__c": "ヤマダ",
            "MNP_First_Name_Kana__c": "ハナコ",
            "MNP_Gender__c": "F",
            "MNP_Birthday__c": "1988-04-12",
        },
    )

    assert_activated_once(stack, order_id, timeout=45)
    line = stack.freebit_line(number)
    assert line is not None, "Freebit has the ported number"
    # Freebit refuses a port-in (addKind M) that lacks any MNP field, so M and active say the
    # reservation and the person reached it whole.
    assert (line["simType"], line["addKind"], line["state"]) == ("physical", "M", "active")


def test_a_missing_payment_method_parks_until_a_card_is_added_and_an_operator_retries(
    stack: Stack,
) -> None:
    ran = stack.demo("--no-payment-method")

    assert ran.code == 0, ran
    assert "parked: PAYMENT_METHOD_MISSING" in ran.out and "Parked as asked." in ran.out, ran
    order_id = ran.demo_order_id()
    assert_demo_links(stack, ran, order_id)
    order = stack.order(order_id)
    assert (order["Activation_Status__c"], order["Activation_Error_Code__c"]) == (
        "Failed",
        "PAYMENT_METHOD_MISSING",
    ), order
    assert order["Activation_Error_Message__c"], "a human message goes with the code"
    parked = api_fulfillment(stack, order_id, "failed")
    assert (parked["error_code"], parked["step"]) == (
        "PAYMENT_METHOD_MISSING",
        "validate_payment_method",
    )
    assert stack.whmcs_orders_of(order_id) == set(), "nothing is billed without a card"

    # An operator who retries before the card is there: the same step refuses again and the
    # fulfillment waits for the next retry, one attempt further.
    early = stack.api_action(order_id, "retry", "customer says the card is added")
    assert early.status_code == 202, early.text
    assert wait_until(lambda: stack.parked_at_attempt(order_id) == 2, timeout=20)
    again = api_fulfillment(stack, order_id, "failed")
    assert (again["error_code"], again["attempts"]) == ("PAYMENT_METHOD_MISSING", 2), again

    with stack.salesforce() as (http, base):
        (account,) = soql(
            http,
            base,
            "SELECT WH_Account__c FROM Account"  # noqa: S608
            f" WHERE Customer_Number__c = {quote(NO_PAYMENT_CUSTOMER)}",
        )
    card = {"clientid": int(account["WH_Account__c"]), "type": "RemoteCreditCard"}
    added = stack.http.post(
        f"{stack.control('whmcs')}/seed",
        json={"records": {"paymethods": [card | {"gateway": "stripe"}]}},
    )
    assert added.status_code == 200, added.text
    retry = stack.api_action(order_id, "retry", "card added in WHMCS")

    assert retry.status_code == 202, retry.text
    assert_activated_once(stack, order_id)  # the same run resumed: still one run
    assert api_fulfillment(stack, order_id, "activated")["attempts"] == 3


def test_a_freebit_refusal_parks_and_a_cancel_undoes_the_whmcs_order(stack: Stack) -> None:
    ran = stack.demo("--sim", "esim", "--fail-sim")

    assert ran.code == 0, ran
    assert "parked: SIM_PROVISIONING_FAILED" in ran.out, ran
    order_id = ran.demo_order_id()
    assert_demo_links(stack, ran, order_id)
    order = stack.order(order_id)
    assert (order["Activation_Status__c"], order["Activation_Error_Code__c"]) == (
        "Failed",
        "SIM_PROVISIONING_FAILED",
    ), order
    parked = api_fulfillment(stack, order_id, "failed")
    whmcs_order_id = parked["whmcs_order_id"]
    assert stack.whmcs_orders_of(order_id) == {whmcs_order_id}
    assert stack.whmcs_order(whmcs_order_id)["status"] == "Pending", "made, not yet accepted"

    cancel = stack.fulfillment(
        "cancel", order_id, "--reason", "Freebit refused the SIM", "--as", "e2e-operator", "--json"
    )

    assert cancel.code == 0, cancel
    answer = json.loads(cancel.out)
    assert (answer["action"], answer["outcome"]) == ("cancel", "accepted"), answer
    assert stack.result(order_id).status is FulfillmentStatus.CANCELLED
    assert stack.activation_becomes(order_id, "Cancelled", 20)["Activation_Status__c"] == (
        "Cancelled"
    )
    assert stack.whmcs_order(whmcs_order_id)["status"] == "Cancelled"
    assert api_fulfillment(stack, order_id, "cancelled")["whmcs_order_id"] == whmcs_order_id
    line = stack.freebit_line(order["SIM_Phone_Number__c"])
    assert line is not None and line["state"] == "failed", line
    again = stack.api_action(order_id, "cancel", "twice")
    assert again.status_code == 409, again.text


def test_a_portal_polling_while_orders_are_fulfilled_ends_up_reading_them_activated(
    stack: Stack,
) -> None:
    orders = [stack.create_order(FIBRE) for _ in range(2)]
    account = stack.order_account(orders[0])
    done = threading.Event()

    def poll() -> None:
        # As a portal page refreshing the order's status while the customer waits.
        while not done.is_set():
            for order_id in orders:
                stack.api_get(f"/api/orders/{order_id}/fulfillment")
            stack.api_get(f"/api/accounts/{account}/orders?limit=100")

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        results = [stack.result(order_id) for order_id in orders]
    finally:
        done.set()
        poller.join()

    assert [r.status for r in results] == [FulfillmentStatus.ACTIVATED] * len(orders)
    for order_id in orders:
        # The read model itself is right; what the portal is served must be too.
        row = json.loads(stack.fulfillment("status", order_id, "--json").out)
        assert row["status"] == "activated", row
    details = [stack.api_get(f"/api/orders/{o}/fulfillment").json() for o in orders]
    assert [d["status"] for d in details] == ["activated"] * len(orders), details
    listed = stack.api_get(f"/api/accounts/{account}/orders?limit=100").json()["items"]
    statuses = {item["sf_order_id"]: item["status"] for item in listed}
    assert [statuses[o] for o in orders] == ["activated"] * len(orders), statuses


def test_a_worker_killed_mid_fulfillment_is_restarted_and_the_order_completes_once(
    stack: Stack,
) -> None:
    # Freebit activates after 5 s, and the workflow first polls after 5 s: the worker dies
    # while the fulfillment sleeps between the WHMCS order and the SIM's activation.
    config = stack.http.post(f"{stack.control('freebit')}/config", json={"activation_delay": 5})
    assert config.status_code == 200, config.text
    number = phone_number()
    order_id = stack.create_order(
        PHYSICAL_SIM, {"SIM_Type__c": "Physical SIM", "SIM_Phone_Number__c": number}
    )
    # A timer as the last event: the WHMCS order is made, the SIM registered, and no activity
    # is in flight (one would wait out its start-to-close timeout before anyone retried it).
    stack.history_reaches(
        order_id, lambda types: types[-1] == EventType.EVENT_TYPE_TIMER_STARTED, timeout=30
    )
    (billed,) = stack.whmcs_orders_of(order_id)
    assert stack.whmcs_order(billed)["status"] == "Pending", "made, not yet accepted"
    worker = stack.child_pid("worker")

    os.killpg(worker, signal.SIGKILL)

    assert stack.console_has("worker exited with signal 9", timeout=10), stack.run.text()
    assert assert_activated_once(stack, order_id, timeout=60)["WHMCS_Order_ID__c"] == str(billed)
    assert stack.console_has("worker restarted", timeout=1)
    assert stack.child_pid("worker") != worker
    line = stack.freebit_line(number)
    assert line is not None and line["state"] == "active", line


def test_a_listener_killed_mid_stream_misses_and_doubles_no_order(stack: Stack) -> None:
    orders = [stack.create_order(FIBRE, activate=False) for _ in range(8)]
    restarts = stack.run.text().count("listener restarted")

    listener = stack.child_pid("listener")

    with stack.salesforce() as session:
        for order_id in orders[:3]:
            stack.activate(order_id, session)
        # Their events are in flight: received, perhaps started, the cursor perhaps not moved.
        os.killpg(listener, signal.SIGKILL)
        for order_id in orders[3:6]:
            stack.activate(order_id, session)  # while no listener runs
        assert wait_until(
            lambda: stack.run.text().count("listener restarted") > restarts, timeout=20
        ), stack.run.text()
        assert stack.child_pid("listener") != listener
        for order_id in orders[6:]:
            stack.activate(order_id, session)

    billed = [int(assert_activated_once(stack, o, timeout=60)["WHMCS_Order_ID__c"]) for o in orders]
    assert len(set(billed)) == len(orders), billed
