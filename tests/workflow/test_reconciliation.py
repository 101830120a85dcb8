"""The reconciliation workflow on the time-skipping server, its activities replaced by doubles
under the same names: an in-memory Salesforce (orders by order number, paged as the real query
pages) and an in-memory Temporal (the fulfillment ids it knows, those no longer running)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.reconciliation import (
    PAGES_PER_RUN,
    MissingFulfillments,
    ReconciliationActivity,
    ReconciliationInput,
    ReconciliationResult,
    StartedFulfillments,
    StrandedCandidates,
    StrandedFulfillments,
    UnfinishedOrder,
    UnfinishedOrdersPage,
    UnfinishedOrdersQuery,
)
from workflows.reconciliation import FulfillmentReconciliation


def order_id(number: int) -> str:
    return f"801{number:012d}AAA"


def unfinished(number: int, activation_status: str | None = "Pending") -> UnfinishedOrder:
    return UnfinishedOrder(
        sf_order_id=order_id(number),
        order_number=f"{number:08d}",
        activation_status=activation_status,
    )


@dataclass
class World:
    """Salesforce's unfinished orders and the fulfillments Temporal knows, as the doubles see
    them; `starts` counts every start the workflow asked for."""

    orders: list[UnfinishedOrder] = field(default_factory=list)
    fulfillments: set[str] = field(default_factory=set)
    starts: Counter[str] = field(default_factory=Counter)
    # Fulfillments that ended without finishing (terminated).
    ended: set[str] = field(default_factory=set)
    asked_about_stranded: list[str] = field(default_factory=list)
    read_failures: int = 0
    reads: int = 0

    @activity.defn(name=ReconciliationActivity.READ_UNFINISHED_ORDERS.value)
    async def read_unfinished_orders(self, query: UnfinishedOrdersQuery) -> UnfinishedOrdersPage:
        self.reads += 1
        if self.read_failures:
            self.read_failures -= 1
            raise ApplicationError("Salesforce unreachable", type="not_sent")
        limit = query.limit or 200
        after = query.after or ""
        page = sorted(
            (order for order in self.orders if order.order_number > after),
            key=lambda order: order.order_number,
        )[:limit]
        return UnfinishedOrdersPage(
            orders=tuple(page),
            next_after=page[-1].order_number if len(page) == limit else None,
            read_at=datetime.now(UTC),
        )

    @activity.defn(name=ReconciliationActivity.RECORD_STRANDED_FULFILLMENTS.value)
    async def record_stranded_fulfillments(
        self, candidates: StrandedCandidates
    ) -> StrandedFulfillments:
        self.asked_about_stranded += candidates.sf_order_ids
        stranded = tuple(order for order in candidates.sf_order_ids if order in self.ended)
        return StrandedFulfillments(stranded=stranded, newly_recorded=stranded)

    @activity.defn(name=ReconciliationActivity.START_MISSING_FULFILLMENTS.value)
    async def start_missing_fulfillments(self, request: MissingFulfillments) -> StartedFulfillments:
        started: list[str] = []
        present: list[str] = []
        for sf_order_id in request.sf_order_ids:
            self.starts[sf_order_id] += 1
            if sf_order_id in self.fulfillments:
                present.append(sf_order_id)
            else:
                self.fulfillments.add(sf_order_id)
                started.append(sf_order_id)
        return StartedFulfillments(started=tuple(started), already_present=tuple(present))


@pytest.fixture
async def client(time_skipping_env: WorkflowEnvironment) -> Client:
    config = time_skipping_env.client.config()
    config["data_converter"] = pydantic_data_converter
    return Client(**config)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def worker(client: Client, world: World, task_queue: str) -> AsyncIterator[str]:
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[FulfillmentReconciliation],
        activities=[
            world.read_unfinished_orders,
            world.start_missing_fulfillments,
            world.record_stranded_fulfillments,
        ],
    ):
        yield task_queue


async def reconcile(
    client: Client, task_queue: str, input: ReconciliationInput | None = None
) -> ReconciliationResult:
    return await client.execute_workflow(
        FulfillmentReconciliation.run,
        input or ReconciliationInput(),
        id=f"reconcile-{uuid.uuid4()}",
        task_queue=task_queue,
    )


async def test_orders_without_a_fulfillment_are_started_and_every_other_one_left_alone(
    client: Client, world: World, worker: str
) -> None:
    world.orders = [
        unfinished(101, "Pending"),
        unfinished(102, None),
        # Pending, but its fulfillment is running (it has not marked the order yet) or closed.
        unfinished(103, "Pending"),
        # Parked, or expired long ago (Temporal may have deleted it): never started again.
        unfinished(104, "Failed"),
        unfinished(105, "Activating"),
        # A value some other automation wrote: not ours to decide.
        unfinished(106, "On Hold"),
    ]
    world.fulfillments = {order_id(103), order_id(104), order_id(105)}

    result = await reconcile(client, worker)

    assert result == ReconciliationResult(
        found=6,
        started=2,
        already_present=4,
        pages=1,
        started_order_ids=(order_id(101), order_id(102)),
    )
    # Temporal was asked only about the orders no fulfillment has touched.
    assert set(world.starts) == {order_id(101), order_id(102), order_id(103)}
    # And whether a fulfillment still runs only for the order Salesforce shows Activating.
    assert world.asked_about_stranded == [order_id(105)]


async def test_orders_left_activating_with_no_fulfillment_running_are_reported_not_started(
    client: Client, world: World, worker: str
) -> None:
    world.orders = [unfinished(201, "Activating"), unfinished(202, "Activating")]
    world.fulfillments = {order_id(201), order_id(202)}
    world.ended = {order_id(202)}

    first = await reconcile(client, worker)
    again = await reconcile(client, worker)

    for result in (first, again):
        assert (result.found, result.started, result.already_present) == (2, 0, 2)
        assert (result.stranded, result.stranded_order_ids) == (1, (order_id(202),))
        assert "1 left Activating with no fulfillment running" in result.summary()
    assert not world.starts


async def test_a_second_reconciliation_starts_nothing_more(
    client: Client, world: World, worker: str
) -> None:
    world.orders = [unfinished(n) for n in range(101, 106)]
    first = await reconcile(client, worker)
    again = await reconcile(client, worker)
    assert (first.started, again.started, again.already_present) == (5, 0, 5)
    assert again.started_order_ids == ()
    assert set(world.fulfillments) == {order_id(n) for n in range(101, 106)}


async def test_nothing_unfinished_reads_one_page_and_starts_nothing(
    client: Client, world: World, worker: str
) -> None:
    result = await reconcile(client, worker)
    assert result == ReconciliationResult(pages=1)
    assert not world.starts


async def test_many_unfinished_orders_are_read_page_by_page_and_the_run_continues_as_new(
    client: Client, world: World, worker: str
) -> None:
    count = 2 * PAGES_PER_RUN + 5
    world.orders = [
        unfinished(100 + n, "Failed" if n % 5 == 0 else "Pending") for n in range(count)
    ]
    handle = await client.start_workflow(
        FulfillmentReconciliation.run,
        ReconciliationInput(batch_size=2),
        id=f"reconcile-{uuid.uuid4()}",
        task_queue=worker,
    )
    first_run = handle.result_run_id

    result = await handle.result()

    fresh = [order for order in world.orders if order.activation_status == "Pending"]
    assert (result.found, result.started, result.already_present) == (
        count,
        len(fresh),
        count - len(fresh),
    )
    assert result.pages == count // 2 + 1
    assert sorted(result.started_order_ids) == sorted(order.sf_order_id for order in fresh)
    # Every order was read once and started once: the pages neither overlap nor skip.
    assert set(world.starts.values()) == {1}
    # The first run stopped after its pages and continued as new, carrying its counts.
    history = await client.get_workflow_handle(handle.id, run_id=first_run).fetch_history()
    last = history.events[-1]
    assert last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    activities = [
        event
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert len(activities) <= 2 * PAGES_PER_RUN


async def test_a_salesforce_outage_is_waited_out(client: Client, world: World, worker: str) -> None:
    world.orders = [unfinished(101)]
    world.read_failures = 4
    result = await reconcile(client, worker)
    assert (result.started, world.reads) == (1, 5)


async def test_an_outage_longer_than_the_page_budget_fails_the_run_for_the_next_to_retry(
    client: Client, world: World, worker: str
) -> None:
    world.orders = [unfinished(101)]
    world.read_failures = 10_000
    with pytest.raises(WorkflowFailureError) as failed:
        await reconcile(client, worker)
    assert isinstance(failed.value.cause, ActivityError)
    assert not world.starts
