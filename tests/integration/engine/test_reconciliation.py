"""Reconciliation against the real worker, the dev server and the Salesforce emulator: orders
activated in Salesforce whose events never reached us are fulfilled once, whoever runs it and
however often; what has a fulfillment is left alone; the schedule exists once, as configured.

The dev server is shared by the whole session and the emulator hands every test the same ids,
so fulfillments of earlier tests exist under those ids: each test here reseeds the emulator
under a seed of its own first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from activities.reconciliation import ReconciliationActivities
from cdc_listener.reconciliation import (
    ensure_reconciliation_schedule,
    reconcile_now,
    reconciliation_schedule_id,
)
from clients.cache import CacheInvalidator, CacheKeys, create_redis
from clients.fulfillment_store import FulfillmentStore
from clients.salesforce import SalesforceClient
from domain.errors import ErrorCode
from domain.fulfillment import (
    FulfillmentInput,
    FulfillmentOptions,
    FulfillmentProgress,
    FulfillmentResult,
    FulfillmentStatus,
    Trigger,
    TriggerSource,
    workflow_id,
)
from domain.reconciliation import (
    MissingFulfillments,
    ReconciliationInput,
    ReconciliationResult,
)
from tests.fixtures.engine import FAST, Engine, worker_running
from usecases.fulfillments import STARTED_BY, start_fulfillment
from workflows.order_fulfillment import OrderFulfillment
from workflows.reconciliation import FulfillmentReconciliation


@pytest.fixture
def fresh(engine: Engine) -> Engine:
    """The engine over demo data whose ids no earlier test used."""
    engine.sf.control("POST", "reset", {"seed": secrets.randbelow(2**31) + 1})
    engine.demo = engine.sf.seed_demo()
    return engine


@pytest_asyncio.fixture
async def worker(fresh: Engine) -> AsyncIterator[Engine]:
    async with worker_running(fresh.settings):
        yield fresh


async def reconcile(engine: Engine, options: FulfillmentOptions = FAST) -> ReconciliationResult:
    return await engine.client.execute_workflow(
        FulfillmentReconciliation.run,
        ReconciliationInput(options=options),
        id=f"reconcile-{uuid.uuid4()}",
        task_queue=engine.settings.temporal_task_queue,
    )


async def fulfillment(engine: Engine, order_id: str) -> FulfillmentResult:
    """How the order's fulfillment ended, waiting for it to be started first."""
    handle = engine.client.get_workflow_handle(workflow_id(order_id), result_type=FulfillmentResult)
    async with asyncio.timeout(60):
        while True:
            if await exists(engine.client, order_id):
                result: FulfillmentResult = await handle.result()
                return result
            await asyncio.sleep(0.2)


async def parked(engine: Engine, order_id: str) -> FulfillmentProgress:
    handle = engine.client.get_workflow_handle(workflow_id(order_id))
    async with asyncio.timeout(30):
        while True:
            progress: FulfillmentProgress = await handle.query(OrderFulfillment.progress)
            if progress.waiting_for_operator:
                return progress
            await asyncio.sleep(0.1)


async def runs(engine: Engine, order_id: str) -> int:
    query = f'WorkflowId = "{workflow_id(order_id)}"'
    return len([execution async for execution in engine.client.list_workflows(query)])


async def exists(client: Client, order_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id(order_id)).describe()
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


# -- the workflow, run directly -------------------------------------------------------------------


async def test_activated_orders_nobody_started_are_fulfilled_once_and_end_as_their_data_says(
    worker: Engine,
) -> None:
    engine = worker
    internet = engine.activate("internet")
    unpaid = engine.activate("no_payment_method")
    assert not await exists(engine.client, internet)

    first = await reconcile(engine)

    assert (first.found, first.started, first.already_present) == (2, 2, 0)
    assert sorted(first.started_order_ids) == sorted([internet, unpaid])
    assert (await fulfillment(engine, internet)).status is FulfillmentStatus.ACTIVATED
    assert engine.order(internet)["Activation_Status__c"] == "Activated"
    progress = await parked(engine, unpaid)
    assert progress.attempt == 1
    assert progress.last_error is not None
    assert progress.last_error.code is ErrorCode.PAYMENT_METHOD_MISSING
    assert engine.order(unpaid)["Activation_Status__c"] == "Failed"
    described = await engine.client.get_workflow_handle(workflow_id(internet)).describe()
    assert await described.static_details() == "Started by reconciliation."

    again = await reconcile(engine)

    # The fulfilled order is no longer unfinished; the parked one is found and left alone.
    assert (again.found, again.started, again.already_present) == (1, 0, 1)
    await asyncio.sleep(0.5)
    assert (await parked(engine, unpaid)).attempt == 1
    assert len(engine.whmcs_orders()) == 1
    assert (await runs(engine, internet), await runs(engine, unpaid)) == (1, 1)


