"""The fault-tolerance suite (`make test-faults`): each scenario activates a batch of orders in
Salesforce while faults are injected, and checks the invariant "every activated order ends
Activated exactly once, or parked with the right code; nothing lost, nothing doubled" against
the WHMCS emulator's orders, the Freebit emulator's lines, Salesforce's fields and Temporal's
runs (tests/faults/batch.py). Each scenario adds a row to the report (tests/faults/conftest.py).

This module holds the faults of the outside systems and of the event stream; the processes'
faults (kills, racing replicas, a Postgres restart) are in test_process_faults.py."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import date, timedelta
from typing import Any

import asyncpg
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError

from activities.caches import drain_outbox
from clients.cache import CacheInvalidator, CacheKeys, create_redis
from clients.fulfillment_store import FulfillmentStore
from clients.postgres import create_pool
from domain.fulfillment import (
    FulfillmentProgress,
    FulfillmentStatus,
    OperatorRequest,
    Step,
    workflow_id,
)
from domain.messages import PROGRESS_QUERY, RETRY_UPDATE
from emulators.freebit.demo import FAILING_EID as FREEBIT_FAILING_EID
from tests.faults.batch import (
    BATCH,
    activate_all,
    create_orders,
    created_id,
    orders_now,
    phone_number,
    run_scenario,
    runs_per_order,
    whmcs_orders_for,
)
from tests.faults.conftest import Report, Row
from tests.fixtures.engine import FAST, Engine, worker_running
from tests.integration.listener.test_listener import listener_settings, listening, until

pytestmark = pytest.mark.faults


@pytest.mark.usefixtures("worker")
async def test_whmcs_unavailable_for_a_stretch(engine: Engine, report: Report) -> None:
    ids = create_orders(engine, BATCH)
    for action in ("AddOrder", "AcceptOrder", "GetPayMethods"):
        engine.fault(engine.whmcs, {"kind": "fail", "count": 8, "status": 503, "action": action})
    async with listening(listener_settings(engine)):
        activate_all(engine, ids)
        await run_scenario(engine, report, "WHMCS 5xx for a stretch", "24x HTTP 503", ids)


async def test_salesforce_rest_slow_then_unavailable_for_a_stretch(
    engine: Engine, report: Report
) -> None:
    # A short deadline, so that a slowed call times out in seconds rather than the default 30.
    settings = engine.settings.model_copy(update={"sf_request_timeout_seconds": 3.0})
    rest = f"/services/data/v{engine.sf.api_version}/"
    ids = create_orders(engine, BATCH)
    async with worker_running(settings), listening(listener_settings(engine)):
        activate_all(engine, ids)
        # Slower than the deadline: the fulfillments' first reads and writes time out, and a
        # write still lands in Salesforce after its caller gave up (outcome unknown).
        engine.fault(engine.sf, {"kind": "latency", "ms": 4_000, "path": rest})
        await asyncio.sleep(4)
        engine.clear_faults(engine.sf)
        engine.fault(engine.sf, {"kind": "fail", "rate": 1.0, "status": 503, "path": rest})
        await asyncio.sleep(8)
        engine.clear_faults(engine.sf)

        def injected() -> str:
            records = [r for r in engine.requests(engine.sf) if r["path"].startswith(rest)]
            failed = sum(1 for r in records if r["status"] == 503)
            slow = sum(1 for r in records if r["duration_ms"] >= 4_000)
            assert failed and slow, "both kinds of fault met the engine's calls"
            return f"{slow} timed out, {failed}x HTTP 503"

        await run_scenario(engine, report, "Salesforce REST slow, then 5xx", injected, ids)


@pytest.mark.usefixtures("worker")
async def test_freebit_unavailable_then_slow_for_a_stretch(engine: Engine, report: Report) -> None:
    api, register = "/emptool/api/", "/emptool/api/master/addAcnt/"
    ids = create_orders(engine, BATCH, sim=True)
    engine.fault(engine.freebit, {"kind": "fail", "rate": 1.0, "status": 503, "path": api})
    async with listening(listener_settings(engine)):
        activate_all(engine, ids)
        await asyncio.sleep(6)
        engine.clear_faults(engine.freebit)
        # Then slower than the client's 30 s read timeout: the registrations retried now time
        # out, and each lands in Freebit a second later, after its caller gave up.
        engine.fault(engine.freebit, {"kind": "latency", "ms": 31_000, "path": register})
        await asyncio.sleep(8)
        engine.clear_faults(engine.freebit)

        def injected() -> str:
            records = [r for r in engine.requests(engine.freebit) if r["path"].startswith(api)]
            failed = sum(1 for r in records if r["status"] == 503)
            slow = sum(1 for r in records if r["duration_ms"] >= 31_000)
            assert failed and slow, "both kinds of fault met the engine's calls"
            return f"{failed}x HTTP 503, {slow} timed out"

        await run_scenario(engine, report, "Freebit 5xx, then timeouts", injected, ids)


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
    assert all(phone_number(n) in lines for n in range(BATCH))


# Short client deadlines and windows, so a late commit outlives the call and the first retry.
LATE = {
    "whmcs_timeout_seconds": 2.0,
    "whmcs_settle_seconds": 15.0,
    "freebit_timeout_seconds": 2.0,
    "sf_request_timeout_seconds": 2.0,
    "sf_settle_seconds": 12.0,
}


@pytest.mark.parametrize(
    ("write", "emulator", "match", "ms"),
    [
        # Lands after the first retry's lookup missed: a resend would bill twice.
        ("WHMCS AddOrder", "whmcs", {"action": "AddOrder"}, 6_000),
        # Lands after the retry accepted the order: WHMCS refuses it, the order is not Pending.
        ("WHMCS AcceptOrder", "whmcs", {"action": "AcceptOrder"}, 6_000),
        # Lands after the retry registered the line: Freebit refuses a second registration.
        ("Freebit addAcnt", "freebit", {"path": "/emptool/api/master/addAcnt/"}, 6_000),
        # Activating (sent with the order read, one Composite call) lands after the fulfillment
        # wrote Activated, unless the retry waited.
        (
            "Salesforce status write",
            "sf",
            {"method": "POST", "path": "/services/data/v60.0/composite"},
            10_000,
        ),
    ],
)
async def test_a_write_committing_after_the_caller_gave_up(
    engine: Engine, report: Report, write: str, emulator: str, match: dict[str, str], ms: int
) -> None:
    settings = engine.settings.model_copy(update=LATE)
    handle = getattr(engine, emulator)
    ids = create_orders(engine, BATCH, sim=emulator == "freebit")
    async with worker_running(settings), listening(listener_settings(engine)):
        if emulator != "sf":
            engine.fault(handle, {"kind": "late_commit", "ms": ms, "count": BATCH} | match)
        activate_all(engine, ids)
        if emulator == "sf":
            # After our own activation: the engine's first writes.
            engine.fault(handle, {"kind": "late_commit", "ms": ms, "count": BATCH} | match)

        def landed() -> int:
            return sum(1 for r in engine.requests(handle) if r["lost_reply"] == "late_commit")

        await run_scenario(
            engine,
            report,
            f"late commit: {write}",
            f"{BATCH}x {write} committed {ms / 1000:g} s after it was sent",
            ids,
            quiet=lambda: landed() == BATCH,
        )


async def test_a_failed_sim_activation_cleared_at_freebit_and_retried(
    engine: Engine, report: Report
) -> None:
    # One eSIM order among the batch: its EID fails activation at Freebit. The cause is cleared
    # there, the operator retries: the failed line is re-issued, not taken for done.
    ids = create_orders(engine, BATCH, sim=True)
    failing = ids[0]
    engine.sf.client().restful(
        f"sobjects/Order/{failing}",
        method="PATCH",
        json={"SIM_Type__c": "eSIM", "EID__c": FREEBIT_FAILING_EID},
    )
    async with worker_running(engine.settings), listening(listener_settings(engine)):
        activate_all(engine, ids)
        handle = engine.client.get_workflow_handle(workflow_id(failing))

        async def parked() -> bool:
            try:
                progress = await handle.query(PROGRESS_QUERY, result_type=FulfillmentProgress)
            except RPCError:
                return False
            return bool(progress.waiting_for_operator)

        await until(parked, within=120)
        assert engine.order(failing)["Activation_Error_Code__c"] == "SIM_PROVISIONING_FAILED"
        engine.freebit.http.post(
            f"{engine.freebit.control_url}/config", json={"failing_eids": []}
        ).raise_for_status()
        await handle.execute_update(
            RETRY_UPDATE, OperatorRequest(reason="EID unblocked at Freebit", requested_by="ops")
        )
        retried = time.monotonic()
        async with asyncio.timeout(120):
            await handle.result()
        await run_scenario(
            engine,
            report,
            "failed SIM line, cause cleared, retried",
            "1 eSIM activation failed, then retried (recovery from the retry)",
            ids,
            since=retried,
        )
    line = engine.freebit_lines()[phone_number(0)]
    assert (line["state"], line["addKind"]) == ("active", "R")


@pytest.mark.usefixtures("worker")
async def test_cancellation_requested_through_temporal_mid_run(
    engine: Engine, report: Report
) -> None:
    # The operator presses "Request cancellation" in the Temporal UI on every order of a batch,
    # at each of the three moments a run can be in: some are in a registration Freebit is slow
    # to answer (an activity), some wait on their line's activation, and two are parked (their
    # eSIM's activation failed). Each must end Cancelled, its WHMCS order cancelled, once.
    engine.freebit.http.post(
        f"{engine.freebit.control_url}/config", json={"activation_delay": 60.0}
    ).raise_for_status()
    register = "/emptool/api/master/addAcnt/"
    engine.fault(engine.freebit, {"kind": "latency", "ms": 6_000, "path": register})
    ids = create_orders(engine, BATCH, sim=True)
    for order_id in ids[-2:]:
        engine.sf.client().restful(
            f"sobjects/Order/{order_id}",
            method="PATCH",
            json={"SIM_Type__c": "eSIM", "EID__c": FREEBIT_FAILING_EID},
        )
    async with listening(listener_settings(engine)):
        activate_all(engine, ids)
        handles = [engine.client.get_workflow_handle(workflow_id(i)) for i in ids]
        in_activity, in_sim_wait, to_park = (
            handles[: BATCH // 2],
            handles[BATCH // 2 : -2],
            handles[-2:],
        )

        async def progress(handle: WorkflowHandle[Any, Any]) -> FulfillmentProgress | None:
            try:
                seen: FulfillmentProgress = await handle.query(
                    PROGRESS_QUERY, result_type=FulfillmentProgress
                )
            except RPCError:
                return None
            return seen

        async def all_at_sims() -> bool:
            seen = [await progress(handle) for handle in handles]
            return all(p is not None and p.step is Step.PROVISION_SIMS for p in seen)

        async def parked() -> bool:
            seen = [await progress(handle) for handle in to_park]
            return all(p is not None and p.waiting_for_operator for p in seen)

        await until(all_at_sims, within=120)
        requested = time.monotonic()
        for handle in in_activity:
            await handle.cancel()  # their registration still in flight: inside an activity
        await asyncio.sleep(8)
        for handle in in_sim_wait:
            await handle.cancel()  # registered: waiting for the line's activation
        await until(parked, within=150)
        for handle in to_park:
            await handle.cancel()  # parked with SIM_PROVISIONING_FAILED, waiting for an operator
        statuses = {}
        async with asyncio.timeout(120):
            for order_id, handle in zip(ids, handles, strict=True):
                with pytest.raises(WorkflowFailureError):
                    await handle.result()
                statuses[order_id] = (await handle.describe()).status
        took = time.monotonic() - requested
    orders = orders_now(engine, ids)
    lost = sum(1 for o in orders.values() if o["Activation_Status__c"] != "Cancelled")
    lost += whmcs_orders_for(engine)  # a live WHMCS order left behind
    runs = await runs_per_order(engine, ids)
    duplicates = sum(count - 1 for count in runs.values() if count > 1)
    report.add(
        Row(
            "cancellation requested mid-run",
            len(ids),
            "Temporal cancel on every order: in an activity, the SIM wait, or parked",
            lost,
            duplicates,
            round(took, 1),
        )
    )
    assert set(statuses.values()) == {WorkflowExecutionStatus.CANCELED}
    assert (lost, duplicates) == (0, 0)


@pytest.mark.usefixtures("worker")
async def test_parked_fulfillments_nobody_acts_on_expire_and_undo_their_billing(
    engine: Engine, report: Report
) -> None:
    # A batch of eSIM orders whose activation fails parks; nobody retries or cancels before the
    # operator wait runs out (14 days in production, 20 s here). Each must end Failed with its
    # code, its pending WHMCS order cancelled, and Salesforce told what was undone.
    ids = create_orders(engine, BATCH // 2, sim=True)
    for order_id in ids:
        engine.sf.client().restful(
            f"sobjects/Order/{order_id}",
            method="PATCH",
            json={"SIM_Type__c": "eSIM", "EID__c": FREEBIT_FAILING_EID},
        )
    activate_all(engine, ids)
    wait = timedelta(seconds=20)
    options = FAST.model_copy(update={"operator_wait": wait})
    started = time.monotonic()
    handles = [await engine.start(order_id, options) for order_id in ids]
    async with asyncio.timeout(180):
        results = [await handle.result() for handle in handles]
    took = time.monotonic() - started
    orders = orders_now(engine, ids)
    expired = [
        order
        for order in orders.values()
        if order["Activation_Status__c"] == "Failed"
        and order["Activation_Error_Code__c"] == "SIM_PROVISIONING_FAILED"
        and "Nobody retried or cancelled within 20 s"
        in (order["Activation_Error_Message__c"] or "")
        and "Undone: WHMCS order" in (order["Activation_Error_Message__c"] or "")
    ]
    lost = len(ids) - len(expired) + whmcs_orders_for(engine)
    runs = await runs_per_order(engine, ids)
    duplicates = sum(count - 1 for count in runs.values() if count > 1)
    report.add(
        Row(
            "operator wait expired",
            len(ids),
            f"eSIM activation failed, nobody acted within {wait.seconds} s",
            lost,
            duplicates,
            round(took, 1),
        )
    )
    assert {result.status for result in results} == {FulfillmentStatus.FAILED}
    assert all(result.undone for result in results)
    assert len(engine.whmcs_orders()) == len(ids)
    assert (lost, duplicates) == (0, 0)


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
@pytest.mark.usefixtures("each_transport")
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
        await run_scenario(engine, report, "event stream dropped 4x", "4 drops", ids)


@pytest.mark.usefixtures("worker")
@pytest.mark.usefixtures("each_transport")
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
@pytest.mark.usefixtures("each_transport")
async def test_malformed_events_unknown_ids_and_bad_data(engine: Engine, report: Report) -> None:
    good = create_orders(engine, BATCH - 2)
    empty = created_id(
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
