"""Activations of an order, repeated and re-done, against the real worker and dev server:
the re-activation rules of docs/design.md."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

from clients.fulfillment_store import FulfillmentStore
from config.settings import Settings
from domain.fulfillment import (
    ActivationDecision,
    FulfillmentInput,
    FulfillmentProgress,
    FulfillmentResult,
    FulfillmentStatus,
    OperatorRequest,
    Trigger,
    TriggerSource,
    workflow_id,
)
from tests.fixtures.engine import FAST, Engine
from usecases.fulfillments import activate_fulfillment, existing_fulfillment
from workflows.order_fulfillment import OrderFulfillment

pytestmark = pytest.mark.usefixtures("worker")


def activation(order_id: str, replay_id: int) -> FulfillmentInput:
    return FulfillmentInput(
        sf_order_id=order_id,
        trigger=Trigger(
            source=TriggerSource.CDC, channel="/data/OrderChangeEvent", replay_id=str(replay_id)
        ),
        options=FAST,
    )


async def attempts(engine: Engine, order_id: str) -> int:
    handle = engine.client.get_workflow_handle(workflow_id(order_id))
    async with asyncio.timeout(30):
        while True:
            progress: FulfillmentProgress = await handle.query(OrderFulfillment.progress)
            if progress.waiting_for_operator:
                return progress.attempt
            await asyncio.sleep(0.1)


async def recorded_status(engine: Engine, order_id: str) -> FulfillmentStatus | None:
    assert engine.settings.database_url is not None
    pool = await asyncpg.create_pool(engine.settings.database_url, min_size=1, max_size=1)
    try:
        return await FulfillmentStore(pool).recorded_status(order_id)
    finally:
        await pool.close()


async def activate(
    engine: Engine,
    fulfillment: FulfillmentInput,
    *,
    activated_at: datetime,
    settings: Settings | None = None,
) -> ActivationDecision:
    return await activate_fulfillment(
        engine.client,
        settings or engine.settings,
        fulfillment,
        activated_at=activated_at,
        recorded_status=lambda order_id: recorded_status(engine, order_id),
    )


async def runs(engine: Engine, order_id: str) -> int:
    query = (
        f'WorkflowId = "{workflow_id(order_id)}"'
        f' AND TaskQueue = "{engine.settings.temporal_task_queue}"'
    )
    return len([execution async for execution in engine.client.list_workflows(query)])


async def test_the_same_activation_twice_starts_one_fulfillment_and_a_fulfilled_order_ignores_more(
    engine: Engine,
) -> None:
    order_id = engine.activate("internet")
    now = datetime.now(UTC)
    first = await activate(engine, activation(order_id, 1), activated_at=now)
    again = await activate(engine, activation(order_id, 1), activated_at=now)
    assert (first, again) == (ActivationDecision.START, ActivationDecision.IGNORE_RUNNING)
    handle = engine.client.get_workflow_handle(workflow_id(order_id), result_type=FulfillmentResult)
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    later = await activate(engine, activation(order_id, 2), activated_at=datetime.now(UTC))
    assert later is ActivationDecision.IGNORE_FULFILLED
    assert len(engine.whmcs_orders()) == 1


async def test_reactivating_a_parked_order_is_a_retry_counted_once(engine: Engine) -> None:
    order_id = engine.activate("no_payment_method")
    now = datetime.now(UTC)
    await activate(engine, activation(order_id, 1), activated_at=now)
    assert await attempts(engine, order_id) == 1
    decision = await activate(engine, activation(order_id, 5), activated_at=now)
    assert decision is ActivationDecision.RETRY_PARKED
    assert await attempts(engine, order_id) == 2
    # The same re-activation event delivered again: no second retry.
    await activate(engine, activation(order_id, 5), activated_at=now)
    await asyncio.sleep(0.5)
    assert await attempts(engine, order_id) == 2


async def test_a_cancelled_order_activated_again_starts_afresh_but_an_old_event_does_not(
    engine: Engine,
) -> None:
    order_id = engine.activate("no_payment_method")
    started = datetime.now(UTC)
    await activate(engine, activation(order_id, 1), activated_at=started)
    await attempts(engine, order_id)
    handle = engine.client.get_workflow_handle(workflow_id(order_id))
    await handle.execute_update(
        OrderFulfillment.cancel_update, OperatorRequest(reason="test", requested_by="ops")
    )
    await handle.result()
    stale = await activate(engine, activation(order_id, 1), activated_at=started)
    assert stale is ActivationDecision.IGNORE_STALE
    afresh = await activate(
        engine,
        activation(order_id, 9),
        activated_at=datetime.now(UTC) + timedelta(seconds=1),
    )
    assert afresh is ActivationDecision.START_AFRESH
    # Visibility (what list_workflows reads) catches up with a start a moment later.
    async with asyncio.timeout(10):
        while await runs(engine, order_id) != 2:  # noqa: ASYNC110 - polling Temporal
            await asyncio.sleep(0.2)


async def test_an_order_the_read_model_records_activated_is_not_billed_again_once_temporal_forgot(
    engine: Engine,
) -> None:
    # Months later: Temporal's retention has deleted the run that fulfilled the order, and the
    # order is activated again in Salesforce. The WHMCS lookup would not find the old order.
    order_id = engine.activate("internet")
    await activate(engine, activation(order_id, 1), activated_at=datetime.now(UTC))
    handle = engine.client.get_workflow_handle(workflow_id(order_id), result_type=FulfillmentResult)
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    await engine.client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=engine.client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id(order_id)),
        )
    )
    # The server deletes in the background (about 30 s on the dev server).
    async with asyncio.timeout(90):
        while await existing_fulfillment(engine.client, order_id):  # noqa: ASYNC110
            await asyncio.sleep(0.2)

    decision = await activate(
        engine, activation(order_id, 7), activated_at=datetime.now(UTC) + timedelta(seconds=1)
    )

    assert decision is ActivationDecision.IGNORE_RECORDED_FULFILLED
    assert await existing_fulfillment(engine.client, order_id) is None
    assert len(engine.whmcs_orders()) == 1


async def test_an_activation_from_before_the_cutover_starts_nothing(engine: Engine) -> None:
    order_id = engine.activate("internet")
    now = datetime.now(UTC)
    settings = engine.settings.model_copy(update={"fulfillment_cutover_at": now})

    before = await activate(
        engine, activation(order_id, 1), activated_at=now - timedelta(days=30), settings=settings
    )
    after = await activate(
        engine, activation(order_id, 2), activated_at=now + timedelta(seconds=1), settings=settings
    )

    assert (before, after) == (ActivationDecision.IGNORE_BEFORE_CUTOVER, ActivationDecision.START)
    assert await runs(engine, order_id) == 1
