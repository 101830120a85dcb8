"""`WORKER_WORKFLOW_SANDBOX=true`: the worker runs the fulfillment inside the SDK's sandbox
(off by default for its CPU cost), and a SIM order, whose path holds the most steps and the
durable timers, still ends Activated with one WHMCS order and one active line."""

from __future__ import annotations

from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from domain.fulfillment import FulfillmentStatus
from tests.fixtures.engine import Engine, worker_running
from workers.main import workflow_runner


def test_the_sandbox_is_off_unless_asked_for(engine: Engine) -> None:
    assert isinstance(workflow_runner(engine.settings), UnsandboxedWorkflowRunner)
    sandboxed = engine.settings.model_copy(update={"worker_workflow_sandbox": True})
    assert isinstance(workflow_runner(sandboxed), SandboxedWorkflowRunner)


async def test_the_fulfillment_runs_to_the_end_inside_the_sandbox(engine: Engine) -> None:
    sandboxed = engine.settings.model_copy(update={"worker_workflow_sandbox": True})
    async with worker_running(sandboxed):
        order_id = engine.activate("esim")
        result = await (await engine.start(order_id)).result()

    assert result.status is FulfillmentStatus.ACTIVATED
    [whmcs_order] = engine.whmcs_orders()
    assert whmcs_order["status"] == "Active"
    assert engine.freebit_lines()["07012345678"]["state"] == "active"
    assert engine.order(order_id)["Activation_Status__c"] == "Activated"
