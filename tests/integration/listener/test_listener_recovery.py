"""The listener when things go wrong: gaps, stale cursors, Salesforce unreachable, a
re-activation of a parked order, and the listener process killed mid-stream; each on both
transports (the Streaming API, the Pub/Sub API) where the transport takes part."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import pytest
from prometheus_client import REGISTRY

from domain.fulfillment import FulfillmentProgress, FulfillmentStatus, workflow_id
from tests.fixtures.engine import Engine, ListenerProcess
from tests.integration.listener.test_listener import (
    _subscribed,
    fulfilled,
    listener_settings,
    listening,
    runs,
    until,
)
from workflows.order_fulfillment import OrderFulfillment

pytestmark = pytest.mark.usefixtures("worker")
ORDERS = "/data/OrderChangeEvent"
# A replay id each transport refuses as outside retention (an unknown one reads the same).
UNKNOWN_REPLAY_ID = {"cometd": ("987654321", 987654321), "pubsub": ("00" * 12, 1)}
# Where each transport's subscription is served, for a fault that makes Salesforce unreachable.
SUBSCRIBE_PATH = {"cometd": "/cometd", "pubsub": "/eventbus.v1.PubSub/Subscribe"}


def _alerts(reason: str) -> float:
    value = REGISTRY.get_sample_value("fulfillment_cdc_alerts_total", {"reason": reason})
    return value or 0.0


@pytest.mark.usefixtures("each_transport")
async def test_a_gap_event_is_decided_from_the_order_as_it_is_now(engine: Engine) -> None:
    async with listening(listener_settings(engine)):
        await until(lambda: _subscribed(engine))
        # The order is activated by something whose event Salesforce could not describe.
        second = engine.demo["orders"]["esim"]
        # Written as if by the engine itself: its own event starts nothing, so only the gap can.
        engine.sf.client().restful(
            f"sobjects/Order/{second}",
            method="PATCH",
            json={"Status": "Activated"},
            headers={"Sforce-Call-Options": "client=order-fulfillment"},
        )
        engine.sf.control(
            "POST",
            "events/gap",
            {"entity": "Order", "changeType": "GAP_UPDATE", "recordIds": [second]},
        )
        result = await fulfilled(engine, second)
    assert result.status is FulfillmentStatus.ACTIVATED


async def test_a_cursor_outside_retention_falls_back_to_all_events_and_reconciles(
    engine: Engine, each_transport: str
) -> None:
    before = _alerts("stale_cursor")
    replay_id, position = UNKNOWN_REPLAY_ID[each_transport]
    connection = await asyncpg.connect(engine.settings.database_url)
    try:
        await connection.execute(
            "INSERT INTO cdc_replay_cursors (transport, channel, replay_id, position)"
            " VALUES ($1, $2, $3, $4)",
            each_transport,
            ORDERS,
            replay_id,
            position,
        )
    finally:
        await connection.close()
    order_id = engine.activate("internet")  # retained, after the (unknown) cursor
    async with listening(listener_settings(engine)):
        result = await fulfilled(engine, order_id)
    assert result.status is FulfillmentStatus.ACTIVATED
    assert _alerts("stale_cursor") == before + 1
    reconciliations = [
        execution
        async for execution in engine.client.list_workflows(
            f'WorkflowType = "FulfillmentReconciliation"'
            f' AND TaskQueue = "{engine.settings.temporal_task_queue}"'
        )
    ]
    assert reconciliations, "the stale cursor triggered reconciliation"


async def test_salesforce_unreachable_for_a_while_is_survived(
    engine: Engine, each_transport: str
) -> None:
    async with listening(listener_settings(engine, cdc_reconnect_max_seconds=1)):
        await until(lambda: _subscribed(engine))
        path = SUBSCRIBE_PATH[each_transport]
        engine.fault(engine.sf, {"kind": "fail", "count": 6, "status": 503, "path": path})
        engine.sf.control("POST", "sessions/drop")
        order_id = engine.activate("internet")
        result = await fulfilled(engine, order_id, within=90)
    assert result.status is FulfillmentStatus.ACTIVATED


@pytest.mark.usefixtures("each_transport")
async def test_reactivating_a_parked_order_in_salesforce_retries_it(engine: Engine) -> None:
    async with listening(listener_settings(engine)):
        order_id = engine.activate("no_payment_method")
        handle = engine.client.get_workflow_handle(workflow_id(order_id))

        async def parked_at(attempt: int) -> bool:
            try:
                progress: FulfillmentProgress = await handle.query(OrderFulfillment.progress)
            except Exception:
                return False
            return progress.waiting_for_operator and progress.attempt == attempt

        await until(lambda: parked_at(1), within=60)
        sf = engine.sf.client()
        sf.restful(f"sobjects/Order/{order_id}", method="PATCH", json={"Status": "Draft"})
        sf.restful(f"sobjects/Order/{order_id}", method="PATCH", json={"Status": "Activated"})
        await until(lambda: parked_at(2), within=60)
    assert await runs(engine, order_id) == 1


@pytest.mark.usefixtures("each_transport")
async def test_a_listener_killed_mid_stream_loses_nothing_and_doubles_nothing(
    engine: Engine, listener_process: ListenerProcess
) -> None:
    first = listener_process()
    await until(lambda: _subscribed(engine), within=60)
    keys = ["internet", "esim", "physical_sim"]
    order_ids = [engine.activate(key) for key in keys]
    # Killed as soon as the first fulfillment exists: the others may be received, in hand,
    # or not yet read; their cursor has not moved past them.
    await until(lambda: _any_started(engine, order_ids), within=60)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    listener_process()
    results = await asyncio.gather(*(fulfilled(engine, o, within=90) for o in order_ids))
    assert [r.status for r in results] == [FulfillmentStatus.ACTIVATED] * 3
    for order_id in order_ids:
        assert await runs(engine, order_id) == 1
    assert len(engine.whmcs_orders()) == 3


async def _any_started(engine: Engine, order_ids: list[str]) -> bool:
    for order_id in order_ids:
        if await runs(engine, order_id):
            return True
    return False


async def test_a_cursor_about_to_leave_retention_raises_an_alert(engine: Engine) -> None:
    before = _alerts("cursor_near_retention")
    connection = await asyncpg.connect(engine.settings.database_url)
    try:
        # A listener that was down for 60 hours: 12 hours left before events are lost.
        await connection.execute(
            "INSERT INTO cdc_replay_cursors"
            " (channel, replay_id, position, last_event_at, updated_at)"
            " VALUES ($1, '1', 1, now() - interval '60 hours', now() - interval '60 hours')",
            ORDERS,
        )
    finally:
        await connection.close()
    async with listening(listener_settings(engine)):
        await until(lambda: _subscribed(engine))
    assert _alerts("cursor_near_retention") == before + 1
