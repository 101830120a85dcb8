"""What every fault scenario shares: a batch of orders created and activated in Salesforce as the
portal does it, the wait for them to settle, and the invariant checked at the end — "every
activated order ends Activated exactly once, or parked with the right code; nothing lost,
nothing doubled" — against Salesforce's fields, the WHMCS emulator's orders, the Freebit
emulator's lines and Temporal's runs. Not a test module: the scenario modules import it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import date
from functools import partial
from typing import Any

from clients.soql import quote
from domain.fulfillment import WORKFLOW_TYPE, workflow_id
from emulators.freebit.demo import ACCOUNTS as FREEBIT_DEMO_LINES
from tests.faults.conftest import Report, Row
from tests.fixtures.engine import Engine
from tests.integration.listener.test_listener import until

BATCH = 10
ORDERS_CHANNEL = "/data/OrderChangeEvent"
_FINAL = ("Activated", "Failed", "Cancelled")


def created_id(reply: Any) -> str:
    assert isinstance(reply, dict)
    return str(reply["id"])


def phone_number(n: int) -> str:
    """The SIM phone number `create_orders` gives the batch's `n`th SIM order."""
    return f"0701234{n:04d}"


def create_orders(engine: Engine, count: int, *, sim: bool = False) -> list[str]:
    """Draft orders on the Portal price book, as the portal creates them."""
    sf = engine.sf.client()
    account = sf.query("SELECT Id FROM Account WHERE Customer_Number__c = 'CUST-0001'")["records"][
        0
    ]["Id"]
    code = "SIM-VOICE-10GB" if sim else "FIBER-1G"
    entry = sf.query(
        "SELECT Id, Pricebook2Id, UnitPrice FROM PricebookEntry"  # noqa: S608
        f" WHERE Product2.ProductCode = '{code}' AND Pricebook2.Name = 'Portal'"
    )["records"][0]
    ids = []
    for n in range(count):
        fields: dict[str, Any] = {
            "AccountId": account,
            "Pricebook2Id": entry["Pricebook2Id"],
            "Status": "Draft",
            "EffectiveDate": date.today().isoformat(),
            "BillingStreet": "1-2-3 Shibuya",
            "BillingCity": "Shibuya-ku",
            "BillingPostalCode": "150-0002",
        }
        if sim:
            fields |= {"SIM_Type__c": "Physical SIM", "SIM_Phone_Number__c": phone_number(n)}
        order = created_id(sf.restful("sobjects/Order/", method="POST", json=fields))
        item = {
            "OrderId": order,
            "PricebookEntryId": entry["Id"],
            "Quantity": 1,
            "UnitPrice": entry["UnitPrice"],
        }
        sf.restful("sobjects/OrderItem/", method="POST", json=item)
        ids.append(order)
    return ids


def activate_all(engine: Engine, ids: list[str]) -> None:
    """One Salesforce transaction, so one change event naming every order."""
    records = [{"attributes": {"type": "Order"}, "id": i, "Status": "Activated"} for i in ids]
    engine.sf.client().restful(
        "composite/sobjects", method="PATCH", json={"allOrNone": True, "records": records}
    )


def _in(ids: list[str]) -> str:
    return "(" + ", ".join(quote(i) for i in ids) + ")"


