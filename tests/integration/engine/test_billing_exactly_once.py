"""create_billing_order, attempt by attempt, against the WHMCS emulator and a real Postgres: one
WHMCS order whatever WHMCS commits late and whatever our own database forgets.

Each attempt runs in an `ActivityEnvironment` carrying what Temporal would hand the next one:
the attempt number, when it was scheduled, and the heartbeat details the last one recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.billing import BillingActivities
from clients.fulfillment_store import FulfillmentStore
from clients.postgres import create_pool
from clients.whmcs import AddOrderRequest, OrderLine, WhmcsClient
from domain.billing import BillingOrder, BillingOrderResult
from domain.errors import ErrorKind
from tests.fixtures.whmcs_emulator import WhmcsEmulatorHandle
from tests.integration.clients._control import Control, seeded_control
from tests.integration.clients.test_whmcs_client import FAST_RETRY, SF_ORDER, billing_order

SETTLE = timedelta(seconds=4)


@dataclasses.dataclass
class Attempts:
    """Runs attempts of the activity as Temporal would, carrying heartbeats from one to the next."""

    activities: BillingActivities
    heartbeats: list[Any] = dataclasses.field(default_factory=list)
    attempt: int = 0

    async def run(
        self, order: BillingOrder, *, scheduled: datetime | None = None
    ) -> BillingOrderResult:
        self.attempt += 1
        env = ActivityEnvironment()
        env.info = dataclasses.replace(
            env.info,
            attempt=self.attempt,
            current_attempt_scheduled_time=scheduled or datetime.now(UTC),
            heartbeat_details=list(self.heartbeats[-1:]),
            heartbeat_timeout=timedelta(seconds=3),
        )
        env.on_heartbeat = lambda *details: self.heartbeats.extend(details)
        return await env.run(self.activities.create_billing_order, order)

    def new_activity(self) -> None:
        """A fresh activity (another run, an operator's retry): attempt 1, no heartbeats."""
        self.attempt = 0
        self.heartbeats.clear()


@pytest.fixture
def whmcs_control(whmcs_emulator: WhmcsEmulatorHandle) -> Iterator[Control]:
    with seeded_control(whmcs_emulator.control_url) as control:
        yield control


@pytest.fixture
async def pool(migrated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(migrated_database_url, min_size=1, max_size=4)
    await forget_intents(pool)
    yield pool
    await forget_intents(pool)
    await pool.close()


async def forget_intents(pool: asyncpg.Pool) -> None:
    """What restoring Postgres from a backup taken before the billing does."""
    await pool.execute("DELETE FROM billing_order_intents WHERE sf_order_id = $1", SF_ORDER)


@pytest.fixture
async def attempts(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs_control: Control, pool: asyncpg.Pool
) -> AsyncIterator[Attempts]:
    client = WhmcsClient(
        whmcs_emulator.api_url,
        whmcs_emulator.identifier,
        SecretStr(whmcs_emulator.secret),
        access_key=SecretStr(whmcs_emulator.access_key),
        timeout=httpx.Timeout(0.5),
        retry=FAST_RETRY,
    )
    async with client:
        yield Attempts(BillingActivities(client, FulfillmentStore(pool), "stripe", settle=SETTLE))


def add_orders_sent(control: Control) -> int:
    return len(control.requests(action="AddOrder"))


def live_orders(control: Control) -> list[dict[str, Any]]:
    return [o for o in control.state()["orders"].values() if o["status"] != "Cancelled"]


async def test_every_attempt_looks_in_whmcs_first_even_after_postgres_forgot_the_intent(
    attempts: Attempts, whmcs_control: Control, pool: asyncpg.Pool
) -> None:
    order = billing_order()
    first = await attempts.run(order)
    await forget_intents(pool)
    attempts.new_activity()
    again = await attempts.run(order)
    assert again.whmcs_order_id == first.whmcs_order_id
    assert add_orders_sent(whmcs_control) == 1
    assert len(live_orders(whmcs_control)) == 1


async def test_an_add_order_committing_late_is_waited_for_and_never_sent_twice(
    attempts: Attempts, whmcs_control: Control, pool: asyncpg.Pool
) -> None:
    order = billing_order()
    whmcs_control.http.post(
        f"{whmcs_control.url}/faults",
        json={"kind": "late_commit", "ms": 2000, "count": 1, "action": "AddOrder"},
    ).raise_for_status()
    with pytest.raises(ApplicationError) as first:
        await attempts.run(order)
    # Timed out, looked, missed: transient, asking to look again soon, inside the window.
    assert first.value.type == ErrorKind.OUTCOME_UNKNOWN.value
    assert not first.value.non_retryable
    assert first.value.next_retry_delay is not None
    assert first.value.next_retry_delay <= SETTLE
    # Postgres is restored to a moment between the intent and the send: its row says nothing
    # was sent; the heartbeat (Temporal's record of the attempt) still says it was.
    await pool.execute(
        "UPDATE billing_order_intents SET sent_at = NULL WHERE sf_order_id = $1", SF_ORDER
    )
    retries = 0
    async with asyncio.timeout(10):
        while True:
            try:
                result = await attempts.run(order)
                break
            except ApplicationError as waiting:
                assert waiting.type == ErrorKind.OUTCOME_UNKNOWN.value
                retries += 1
                await asyncio.sleep(0.3)
    assert retries >= 1, "a retry ran while the order was still being committed"
    assert add_orders_sent(whmcs_control) == 1
    assert [int(o["id"]) for o in live_orders(whmcs_control)] == [result.whmcs_order_id]


async def test_a_retry_with_no_trace_left_in_postgres_waits_by_its_attempt_number(
    attempts: Attempts, whmcs_control: Control
) -> None:
    # Attempt 2, yet Postgres holds no intent and no heartbeat came through: an earlier
    # attempt may have sent AddOrder before this one was scheduled.
    attempts.attempt = 1
    with pytest.raises(ApplicationError) as waiting:
        await attempts.run(billing_order())
    assert waiting.value.type == ErrorKind.OUTCOME_UNKNOWN.value
    assert add_orders_sent(whmcs_control) == 0
    # Scheduled longer ago than the window: whatever was sent would have landed by now.
    attempts.attempt = 1
    result = await attempts.run(
        billing_order(), scheduled=datetime.now(UTC) - SETTLE - timedelta(seconds=1)
    )
    assert add_orders_sent(whmcs_control) == 1
    assert [int(o["id"]) for o in live_orders(whmcs_control)] == [result.whmcs_order_id]


async def test_a_first_attempt_looks_by_domain_whatever_the_clients_history(
    attempts: Attempts, whmcs_control: Control
) -> None:
    # 300 past services of the very product ordered: the thorough look reads them all, but a
    # first attempt asks WHMCS for the services with the line's marker as domain, once.
    client = attempts.activities._whmcs
    history = billing_order("802000000000888AAA")
    for n in range(300):
        item = f"8020000001{n:05d}AAA"
        lines = tuple(line.model_copy(update={"sf_order_item_id": item}) for line in history.lines)
        await client.add_order(history.model_copy(update={"lines": lines}))
    order = billing_order()
    whmcs_control.http.delete(f"{whmcs_control.url}/requests").raise_for_status()
    result = await attempts.run(order)
    reads = whmcs_control.requests(action="GetClientsProducts")
    assert len(reads) == len(order.lines), [r["path"] for r in reads]
    # What it made is found the same way, by a retry that may not read the history.
    whmcs_control.http.delete(f"{whmcs_control.url}/requests").raise_for_status()
    found = await client.find_billing_order(order, thorough=False)
    assert found is not None and found.whmcs_order_id == result.whmcs_order_id
    assert len(whmcs_control.requests(action="GetClientsProducts")) == len(order.lines)


async def test_an_order_an_older_release_made_is_found_only_thoroughly(
    attempts: Attempts, whmcs_control: Control
) -> None:
    # Made before services carried their marker as domain: the custom field alone says whose.
    client = attempts.activities._whmcs
    order = billing_order()
    request = AddOrderRequest(
        client_id=order.whmcs_client_id,
        payment_method=order.payment_method,
        lines=[
            OrderLine(
                pid=line.whmcs_product_id,
                billingcycle=line.billing_cycle,
                customfields={
                    await client.marker_field_id(line.whmcs_product_id): line.sf_order_item_id
                },
            )
            for line in order.lines
        ],
    )
    made = await client._write("AddOrder", request.to_form())
    assert await client.find_billing_order(order, thorough=False) is None
    found = await client.find_billing_order(order)
    assert found is not None and found.whmcs_order_id == int(made["orderid"])
    # A retry (attempt 2) is thorough: it takes that order rather than adding a second.
    attempts.attempt = 1
    result = await attempts.run(order)
    assert result.whmcs_order_id == int(made["orderid"])
    assert add_orders_sent(whmcs_control) == 1


async def test_the_lookup_is_bounded_by_product_not_by_the_clients_history(
    attempts: Attempts, whmcs_control: Control
) -> None:
    # 500 past services of another product: the thorough miss costs one page of the ordered
    # product, after the look by domain (one call per line).
    history = billing_order("802000000000777AAA")
    other = history.model_copy(
        update={
            "lines": tuple(
                line.model_copy(update={"whmcs_product_id": 4}) for line in history.lines
            ),
            "sf_order_id": "801000000000777AAA",
        }
    )
    client = attempts.activities._whmcs
    for n in range(500):
        item = f"8020000002{n:05d}AAA"  # never the ordered item's id
        lines = tuple(line.model_copy(update={"sf_order_item_id": item}) for line in other.lines)
        await client.add_order(other.model_copy(update={"lines": lines}))
    whmcs_control.http.delete(f"{whmcs_control.url}/requests").raise_for_status()
    order = billing_order()
    assert await client.find_billing_order(order) is None
    reads = whmcs_control.requests(action="GetClientsProducts")
    assert len(reads) == len(order.lines) + 1


async def test_an_add_order_that_whmcs_refused_leaves_nothing_to_wait_for(
    attempts: Attempts, whmcs_control: Control
) -> None:
    refusal = {"result": "error", "message": "Unable to add order when client status is Closed"}
    whmcs_control.fail(1, 200, refusal, action="AddOrder")
    with pytest.raises(ApplicationError) as refused:
        await attempts.run(billing_order())
    assert refused.value.non_retryable
    # The operator reopens the client and retries at once: the order is added without a wait.
    attempts.new_activity()
    result = await attempts.run(billing_order())
    assert add_orders_sent(whmcs_control) == 2
    assert [int(o["id"]) for o in live_orders(whmcs_control)] == [result.whmcs_order_id]
