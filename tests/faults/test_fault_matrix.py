"""The fault-tolerance suite (`make test-faults`): each scenario activates a batch of orders in
Salesforce while faults are injected, and checks the invariant "every activated order ends
Activated exactly once, or parked with the right code; nothing lost, nothing doubled" against
the WHMCS emulator's orders, the Freebit emulator's lines, Salesforce's fields and Temporal's
runs. Each scenario adds a row to the report (tests/faults/conftest.py)."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from datetime import date
from typing import Any

import asyncpg
import pytest

from activities.caches import drain_outbox
from clients.cache import CacheInvalidator, CacheKeys, create_redis
from clients.fulfillment_store import FulfillmentStore
from clients.postgres import create_pool
from domain.fulfillment import workflow_id
from tests.faults.conftest import Report, Row
from tests.fixtures.engine import Engine, WorkerProcess, worker_running
from tests.integration.listener.test_listener import listener_settings, listening

pytestmark = pytest.mark.faults
BATCH = 10


def _created(reply: Any) -> str:
    assert isinstance(reply, dict)
    return str(reply["id"])


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
            fields |= {"SIM_Type__c": "Physical SIM", "SIM_Phone_Number__c": f"0701234{n:04d}"}
        order = _created(sf.restful("sobjects/Order/", method="POST", json=fields))
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
    records = [{"attributes": {"type": "Order"}, "id": i, "Status": "Activated"} for i in ids]
    engine.sf.client().restful(
        "composite/sobjects", method="PATCH", json={"allOrNone": True, "records": records}
    )


async def settled(engine: Engine, ids: list[str], within: float) -> float:
    """Seconds until every order's Activation_Status__c is final (or the bound)."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            states = [engine.order(i).get("Activation_Status__c") for i in ids]
            if all(state in ("Activated", "Failed", "Cancelled") for state in states):
                return time.monotonic() - started
            await asyncio.sleep(0.5)


async def invariant(
    engine: Engine, ids: list[str], *, expected: dict[str, str] | None = None
) -> tuple[int, int]:
    """(lost, duplicates): orders not ending as expected; extra WHMCS orders or runs."""
    expected = expected or {}
    lost = 0
    for order_id in ids:
        record = engine.order(order_id)
        want = expected.get(order_id, "Activated")
        if want == "Activated":
            lost += record.get("Activation_Status__c") != "Activated"
        else:
            lost += record.get("Activation_Error_Code__c") != want
    items = {row["Id"]: order for order in ids for row in engine.order_items(order)}
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
    duplicates = sum(len(found) - 1 for found in whmcs_orders.values() if len(found) > 1)
    for order_id in ids:
        query = (
            f'WorkflowId = "{workflow_id(order_id)}"'
            f' AND TaskQueue = "{engine.settings.temporal_task_queue}"'
        )
        runs = [e async for e in engine.client.list_workflows(query)]
        duplicates += max(0, len(runs) - 1)
    return lost, duplicates


def whmcs_orders_for(engine: Engine) -> int:
    return sum(1 for order in engine.whmcs_orders() if order.get("status") != "Cancelled")


async def run_scenario(
    engine: Engine,
    report: Report,
    name: str,
    faults: str,
    ids: list[str],
    *,
    expected: dict[str, str] | None = None,
    within: float = 150,
) -> None:
    recovery = await settled(engine, ids, within)
    lost, duplicates = await invariant(engine, ids, expected=expected)
    report.add(Row(name, len(ids), faults, lost, duplicates, round(recovery, 1)))
    assert (lost, duplicates) == (0, 0), f"{name}: lost {lost}, duplicates {duplicates}"
    if not expected:
        assert whmcs_orders_for(engine) == len(ids)


@pytest.mark.usefixtures("worker")
async def test_whmcs_unavailable_for_a_stretch(engine: Engine, report: Report) -> None:
    ids = create_orders(engine, BATCH)
    for action in ("AddOrder", "AcceptOrder", "GetPayMethods"):
        engine.fault(engine.whmcs, {"kind": "fail", "count": 8, "status": 503, "action": action})
    async with listening(listener_settings(engine)):
        activate_all(engine, ids)
        await run_scenario(engine, report, "WHMCS 5xx for a stretch", "24x HTTP 503", ids)


@pytest.mark.usefixtures("worker")
async def test_replies_lost_after_commit_on_every_write(engine: Engine, report: Report) -> None:
    ids = create_orders(engine, BATCH, sim=True)
    lost = {"kind": "lose_reply", "mode": "reset", "count": 3}
    engine.fault(engine.whmcs, lost | {"action": "AddOrder"})
    engine.fault(engine.whmcs, lost | {"action": "AcceptOrder"})
    engine.fault(engine.freebit, lost | {"path": "/emptool/api/master/addAcnt/"})
    async with listening(listener_settings(engine)):
        activate_all(engine, ids)
        # After our own activation call, which goes the same way: the engine's write-backs.
        composite = "/services/data/v60.0/composite"
        engine.fault(engine.sf, lost | {"method": "PATCH", "path": composite})
        await run_scenario(engine, report, "reply lost after commit, every write", "12 lost", ids)
    # Every fault fired: each of those writes took effect while its reply was lost.
    assert [engine.lost_replies(h) for h in (engine.whmcs, engine.freebit, engine.sf)] == [6, 3, 3]
    lines = engine.freebit_lines()
    assert all(sum(1 for a in lines if a == f"0701234{n:04d}") == 1 for n in range(BATCH))


