"""Records the fulfillment histories under tests/histories/ that the replay test replays.

    .venv/bin/python -m tests.replay.record_histories

Run it when a change to the workflow is *meant* to change its histories (a new workflow type, or
a change guarded by `workflow.patched`): the recorded files are then the new shape, and the old
ones stay next to them for as long as workflows of that shape may still be running. Each history
runs the workflow on the time-skipping server against the activity doubles of the workflow tests
(fake data only; recorded without the payload codec, so the files need no key).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from devstack.services import SEARCH_ATTRIBUTES, temporal_test_server_binary
from domain.fulfillment import (
    FulfillmentInput,
    FulfillmentOptions,
    FulfillmentProgress,
    OperatorRequest,
    Trigger,
    TriggerSource,
    workflow_id,
)
from domain.sim import SimPhase
from tests.workflow.upstreams import ORDER_ID, Upstreams, sim_order
from usecases.fulfillments import start_search_attributes
from workflows.order_fulfillment import OrderFulfillment

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
OPERATOR = OperatorRequest(reason="fixed at the source", requested_by="ops@example.jp")

Scenario = Callable[[Upstreams, WorkflowHandle[Any, Any], WorkflowEnvironment], Awaitable[None]]


async def _parked(handle: WorkflowHandle[Any, Any], env: WorkflowEnvironment) -> None:
    while True:
        progress: FulfillmentProgress = await handle.query(OrderFulfillment.progress)
        if progress.waiting_for_operator:
            return
        await env.sleep(20)


async def internet_order(upstreams: Upstreams, handle: Any, env: WorkflowEnvironment) -> None:
    await handle.result()


async def sim_order_activated(upstreams: Upstreams, handle: Any, env: WorkflowEnvironment) -> None:
    await handle.result()


async def payment_missing_then_retried(
    upstreams: Upstreams, handle: Any, env: WorkflowEnvironment
) -> None:
    await _parked(handle, env)
    upstreams.pay_methods[1] = ["RemoteCreditCard"]
    await handle.execute_update(OrderFulfillment.retry_update, OPERATOR)
    await handle.result()


async def sim_failure_then_cancelled(
    upstreams: Upstreams, handle: Any, env: WorkflowEnvironment
) -> None:
    await _parked(handle, env)
    await handle.execute_update(OrderFulfillment.cancel_update, OPERATOR)
    await handle.result()


def _arrange(name: str, upstreams: Upstreams) -> None:
    if name == "sim_order_activated":
        upstreams.order = sim_order()
    elif name == "payment_missing_then_retried":
        upstreams.pay_methods.clear()
    elif name == "sim_failure_then_cancelled":
        upstreams.order = sim_order()
        upstreams.sim_outcome = SimPhase.FAILED


SCENARIOS: dict[str, Scenario] = {
    "internet_order": internet_order,
    "sim_order_activated": sim_order_activated,
    "payment_missing_then_retried": payment_missing_then_retried,
    "sim_failure_then_cancelled": sim_failure_then_cancelled,
}


async def record(directory: Path = HISTORIES) -> list[Path]:
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server_binary())
    )
    written: list[Path] = []
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in SEARCH_ATTRIBUTES
                },
            )
        )
        config = env.client.config()
        config["data_converter"] = pydantic_data_converter
        client = Client(**config)
        for name, scenario in SCENARIOS.items():
            upstreams = Upstreams()
            _arrange(name, upstreams)
            queue = f"record-{name}"
            async with Worker(
                client,
                task_queue=queue,
                workflows=[OrderFulfillment],
                activities=upstreams.activities(),
            ):
                handle = await client.start_workflow(
                    OrderFulfillment.run,
                    FulfillmentInput(
                        sf_order_id=ORDER_ID,
                        trigger=Trigger(source=TriggerSource.CDC, replay_id="1"),
                        options=FulfillmentOptions(),
                    ),
                    id=f"{workflow_id(ORDER_ID)}-{name}",
                    task_queue=queue,
                    search_attributes=start_search_attributes(ORDER_ID),
                )
                await scenario(upstreams, handle, env)
                history = await handle.fetch_history()
            path = directory / f"{name}.json"
            path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
            written.append(path)
    finally:
        await env.shutdown()
    return written


if __name__ == "__main__":
    for path in asyncio.run(record()):
        print(path)
