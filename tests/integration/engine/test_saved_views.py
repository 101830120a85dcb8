"""The Temporal UI's saved views (docs/observability.md) find what they name, on the real dev
server's visibility: search attributes are set where a run dwells, not at every step, and a run
is searchable by its order from the moment it starts."""

from __future__ import annotations

import pytest
from temporalio.client import Client

from domain.fulfillment import FulfillmentStatus
from tests.fixtures.engine import Engine
from tests.fixtures.freebit_emulator import FREEBIT_ACTIVATION_DELAY
from tests.integration.listener.test_listener import until

pytestmark = pytest.mark.usefixtures("worker")


async def _found(client: Client, query: str, workflow_id: str) -> bool:
    return any([e.id == workflow_id async for e in client.list_workflows(query)])


async def _view(engine: Engine, query: str, workflow_id: str) -> None:
    queue = f' AND TaskQueue = "{engine.settings.temporal_task_queue}"'
    await until(lambda: _found(engine.client, query + queue, workflow_id), within=30)


async def test_sim_activations_in_progress_and_parked_by_code_are_found(engine: Engine) -> None:
    # The eSIM's line takes a minute to activate: the run dwells at provision_sims.
    engine.freebit.http.post(
        f"{engine.freebit.control_url}/config", json={"activation_delay": 60.0}
    ).raise_for_status()
    try:
        sim = await engine.start(engine.activate("esim"))
        parked = await engine.start(engine.activate("no_payment_method"))
        await _view(
            engine, 'FulfillmentStep = "provision_sims" AND ExecutionStatus = "Running"', sim.id
        )
        await _view(
            engine,
            'WorkflowType = "OrderFulfillment" AND FulfillmentStatus = "failed"'
            ' AND ExecutionStatus = "Running"',
            parked.id,
        )
        await _view(
            engine,
            'FulfillmentErrorCode = "PAYMENT_METHOD_MISSING" AND ExecutionStatus = "Running"',
            parked.id,
        )
        # Where it parked, for the operator who finds it there.
        await _view(engine, 'FulfillmentStep = "validate_payment_method"', parked.id)
        assert not await _found(engine.client, 'FulfillmentStep = "provision_sims"', parked.id), (
            "a run that never reached the SIM step is not listed as activating a SIM"
        )
    finally:
        engine.freebit.http.post(
            f"{engine.freebit.control_url}/config",
            json={"activation_delay": FREEBIT_ACTIVATION_DELAY},
        ).raise_for_status()


async def test_an_order_is_searchable_from_its_start_to_its_end(engine: Engine) -> None:
    order_id = engine.activate("internet")
    handle = await engine.start(order_id)
    # Set by the starter: found even before the worker ran its first step.
    await _view(engine, f'SalesforceOrderId = "{order_id}"', handle.id)
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    account_id = engine.order(order_id)["AccountId"]
    await _view(engine, f'SalesforceAccountId = "{account_id}"', handle.id)
    await _view(
        engine,
        'FulfillmentStatus = "activated" AND FulfillmentStep = "invalidate_caches"',
        handle.id,
    )