@pytest.mark.usefixtures("worker")
async def test_salesforce_session_and_freebit_auth_key_expire_mid_run(
    engine: Engine, report: Report
) -> None:
    ids = create_orders(engine, BATCH, sim=True)
    async with listening(listener_settings(engine)):
        activate_all(engine, ids)
        await asyncio.sleep(1)
        engine.sf.control("POST", "tokens/expire")
        engine.freebit.http.post(f"{engine.freebit.control_url}/tokens/expire").raise_for_status()
        await run_scenario(engine, report, "SF session + Freebit key expiry", "2 expiries", ids)


@pytest.mark.usefixtures("worker")
async def test_streaming_session_dropped_repeatedly(engine: Engine, report: Report) -> None:
    ids = create_orders(engine, BATCH)
    async with listening(listener_settings(engine, cdc_reconnect_max_seconds=1)):
        await asyncio.sleep(2)
        activate_all(engine, ids[:5])
        for _ in range(3):
            engine.sf.control("POST", "sessions/drop")
            await asyncio.sleep(1)
        activate_all(engine, ids[5:])
        engine.sf.control("POST", "sessions/drop")
        await run_scenario(engine, report, "streaming session dropped 4x", "4 drops", ids)


@pytest.mark.usefixtures("worker")
async def test_duplicate_and_out_of_order_events(engine: Engine, report: Report) -> None:
    ids = create_orders(engine, BATCH)
    async with listening(listener_settings(engine)):
        activate_all(engine, ids)
        # The same activations again, newest first, as a replay or a duplicate delivery would.
        for order_id in reversed(ids):
            engine.sf.control(
                "POST",
                "events/change",
                {
                    "entity": "Order",
                    "changeType": "UPDATE",
                    "recordIds": [order_id],
                    "fields": {"Status": "Activated"},
                    "changedFields": ["Status", "LastModifiedDate"],
                },
            )
        gap = {"entity": "Order", "changeType": "GAP_UPDATE", "recordIds": ids[:3]}
        engine.sf.control("POST", "events/gap", gap)
        await run_scenario(engine, report, "duplicate, out-of-order, gap events", "13 extra", ids)


@pytest.mark.usefixtures("worker")
async def test_malformed_events_unknown_ids_and_bad_data(engine: Engine, report: Report) -> None:
    good = create_orders(engine, BATCH - 2)
    empty = _created(
        engine.sf.client().restful(
            "sobjects/Order/",
            method="POST",
            json={
                "AccountId": engine.order(good[0])["AccountId"],
                "Pricebook2Id": engine.order(good[0])["Pricebook2Id"],
                "Status": "Draft",
                "EffectiveDate": date.today().isoformat(),
            },
        )
    )
    ids = [*good, empty]
    async with listening(listener_settings(engine)):
        engine.sf.control(
            "POST",
            "events/change",
            {"entity": "Order", "changeType": "UPDATE", "recordIds": ["bad-id"]},
        )
        activate_all(engine, ids)
        await run_scenario(
            engine,
            report,
            "malformed event, order with bad data",
            "1 malformed, 1 without items",
            ids,
            expected={empty: "INVALID_ORDER"},
        )
    connection = await asyncpg.connect(engine.settings.database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM cdc_dead_letters") == 1
    finally:
        await connection.close()


async def test_redis_down_during_a_run(engine: Engine, report: Report, redis_url: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    settings = engine.settings.model_copy(update={"redis_url": dead})
    ids = create_orders(engine, BATCH)
    async with worker_running(settings), listening(listener_settings(engine, redis_url=dead)):
        activate_all(engine, ids)
        await run_scenario(engine, report, "Redis down during the run", "Redis unreachable", ids)
    # The invalidations wait in the outbox, and land once Redis is back.
    pool = await create_pool(engine.settings.database_url or "")
    redis = create_redis(redis_url)
    try:
        store = FulfillmentStore(pool)
        assert await pool.fetchval("SELECT count(*) FROM cache_invalidation_outbox") > 0
        await drain_outbox(
            store, CacheInvalidator(redis, CacheKeys(engine.settings.cache_key_prefix))
        )
        assert await pool.fetchval("SELECT count(*) FROM cache_invalidation_outbox") == 0
    finally:
        await pool.close()
        await redis.aclose()


async def test_worker_sigkilled_several_times_during_a_batch(
    engine: Engine, report: Report, worker_process: WorkerProcess
) -> None:
    engine.freebit.http.post(
        f"{engine.freebit.control_url}/config", json={"activation_delay": 2.0}
    ).raise_for_status()
    ids = create_orders(engine, 2 * BATCH, sim=True)
    worker = worker_process()
    async with listening(listener_settings(engine)):
        activate_all(engine, ids)
        for _ in range(3):
            await asyncio.sleep(2)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            worker = worker_process()
        await run_scenario(
            engine, report, "worker SIGKILLed 3x during a batch", "3 kills", ids, within=300
        )
