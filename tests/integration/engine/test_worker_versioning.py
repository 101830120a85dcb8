"""A deploy that changes the workflow, under Worker Versioning, on the dev server: orders parked
on version 1 survive version 2 being made current, finish on it without a nondeterminism error,
new orders run on 2, and a rollback to 1 takes new orders back to 1. The versions are switched
with the `temporal worker deployment` commands the runbook gives operators.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from config.settings import Settings
from devstack.services import temporal_binary
from domain.fulfillment import (
    FulfillmentInput,
    FulfillmentProgress,
    FulfillmentResult,
    FulfillmentStatus,
    OperatorRequest,
)
from temporal_connection.connection import connect_temporal
from tests.fixtures.engine import Engine
from workers.main import activities, open_upstreams
from workers.versioning import deployment_config
from workflows.order_fulfillment import OrderFulfillment
from workflows.reconciliation import FulfillmentReconciliation

V2_PATCH = "versioning-test-v2-step"
PAY_METHOD = {
    "records": {"paymethods": [{"clientid": 3, "type": "RemoteCreditCard", "gateway": "stripe"}]}
}


@workflow.defn(name="OrderFulfillment")
class OrderFulfillmentV2(OrderFulfillment):
    """Version 2: one more step before success, behind `patched` (docs/workflow-changes.md)."""

    @workflow.init
    def __init__(self, input: FulfillmentInput) -> None:
        super().__init__(input)

    @workflow.run
    async def run(self, input: FulfillmentInput) -> FulfillmentResult:
        return await super().run(input)

    async def _succeeded(self) -> FulfillmentResult:
        if workflow.patched(V2_PATCH):
            await workflow.sleep(timedelta(milliseconds=10))
        return await super()._succeeded()


@asynccontextmanager
async def versioned_worker(
    settings: Settings, build_id: str, fulfillment: type[OrderFulfillment]
) -> AsyncIterator[None]:
    versioned = settings.model_copy(update={"worker_build_id": build_id})
    client = await connect_temporal(versioned)
    async with open_upstreams(versioned) as upstreams:
        worker = Worker(
            client,
            task_queue=versioned.temporal_task_queue,
            workflows=[fulfillment, FulfillmentReconciliation],
            activities=activities(upstreams, versioned),
            workflow_runner=UnsandboxedWorkflowRunner(),
            deployment_config=deployment_config(versioned),
        )
        async with worker:
            yield


def deployment_command(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`temporal worker deployment …` against the test's server, as an operator runs it."""
    return subprocess.run(
        [
            str(temporal_binary()),
            "worker",
            "deployment",
            *args,
            "--address",
            settings.temporal_address,
            "--namespace",
            settings.temporal_namespace,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def deployment(settings: Settings, *args: str) -> str:
    ran = deployment_command(settings, *args)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout


async def make_current(settings: Settings, build_id: str) -> None:
    # The version exists once one of its workers has polled: retry until it does.
    name = str(settings.worker_deployment_name)
    async with asyncio.timeout(60):
        while True:
            ran = await asyncio.to_thread(
                deployment_command,
                settings,
                "set-current-version",
                "--deployment-name",
                name,
                "--build-id",
                build_id,
                "--yes",
            )
            if ran.returncode == 0:
                return
            await asyncio.sleep(0.5)


async def parked(handle: WorkflowHandle[Any, Any]) -> FulfillmentProgress:
    async with asyncio.timeout(60):
        while True:
            progress: FulfillmentProgress = await handle.query(OrderFulfillment.progress)
            if progress.waiting_for_operator:
                return progress
            await asyncio.sleep(0.2)


async def ran_version_2(handle: WorkflowHandle[Any, Any]) -> bool:
    history = await handle.fetch_history()
    failed = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    assert not failed, "no workflow task failed (no nondeterminism)"
    patches = [
        json.loads(payload.data)["id"]
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
        for payload in e.marker_recorded_event_attributes.details["patch-data"].payloads
    ]
    return V2_PATCH in patches


async def build_of(handle: WorkflowHandle[Any, Any]) -> str:
    described = await handle.describe()
    info = described.raw_description.workflow_execution_info.versioning_info
    return str(info.deployment_version.build_id)


@pytest.fixture
def versioned(engine: Engine) -> Settings:
    return engine.settings.model_copy(
        update={"worker_deployment_name": f"fulfillment-test-{uuid.uuid4().hex[:8]}"}
    )


async def test_a_deploy_behind_patched_never_breaks_a_parked_order_and_rolls_back(
    engine: Engine, versioned: Settings
) -> None:
    async with versioned_worker(versioned, "1", OrderFulfillment):
        await make_current(versioned, "1")
        waiting = [await engine.start(engine.activate(key)) for key in ("no_payment_method",)]
        for handle in waiting:
            await parked(handle)
            assert await build_of(handle) == "1"

        async with versioned_worker(versioned, "2", OrderFulfillmentV2):
            await make_current(versioned, "2")
            described = deployment(
                versioned, "describe", "--name", str(versioned.worker_deployment_name), "-o", "json"
            )
            assert json.loads(described)["routingConfig"]["currentVersionBuildID"] == "2"
            fresh = await engine.start(engine.activate("internet"))
            assert (await fresh.result()).status is FulfillmentStatus.ACTIVATED
            assert await ran_version_2(fresh) and await build_of(fresh) == "2"

            # The parked order, started on 1, is retried after the deploy: it moves to 2 and
            # finishes there without a nondeterminism error.
            engine.whmcs.http.post(
                f"{engine.whmcs.control_url}/seed", json=PAY_METHOD
            ).raise_for_status()
            for handle in waiting:
                await handle.execute_update(
                    OrderFulfillment.retry_update,
                    OperatorRequest(reason="card added", requested_by="ops"),
                )
                assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
                assert await ran_version_2(handle)

            # Rollback: version 1 is current again; new orders run its code.
            await make_current(versioned, "1")
            back = await engine.start(engine.activate("esim"))
            assert (await back.result()).status is FulfillmentStatus.ACTIVATED
            assert not await ran_version_2(back) and await build_of(back) == "1"