def orders_now(engine: Engine, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The batch's orders as Salesforce holds them, in one query."""
    soql = (
        "SELECT Id, Activation_Status__c, Activation_Error_Code__c, Activation_Error_Message__c,"  # noqa: S608
        " SIM_Phone_Number__c"
        f" FROM Order WHERE Id IN {_in(ids)}"
    )
    return {r["Id"]: r for r in engine.sf.client().query_all(soql)["records"]}


async def activated_count(engine: Engine, ids: list[str]) -> int:
    orders = await asyncio.to_thread(orders_now, engine, ids)
    return sum(1 for r in orders.values() if r.get("Activation_Status__c") == "Activated")


async def runs_per_order(engine: Engine, ids: list[str]) -> Counter[str]:
    """Temporal runs of each order's fulfillment (this test's task queue only)."""
    wanted = {workflow_id(i): i for i in ids}
    query = (
        f'WorkflowType = "{WORKFLOW_TYPE}" AND TaskQueue = "{engine.settings.temporal_task_queue}"'
    )
    found: Counter[str] = Counter()
    async for execution in engine.client.list_workflows(query):
        if execution.id in wanted:
            found[wanted[execution.id]] += 1
    return found


async def settled(engine: Engine, ids: list[str], within: float) -> float:
    """Seconds until every order's Activation_Status__c is final (or the bound)."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            # Off the event loop: an in-process worker or listener shares it.
            orders = await asyncio.to_thread(orders_now, engine, ids)
            states = [orders.get(i, {}).get("Activation_Status__c") for i in ids]
            if all(state in _FINAL for state in states):
                return time.monotonic() - started
            await asyncio.sleep(0.5)


def _order_items(engine: Engine, ids: list[str]) -> dict[str, str]:
    soql = f"SELECT Id, OrderId FROM OrderItem WHERE OrderId IN {_in(ids)}"  # noqa: S608
    return {r["Id"]: r["OrderId"] for r in engine.sf.client().query_all(soql)["records"]}


def _whmcs_duplicates(engine: Engine, items: dict[str, str]) -> int:
    """Live WHMCS orders beyond one per Salesforce order."""
    state = engine.whmcs.http.get(f"{engine.whmcs.control_url}/state").json()
    live = {
        str(order["id"]) for order in state["orders"].values() if order["status"] != "Cancelled"
    }
    # The Salesforce item id each WHMCS service carries in its marker field says whose it is.
    whmcs_orders: dict[str, set[str]] = {}
    for service in state["services"].values():
        if str(service["orderid"]) not in live:
            continue
        for value in (service.get("customfields") or {}).values():
            if value in items:
                whmcs_orders.setdefault(items[value], set()).add(str(service["orderid"]))
    return sum(len(found) - 1 for found in whmcs_orders.values() if len(found) > 1)


def _freebit_check(
    engine: Engine, orders: dict[str, dict[str, Any]], activated: list[str]
) -> tuple[int, int]:
    """(lost, extra) Freebit lines: an activated SIM order whose number has no active line, and
    lines nobody ordered (neither the demo's nor one of the batch's numbers)."""
    lines = list(engine.freebit_lines().values())
    per_number = Counter(str(line["account"]) for line in lines)
    active = {str(line["account"]) for line in lines if line.get("state") == "active"}
    phones = {
        order_id: str(orders[order_id]["SIM_Phone_Number__c"])
        for order_id in activated
        if orders.get(order_id, {}).get("SIM_Phone_Number__c")
    }
    lost = sum(1 for phone in phones.values() if phone not in active)
    doubled = sum(per_number[phone] - 1 for phone in phones.values() if per_number[phone] > 1)
    known = {str(line["account"]) for line in FREEBIT_DEMO_LINES}
    known |= {str(o["SIM_Phone_Number__c"]) for o in orders.values() if o["SIM_Phone_Number__c"]}
    extra = sum(1 for line in lines if str(line["account"]) not in known)
    return lost, doubled + extra


async def invariant(
    engine: Engine, ids: list[str], *, expected: dict[str, str] | None = None
) -> tuple[int, int]:
    """(lost, duplicates): orders not ending as expected (in Salesforce, or without their
    Freebit line); extra WHMCS orders, Freebit lines or Temporal runs."""
    expected = expected or {}
    orders = await asyncio.to_thread(orders_now, engine, ids)
    lost = 0
    activated = []
    for order_id in ids:
        record = orders.get(order_id, {})
        want = expected.get(order_id, "Activated")
        if want == "Activated":
            lost += record.get("Activation_Status__c") != "Activated"
            activated.append(order_id)
        else:
            lost += record.get("Activation_Error_Code__c") != want
    items = await asyncio.to_thread(_order_items, engine, ids)
    duplicates = _whmcs_duplicates(engine, items)
    sims_lost, sims_doubled = _freebit_check(engine, orders, activated)
    lost += sims_lost
    duplicates += sims_doubled
    runs = await runs_per_order(engine, ids)
    duplicates += sum(count - 1 for count in runs.values() if count > 1)
    return lost, duplicates


def whmcs_orders_for(engine: Engine) -> int:
    return sum(1 for order in engine.whmcs_orders() if order.get("status") != "Cancelled")


async def run_scenario(
    engine: Engine,
    report: Report,
    name: str,
    faults: str | Callable[[], str],
    ids: list[str],
    *,
    expected: dict[str, str] | None = None,
    within: float = 150,
    quiet: Callable[[], bool] | None = None,
    since: float | None = None,
) -> None:
    """Wait for the batch to settle, check the invariant, add the report's row.

    `faults` may be a callable, for counts that are only known once the batch settled (say,
    requests an emulator answered with an injected error). `quiet`, when given, must hold
    before the invariant is checked: say, every late commit has landed, so that a write landing
    after the batch looked settled is seen. The recovery time is counted from `since` (a
    `time.monotonic()` reading: the fault, say) when given, else from now."""
    recovery = await settled(engine, ids, within)
    if since is not None:
        recovery = time.monotonic() - since
    if quiet is not None:
        await until(partial(asyncio.to_thread, quiet), within=within)
    lost, duplicates = await invariant(engine, ids, expected=expected)
    described = faults() if callable(faults) else faults
    if engine.settings.cdc_transport != "cometd":
        # Scenarios that run once per transport get a row each.
        name = f"{name} [{engine.settings.cdc_transport}]"
    report.add(Row(name, len(ids), described, lost, duplicates, round(recovery, 1)))
    assert (lost, duplicates) == (0, 0), f"{name}: lost {lost}, duplicates {duplicates}"
    if not expected:
        assert whmcs_orders_for(engine) == len(ids)
