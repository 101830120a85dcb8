"""Activations of an order, repeated and re-done, against the real worker and dev server:
DESIGN.md's re-activation rules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from config.temporal import activate_fulfillment
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
from workflows.order_fulfillment import OrderFulfillment

pytestmark = pytest.mark.usefixtures("worker")


def activation(order_id: str, replay_id: int) -> FulfillmentInput:
    return FulfillmentInput(
        sf_order_id=order_id,
        trigger=Trigger(
            source=TriggerSource.CDC, channel="/data/OrderChangeEvent", replay_id=replay_id
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
    first = await activate_fulfillment(
        engine.client, engine.settings, activation(order_id, 1), activated_at=now
    )
    again = await activate_fulfillment(
        engine.client, engine.settings, activation(order_id, 1), activated_at=now
    )
    assert (first, again) == (ActivationDecision.START, ActivationDecision.IGNORE_RUNNING)
    handle = engine.client.get_workflow_handle(workflow_id(order_id), result_type=FulfillmentResult)
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    later = await activate_fulfillment(
        engine.client, engine.settings, activation(order_id, 2), activated_at=datetime.now(UTC)
    )
    assert later is ActivationDecision.IGNORE_FULFILLED
    assert len(engine.whmcs_orders()) == 1


async def test_reactivating_a_parked_order_is_a_retry_counted_once(engine: Engine) -> None:
    order_id = engine.activate("no_payment_method")
    now = datetime.now(UTC)
    await activate_fulfillment(
        engine.client, engine.settings, activation(order_id, 1), activated_at=now
    )
    assert await attempts(engine, order_id) == 1
    decision = await activate_fulfillment(
        engine.client, engine.settings, activation(order_id, 5), activated_at=now
    )
    assert decision is ActivationDecision.RETRY_PARKED
    assert await attempts(engine, order_id) == 2
    # The same re-activation event delivered again: no second retry.
    await activate_fulfillment(
        engine.client, engine.settings, activation(order_id, 5), activated_at=now
    )
    await asyncio.sleep(0.5)
    assert await attempts(engine, order_id) == 2


async def test_a_cancelled_order_activated_again_starts_afresh_but_an_old_event_does_not(
    engine: Engine,
) -> None:
    order_id = engine.activate("no_payment_method")
    started = datetime.now(UTC)
    await activate_fulfillment(
        engine.client, engine.settings, activation(order_id, 1), activated_at=started
    )
    await attempts(engine, order_id)
    handle = engine.client.get_workflow_handle(workflow_id(order_id))
    await handle.execute_update(
        OrderFulfillment.cancel_update, OperatorRequest(reason="test", requested_by="ops")
    )
    await handle.result()
    stale = await activate_fulfillment(
        engine.client, engine.settings, activation(order_id, 1), activated_at=started
    )
    assert stale is ActivationDecision.IGNORE_STALE
    afresh = await activate_fulfillment(
        engine.client,
        engine.settings,
        activation(order_id, 9),
        activated_at=datetime.now(UTC) + timedelta(seconds=1),
    )
    assert afresh is ActivationDecision.START_AFRESH
    assert await runs(engine, order_id) == 2
