"""The fulfillment end to end inside one test process: the real worker and activities, the dev
server, Postgres, Redis and the three emulators; driven and checked only through public doors
(Salesforce REST, the emulators' state, the Temporal client, the read model)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client

from clients.cache import CacheKeys
from domain.errors import ErrorCode
from domain.fulfillment import (
    FulfillmentProgress,
    FulfillmentResult,
    FulfillmentStatus,
    OperatorRequest,
    Step,
)
from tests.fixtures.engine import Engine
from workflows.order_fulfillment import OrderFulfillment

pytestmark = pytest.mark.usefixtures("worker")


async def read_model(database_url: str, sf_order_id: str) -> dict[str, Any]:
    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow(
            "SELECT * FROM fulfillments WHERE sf_order_id = $1", sf_order_id
        )
    finally:
        await connection.close()
    assert row is not None
    return dict(row)


async def test_an_internet_order_is_activated_once_and_written_back(
    engine: Engine, redis_client: redis.Redis
) -> None:
    order_id = engine.activate("internet")
    account_id = engine.order(order_id)["AccountId"]
    keys = CacheKeys(engine.settings.cache_key_prefix)
    stale = [keys.orders_detail(order_id), keys.orders_account(account_id), keys.whmcs_client(1)]
    for key in stale:
        await redis_client.set(key, "cached view")

    handle = await engine.start(order_id)
    result = await handle.result()

    assert result.status is FulfillmentStatus.ACTIVATED
    described = await handle.describe()
    assert await described.static_summary() == f"Fulfil Salesforce order {order_id}"
    order = engine.order(order_id)
    assert order["Activation_Status__c"] == "Activated"
    assert order["Activation_Error_Code__c"] is None
    assert order["WHMCS_Order_ID__c"] == str(result.whmcs_order_id)
    [item] = engine.order_items(order_id)
    assert item["WHMCS_Service_ID__c"] == str(result.whmcs_service_ids[item["Id"]])
    [whmcs_order] = engine.whmcs_orders()
    assert (int(whmcs_order["id"]), whmcs_order["status"]) == (result.whmcs_order_id, "Active")
    row = await read_model(engine.settings.database_url or "", order_id)
    assert (row["status"], row["sf_account_id"], row["whmcs_order_id"]) == (
        "activated",
        account_id,
        result.whmcs_order_id,
    )
    assert list(row["whmcs_service_ids"]) == list(result.whmcs_service_ids.values())
    assert row["error_code"] is None and row["version"] > 0
    assert await redis_client.exists(*stale) == 0


async def test_an_esim_order_ends_with_its_line_active_at_freebit(engine: Engine) -> None:
    order_id = engine.activate("esim")
    result = await (await engine.start(order_id)).result()
    assert result.status is FulfillmentStatus.ACTIVATED
    line = engine.freebit_lines()["07012345678"]
    assert (line["state"], line["simType"]) == ("active", "esim")
    assert engine.order(order_id)["Activation_Status__c"] == "Activated"


async def test_lost_replies_to_every_write_still_make_exactly_one_of_each(engine: Engine) -> None:
    order_id = engine.activate("physical_sim")
    engine.fault(
        engine.whmcs, {"kind": "lose_reply", "mode": "reset", "count": 1, "action": "AddOrder"}
    )
    engine.fault(
        engine.whmcs, {"kind": "lose_reply", "mode": "status", "count": 1, "action": "AcceptOrder"}
    )
    engine.fault(
        engine.freebit,
        {"kind": "lose_reply", "mode": "reset", "count": 1, "path": "/emptool/api/master/addAcnt/"},
    )
    engine.fault(
        engine.sf,
        {
            "kind": "lose_reply",
            "mode": "reset",
            "count": 1,
            "method": "PATCH",
            "path": "/services/data/v60.0/composite",
        },
    )
    result = await (await engine.start(order_id)).result()

    assert result.status is FulfillmentStatus.ACTIVATED
    # Every fault fired: each write took effect while its reply was lost.
    assert [engine.lost_replies(h) for h in (engine.whmcs, engine.freebit, engine.sf)] == [2, 1, 1]
    orders = engine.whmcs_orders()
    assert len(orders) == 1 and orders[0]["status"] == "Active"
    assert engine.freebit_lines()["08012345678"]["state"] == "active"
    assert engine.order(order_id)["Activation_Status__c"] == "Activated"


async def test_an_attempt_after_one_that_lost_addorder_finds_its_order(engine: Engine) -> None:
    """The first attempt's AddOrder takes effect, its reply is lost and so is its lookup by
    marker (3 refused reads): the attempt fails. The next attempt must find that order, not
    add a second one, though only the first attempt of an order skips the lookup."""
    order_id = engine.activate("internet")
    engine.fault(
        engine.whmcs, {"kind": "lose_reply", "mode": "reset", "count": 1, "action": "AddOrder"}
    )
    engine.fault(
        engine.whmcs,
        {"kind": "fail", "status": 503, "count": 3, "action": "GetClientsProducts"},
    )
    result = await (await engine.start(order_id)).result()

    assert result.status is FulfillmentStatus.ACTIVATED
    assert engine.lost_replies(engine.whmcs) == 1
    [whmcs_order] = engine.whmcs_orders()
    assert (int(whmcs_order["id"]), whmcs_order["status"]) == (result.whmcs_order_id, "Active")


async def test_a_missing_payment_method_parks_then_a_retry_after_the_fix_activates(
    engine: Engine,
) -> None:
    order_id = engine.activate("no_payment_method")
    handle = await engine.start(order_id)
    progress = await until_parked(handle)
    assert progress.step is Step.VALIDATE_PAYMENT_METHOD
    order = engine.order(order_id)
    assert (order["Activation_Status__c"], order["Activation_Error_Code__c"]) == (
        "Failed",
        "PAYMENT_METHOD_MISSING",
    )
    row = await read_model(engine.settings.database_url or "", order_id)
    assert (row["status"], row["error_code"]) == ("failed", "PAYMENT_METHOD_MISSING")

    # The customer adds a card in WHMCS; an operator retries.
    engine.whmcs.http.post(
        f"{engine.whmcs.control_url}/seed",
        json={
            "records": {
                "paymethods": [{"clientid": 3, "type": "RemoteCreditCard", "gateway": "stripe"}]
            }
        },
    ).raise_for_status()
    await handle.execute_update(
        OrderFulfillment.retry_update,
        OperatorRequest(reason="card added", requested_by="ops@example.jp"),
    )
    result = await handle.result()
    assert result.status is FulfillmentStatus.ACTIVATED
    assert engine.order(order_id)["Activation_Status__c"] == "Activated"
    assert len(engine.whmcs_orders()) == 1


async def test_an_order_that_cannot_be_fulfilled_parks_with_its_code(engine: Engine) -> None:
    order_id = engine.activate("unmapped_product")
    progress = await until_parked(await engine.start(order_id))
    assert progress.last_error is not None
    assert progress.last_error.code is ErrorCode.PRODUCT_NOT_MAPPED
    assert engine.order(order_id)["Activation_Error_Code__c"] == "PRODUCT_NOT_MAPPED"
    assert engine.whmcs_orders() == []


async def test_no_customer_field_is_readable_in_history_without_the_key(engine: Engine) -> None:
    order_id = engine.activate("esim")
    handle = await engine.start(order_id)
    await handle.result()
    plain = Client(engine.client.service_client, namespace=engine.settings.temporal_namespace)
    history = await plain.get_workflow_handle(handle.id).fetch_history()
    text = json.dumps(history.to_json_dict())
    for customer_value in (
        "Taro",
        "Yamada",
        "Shibuya",
        "07012345678",
        "89049032000001000000012345678901",
    ):
        assert customer_value not in text
    # With the key it is all there.
    keyed = await engine.client.get_workflow_handle(handle.id).fetch_history()
    assert keyed.events


async def until_parked(handle: Any) -> FulfillmentProgress:
    async with asyncio.timeout(60):
        while True:
            progress: FulfillmentProgress = await handle.query(OrderFulfillment.progress)
            if progress.waiting_for_operator:
                return progress
            await asyncio.sleep(0.1)


async def test_a_run_reset_by_an_operator_is_written_to_the_read_model_and_bills_once(
    engine: Engine,
) -> None:
    order_id = engine.activate("internet")
    handle = await engine.start(order_id)
    await handle.result()
    before = await read_model(engine.settings.database_url or "", order_id)
    # Reset to the first workflow task, as an operator does from the Temporal UI: the new run
    # does every step again, and counts its read-model writes again from there.
    history = await handle.fetch_history()
    first_task = next(
        event.event_id
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    )
    reset = await engine.client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=engine.client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=handle.id, run_id=history.run_id),
            reason="operator reset in a test",
            workflow_task_finish_event_id=first_task,
            request_id=str(uuid.uuid4()),
        )
    )
    rerun = engine.client.get_workflow_handle(
        handle.id, run_id=reset.run_id, result_type=FulfillmentResult
    )
    assert (await rerun.result()).status is FulfillmentStatus.ACTIVATED
    after = await read_model(engine.settings.database_url or "", order_id)
    assert after["version"] > before["version"], "the reset run's writes were taken"
    assert after["updated_at"] > before["updated_at"]
    assert after["status"] == "activated"
    assert [o["status"] for o in engine.whmcs_orders()] == ["Active"], "one WHMCS order"