async def test_a_parked_order_started_by_the_listener_is_never_retried_by_reconciliation(
    worker: Engine,
) -> None:
    engine = worker
    order_id = engine.activate("no_payment_method")
    await engine.start(order_id)
    assert (await parked(engine, order_id)).attempt == 1

    for _ in range(3):
        result = await reconcile(engine)
        assert (result.found, result.started) == (1, 0)

    assert (await parked(engine, order_id)).attempt == 1
    assert await runs(engine, order_id) == 1


async def test_an_order_whose_fulfillment_closed_before_it_wrote_to_salesforce_is_not_restarted(
    worker: Engine,
) -> None:
    engine = worker
    order_id = engine.activate("internet")
    # Started where no worker polls, then stopped: Salesforce still reads Pending, and Temporal
    # knows a closed fulfillment (an operator terminated it, say).
    elsewhere = engine.settings.model_copy(update={"temporal_task_queue": f"nobody-{uuid.uuid4()}"})
    handle = await start_fulfillment(
        engine.client,
        elsewhere,
        FulfillmentInput(sf_order_id=order_id, trigger=Trigger(source=TriggerSource.OPERATOR)),
    )
    await handle.terminate("stopped by an operator")
    assert engine.order(order_id)["Activation_Status__c"] == "Pending"

    result = await reconcile(engine)

    assert (result.found, result.started, result.already_present) == (1, 0, 1)
    assert await runs(engine, order_id) == 1
    assert engine.whmcs_orders() == []


async def activating(engine: Engine, order_id: str) -> None:
    async with asyncio.timeout(30):
        while True:
            if engine.order(order_id)["Activation_Status__c"] == "Activating":
                return
            await asyncio.sleep(0.1)


async def read_model(engine: Engine, order_id: str) -> dict[str, Any] | None:
    assert engine.settings.database_url is not None
    connection = await asyncpg.connect(engine.settings.database_url)
    try:
        row = await connection.fetchrow(
            "SELECT status, error_code, error_message, version FROM fulfillments"
            " WHERE sf_order_id = $1",
            order_id,
        )
    finally:
        await connection.close()
    return None if row is None else dict(row)


async def test_an_order_left_activating_by_a_terminated_run_is_reported_never_restarted(
    worker: Engine,
) -> None:
    engine = worker
    terminated, running = engine.activate("internet"), engine.activate("esim")
    # WHMCS refuses every call: both fulfillments hold at the billing client, Activating.
    engine.fault(engine.whmcs, {"kind": "fail", "rate": 1.0, "status": 503})
    handles = [await engine.start(order_id) for order_id in (terminated, running)]
    for order_id in (terminated, running):
        await activating(engine, order_id)
    await handles[0].terminate("stopped by an operator in the Temporal UI")

    first = await reconcile(engine)
    row = await read_model(engine, terminated)
    second = await reconcile(engine)

    # Reported on every pass (the alert holds while it stays so), recorded once; never started.
    assert first.stranded == second.stranded == 1
    assert first.stranded_order_ids == (terminated,)
    assert (first.started, second.started) == (0, 0)
    assert await runs(engine, terminated) == 1
    assert row is not None
    assert (row["status"], row["error_code"]) == ("failed", None)
    assert "ended terminated" in row["error_message"]
    assert "re-activate the order in Salesforce" in row["error_message"]
    assert row == await read_model(engine, terminated), "the second pass rewrote nothing"
    # The running fulfillment is left to finish, and Salesforce is not written by reconciliation.
    assert (await read_model(engine, running) or {}).get("status") == "activating"
    assert engine.order(terminated)["Activation_Status__c"] == "Activating"
    engine.clear_faults(engine.whmcs)
    assert (await handles[1].result()).status is FulfillmentStatus.ACTIVATED
    assert (await reconcile(engine)).stranded == 1


