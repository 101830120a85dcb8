"""A worker process killed with SIGKILL in the middle of a fulfillment: another worker takes
over and the order completes, with exactly one WHMCS order and one Freebit line."""

from __future__ import annotations

import asyncio
import signal

import httpx

from devstack.process import free_port
from domain.fulfillment import FulfillmentProgress, FulfillmentStatus, Step
from tests.fixtures.engine import Engine, WorkerProcess, worker_running
from workflows.order_fulfillment import OrderFulfillment


async def test_a_worker_killed_mid_fulfillment_is_replaced_and_the_order_completes_once(
    engine: Engine, worker_process: WorkerProcess
) -> None:
    # Freebit takes a few seconds to activate: the fulfillment is in the middle of its work.
    engine.freebit.http.post(
        f"{engine.freebit.control_url}/config", json={"activation_delay": 4.0}
    ).raise_for_status()
    first = worker_process()
    order_id = engine.activate("physical_sim")
    handle = await engine.start(order_id)
    async with asyncio.timeout(60):
        while True:
            progress: FulfillmentProgress = await handle.query(OrderFulfillment.progress)
            if progress.step is Step.PROVISION_SIMS:
                break
            await asyncio.sleep(0.1)

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    worker_process()

    async with asyncio.timeout(120):
        result = await handle.result()
    assert result.status is FulfillmentStatus.ACTIVATED
    orders = engine.whmcs_orders()
    assert len(orders) == 1 and orders[0]["status"] == "Active"
    assert engine.freebit_lines()["08012345678"]["state"] == "active"
    assert engine.order(order_id)["Activation_Status__c"] == "Activated"


async def test_the_worker_serves_its_own_and_the_sdks_metrics_on_one_port(engine: Engine) -> None:
    port = free_port()
    settings = engine.settings.model_copy(update={"worker_metrics_port": port})
    async with worker_running(settings):
        order_id = engine.activate("internet")
        await (await engine.start(order_id)).result()
        async with httpx.AsyncClient() as http:
            reply = await http.get(f"http://127.0.0.1:{port}/metrics")
    text = reply.text
    assert reply.status_code == 200
    # Ours: outbound calls by system and outcome.
    assert (
        'fulfillment_client_requests_total{operation="AddOrder",outcome="success",system="whmcs"}'
        in text
    )
    # The SDK's runtime, and the workflow's own counters recorded through it.
    assert "temporal_workflow_completed" in text
    assert "fulfillment_completed" in text and 'status="activated"' in text
    assert "fulfillment_step_duration" in text