async def test_two_reconciliations_racing_start_each_order_once(worker: Engine) -> None:
    engine = worker
    orders = [engine.activate(key) for key in ("internet", "esim", "physical_sim")]

    results = await asyncio.gather(*(reconcile(engine) for _ in range(3)))

    assert sum(result.started for result in results) == len(orders)
    started = [order for result in results for order in result.started_order_ids]
    assert sorted(started) == sorted(orders)
    for order_id in orders:
        assert (await fulfillment(engine, order_id)).status is FulfillmentStatus.ACTIVATED
        assert await runs(engine, order_id) == 1
    assert len(engine.whmcs_orders()) == len(orders)


async def test_a_start_whose_reply_was_lost_is_still_counted_as_started_by_the_retry(
    fresh: Engine,
) -> None:
    engine = fresh
    order_id = engine.activate("internet")
    assert engine.settings.database_url is not None and engine.settings.redis_url is not None
    salesforce = SalesforceClient.from_settings(engine.settings)
    pool = await asyncpg.create_pool(engine.settings.database_url, min_size=1, max_size=1)
    redis = create_redis(engine.settings.redis_url)
    cache = CacheInvalidator(redis, CacheKeys(engine.settings.cache_key_prefix))
    activities = ReconciliationActivities(
        salesforce, engine.settings, FulfillmentStore(pool), cache
    )
    request = MissingFulfillments(sf_order_ids=(order_id,), options=FAST)
    ours = ActivityEnvironment(client=engine.client)
    ours.info = dataclasses.replace(ours.info, workflow_id="reconcile-a", workflow_run_id="run-1")
    other = ActivityEnvironment(client=engine.client)
    other.info = dataclasses.replace(other.info, workflow_id="reconcile-b", workflow_run_id="run-1")
    try:
        first = await ours.run(activities.start_missing_fulfillments, request)
        # The same activity again, as Temporal retries it when the first reply never arrived.
        retried = await ours.run(activities.start_missing_fulfillments, request)
        racer = await other.run(activities.start_missing_fulfillments, request)
    finally:
        await salesforce.aclose()
        await pool.close()
        await redis.aclose()

    assert first.started == retried.started == (order_id,)
    assert (racer.started, racer.already_present) == ((), (order_id,))
    described = await engine.client.get_workflow_handle(workflow_id(order_id)).describe()
    assert await described.memo_value(STARTED_BY, type_hint=str) == "reconcile-a/run-1"
    assert await runs(engine, order_id) == 1


# -- the Salesforce query -------------------------------------------------------------------------


async def test_unfinished_orders_are_the_activated_ones_not_yet_final_paged_without_gaps(
    fresh: Engine,
) -> None:
    engine = fresh
    activated = {key: engine.activate(key) for key in ("esim", "physical_sim", "internet")}
    done = engine.activate("no_payment_method")
    sf = engine.sf.client()
    sf.restful(f"sobjects/Order/{done}", method="PATCH", json={"Activation_Status__c": "Activated"})
    blank = activated["internet"]
    sf.restful(f"sobjects/Order/{blank}", method="PATCH", json={"Activation_Status__c": None})
    # Still Draft: not activated, so not reconciliation's.
    draft = engine.demo["orders"]["unmapped_product"]

    salesforce = SalesforceClient.from_settings(engine.settings)
    try:
        pages: list[list[Any]] = []
        after: str | None = None
        while True:
            page = await salesforce.unfinished_orders("Activated", after=after, limit=1)
            pages.append(page)
            if len(page) < 1:
                break
            after = page[-1].order_number
        everything = await salesforce.unfinished_orders("Activated", limit=2000)
        other_status = await salesforce.unfinished_orders("Activated' OR Status != '", limit=10)
    finally:
        await salesforce.aclose()

    seen = [order for page in pages for order in page]
    assert [len(page) for page in pages] == [1, 1, 1, 0]
    assert sorted(order.sf_order_id for order in seen) == sorted(activated.values())
    assert [order.order_number for order in seen] == sorted(order.order_number for order in seen)
    assert seen == everything
    assert done not in {order.sf_order_id for order in seen}
    assert draft not in {order.sf_order_id for order in seen}
    statuses = {order.sf_order_id: order.activation_status for order in seen}
    assert statuses[blank] is None and statuses[activated["esim"]] == "Pending"
    # A status is a quoted literal, never SOQL.
    assert other_status == []


# -- the schedule ---------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def scheduled(worker: Engine) -> AsyncIterator[Engine]:
    """The engine with a long interval (so only a trigger runs it); the schedule deleted after."""
    worker.settings = worker.settings.model_copy(update={"reconciliation_interval_seconds": 3600})
    yield worker
    # A schedule left behind would keep starting runs on a queue nobody polls any more.
    try:
        await worker.client.get_schedule_handle(
            reconciliation_schedule_id(worker.settings)
        ).delete()
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise


async def schedules(client: Client, schedule_id: str) -> int:
    count = 0
    async for listed in await client.list_schedules():
        count += listed.id == schedule_id
    return count


async def test_the_schedule_is_created_once_by_racing_replicas_with_the_configured_interval(
    scheduled: Engine,
) -> None:
    engine = scheduled
    settings = engine.settings
    schedule_id = reconciliation_schedule_id(settings)

    await asyncio.gather(
        *(ensure_reconciliation_schedule(engine.client, settings) for _ in range(4))
    )
    await ensure_reconciliation_schedule(engine.client, settings)

    handle = engine.client.get_schedule_handle(schedule_id)
    described = await handle.describe()
    schedule = described.schedule
    assert [interval.every for interval in schedule.spec.intervals] == [timedelta(hours=1)]
    assert schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert (action.workflow, action.id, action.task_queue) == (
        "FulfillmentReconciliation",
        schedule_id,
        settings.temporal_task_queue,
    )
    # Already as configured: a further replica's start writes nothing.
    await ensure_reconciliation_schedule(engine.client, settings)
    assert (await handle.describe()).info.last_updated_at == described.info.last_updated_at
    async with asyncio.timeout(10):
        # The schedule list is eventually consistent: wait until it shows what was created.
        while True:
            if await schedules(engine.client, schedule_id) == 1:
                break
            await asyncio.sleep(0.2)


async def test_a_new_interval_updates_the_schedule_and_an_operators_pause_is_kept(
    scheduled: Engine,
) -> None:
    engine = scheduled
    await ensure_reconciliation_schedule(engine.client, engine.settings)
    handle = engine.client.get_schedule_handle(reconciliation_schedule_id(engine.settings))
    await handle.pause(note="paused by ops during the Salesforce maintenance")

    faster = engine.settings.model_copy(update={"reconciliation_interval_seconds": 300})
    await asyncio.gather(*(ensure_reconciliation_schedule(engine.client, faster) for _ in range(3)))

    schedule = (await handle.describe()).schedule
    assert [interval.every for interval in schedule.spec.intervals] == [timedelta(minutes=5)]
    assert schedule.state.paused
    assert schedule.state.note == "paused by ops during the Salesforce maintenance"


async def test_reconcile_now_runs_the_schedule_and_fulfils_what_was_missed(
    scheduled: Engine,
) -> None:
    engine = scheduled
    order_id = engine.activate("internet")
    await ensure_reconciliation_schedule(engine.client, engine.settings)

    await reconcile_now(engine.client, engine.settings)

    assert (await fulfillment(engine, order_id)).status is FulfillmentStatus.ACTIVATED
    described = await engine.client.get_workflow_handle(workflow_id(order_id)).describe()
    starter = await described.memo_value(STARTED_BY, type_hint=str)
    assert starter.startswith(reconciliation_schedule_id(engine.settings) + "-")
    # Asked again once the order is done: the schedule's next run finds nothing to start.
    await reconcile_now(engine.client, engine.settings)
    await asyncio.sleep(1)
    assert await runs(engine, order_id) == 1
    assert len(engine.whmcs_orders()) == 1


async def test_reconcile_now_creates_a_missing_schedule_first(scheduled: Engine) -> None:
    engine = scheduled
    order_id = engine.activate("internet")
    await reconcile_now(engine.client, engine.settings)
    assert (await fulfillment(engine, order_id)).status is FulfillmentStatus.ACTIVATED
    await engine.client.get_schedule_handle(reconciliation_schedule_id(engine.settings)).describe()
