"""The CDC listener against the Salesforce emulator, with the real worker, dev server, Postgres
and Redis: orders enter the engine only through it. Every test runs once per transport (the
Streaming API, the Pub/Sub API): what the listener does with events must not depend on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis
from prometheus_client import REGISTRY
from temporalio.service import RPCError

from cdc_listener.main import run_listener
from clients.cache import CacheGroup, CacheKeys
from config.settings import Settings
from domain.fulfillment import FulfillmentResult, FulfillmentStatus, workflow_id
from tests.fixtures.api import Api
from tests.fixtures.engine import Engine
from tests.support.database import fetch_value

pytestmark = pytest.mark.usefixtures("worker", "each_transport")


@asynccontextmanager
async def listening(settings: Settings, instance: str = "test-listener") -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_listener(settings, stop=stop, instance=instance))
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


def listener_settings(engine: Engine, **overrides: Any) -> Settings:
    return engine.settings.model_copy(
        update={"listener_metrics_port": 0, "cdc_lease_poll_seconds": 0.5} | overrides
    )


async def fulfilled(engine: Engine, order_id: str, within: float = 60) -> FulfillmentResult:
    handle = engine.client.get_workflow_handle(workflow_id(order_id), result_type=FulfillmentResult)
    async with asyncio.timeout(within):
        while True:
            try:
                result: FulfillmentResult = await handle.result()
                return result
            except RPCError:
                await asyncio.sleep(0.2)  # not started yet


async def runs(engine: Engine, order_id: str) -> int:
    query = (
        f'WorkflowId = "{workflow_id(order_id)}"'
        f' AND TaskQueue = "{engine.settings.temporal_task_queue}"'
    )
    return len([execution async for execution in engine.client.list_workflows(query)])


async def cursor(engine: Engine, channel: str) -> int | None:
    """The position of the channel's cursor on the engine's transport: on CometD the replay id
    itself, on the Pub/Sub API the count of events and keepalives received after EARLIEST."""
    value = await fetch_value(
        engine.settings.database_url,
        "SELECT position FROM cdc_replay_cursors WHERE transport = $1 AND channel = $2",
        engine.settings.cdc_transport,
        channel,
    )
    return int(value) if value is not None else None


async def until(check: Callable[[], Any], within: float = 30) -> None:
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.2)


async def test_an_order_activated_in_salesforce_is_fulfilled_once(engine: Engine) -> None:
    async with listening(listener_settings(engine)):
        order_id = engine.activate("internet")
        result = await fulfilled(engine, order_id)
        assert result.status is FulfillmentStatus.ACTIVATED
        assert engine.order(order_id)["Activation_Status__c"] == "Activated"
        # Our own write-backs (Activating, Activated) raised change events: none started more.
        await asyncio.sleep(1)
        assert await runs(engine, order_id) == 1
        assert len(engine.whmcs_orders()) == 1


async def test_two_orders_activated_in_one_call_both_start(engine: Engine) -> None:
    first, second = engine.demo["orders"]["internet"], engine.demo["orders"]["esim"]
    async with listening(listener_settings(engine)):
        engine.sf.client().restful(
            "composite/sobjects",
            method="PATCH",
            json={
                "allOrNone": True,
                "records": [
                    {"attributes": {"type": "Order"}, "id": first, "Status": "Activated"},
                    {"attributes": {"type": "Order"}, "id": second, "Status": "Activated"},
                ],
            },
        )
        results = await asyncio.gather(fulfilled(engine, first), fulfilled(engine, second))
    assert [r.status for r in results] == [FulfillmentStatus.ACTIVATED] * 2


async def test_orders_activated_while_the_listener_was_down_are_fulfilled_after_it_restarts(
    engine: Engine,
) -> None:
    settings = listener_settings(engine)
    async with listening(settings):
        await until(lambda: _subscribed(engine))
    order_id = engine.activate("internet")  # nobody listening
    async with listening(settings):
        result = await fulfilled(engine, order_id)
    assert result.status is FulfillmentStatus.ACTIVATED


async def test_a_first_start_takes_new_events_only_not_the_orgs_last_72_hours(
    engine: Engine,
) -> None:
    # Switched on against an org with history: what was activated before the listener's first
    # start is reconciliation's (bounded), not a replay of everything Salesforce retains.
    before = engine.activate("internet")
    settings = listener_settings(engine, cdc_initial_replay=-1)
    async with listening(settings):
        await until(lambda: _subscribed(engine))
        after = engine.activate("esim")
        result = await fulfilled(engine, after)
        await asyncio.sleep(1)
    assert result.status is FulfillmentStatus.ACTIVATED
    assert await runs(engine, before) == 0


async def test_a_replayed_activation_from_before_the_cutover_starts_nothing(
    engine: Engine,
) -> None:
    channel = "/data/OrderChangeEvent"
    old = engine.activate("internet")
    # The engine took over after that activation (FULFILLMENT_CUTOVER_AT); the listener replays
    # every retained event, as it does after a stale cursor.
    cutover = datetime.now(UTC) + timedelta(seconds=1)
    await asyncio.sleep(1.5)
    settings = listener_settings(engine, fulfillment_cutover_at=cutover)
    async with listening(settings):
        await until(lambda: _cursor_past(engine, channel, 1))
        new = engine.activate("esim")
        result = await fulfilled(engine, new)
    assert result.status is FulfillmentStatus.ACTIVATED
    assert await runs(engine, old) == 0
    assert len(engine.whmcs_orders()) == 1


async def test_events_replayed_from_an_older_cursor_start_nothing_new(engine: Engine) -> None:
    settings = listener_settings(engine)
    channel = "/data/OrderChangeEvent"
    async with listening(settings):
        order_id = engine.activate("internet")
        await fulfilled(engine, order_id)
        await until(lambda: _cursor_past(engine, channel, 1))
    connection = await asyncpg.connect(engine.settings.database_url)
    try:
        await connection.execute("DELETE FROM cdc_replay_cursors WHERE channel = $1", channel)
    finally:
        await connection.close()
    # Without a cursor the listener takes every retained event (-2): the activation again.
    async with listening(settings):
        await until(lambda: _cursor_past(engine, channel, 1))
        await asyncio.sleep(1)
    assert await runs(engine, order_id) == 1
    assert len(engine.whmcs_orders()) == 1


async def test_dropped_sessions_and_expired_tokens_are_survived(engine: Engine) -> None:
    async with listening(listener_settings(engine)):
        await until(lambda: _subscribed(engine))
        engine.sf.control("POST", "sessions/drop")
        engine.sf.control("POST", "tokens/expire")
        order_id = engine.activate("internet")
        result = await fulfilled(engine, order_id)
    assert result.status is FulfillmentStatus.ACTIVATED


async def test_catalog_and_eligibility_events_delete_their_keys_and_only_those(
    engine: Engine, redis_client: redis.Redis
) -> None:
    keys = CacheKeys(engine.settings.cache_key_prefix)
    catalog = keys.services_catalog("portal")
    account = engine.order(engine.demo["orders"]["internet"])["AccountId"]
    eligibility, other = keys.services_eligibility(account), keys.services_eligibility("001X")
    await redis_client.sadd(keys.group_index(CacheGroup.SERVICES_CATALOG), catalog)
    for key in (catalog, eligibility, other):
        await redis_client.set(key, "cached")
    async with listening(listener_settings(engine)):
        await until(lambda: _subscribed(engine))
        engine.sf.control(
            "POST",
            "events/platform",
            {"name": "Account_Eligibility_Update__e", "fields": {"Account_Id__c": account}},
        )
        await until(lambda: _gone(redis_client, eligibility))
        assert await redis_client.exists(catalog, other) == 2
        product = engine.sf.client().query("SELECT Id FROM Product2 LIMIT 1")["records"][0]["Id"]
        engine.sf.client().restful(
            f"sobjects/Product2/{product}", method="PATCH", json={"Name": "Renamed"}
        )
        await until(lambda: _gone(redis_client, catalog))
    assert await redis_client.exists(other) == 1


def _item_order_lookups() -> float:
    """Salesforce queries the process made for an order item's order, whatever their outcome."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "fulfillment_client_requests"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("operation") == "read_item_orders"
    )


async def test_an_order_item_seen_created_needs_no_lookup_when_it_changes(
    engine: Engine, redis_client: redis.Redis
) -> None:
    """Each fulfillment's write-back updates its items, and an item's update event names no
    order: the listener asks Salesforce only about items it has not seen created."""
    keys = CacheKeys(engine.settings.cache_key_prefix)
    sf = engine.sf.client()
    demo_order = engine.demo["orders"]["internet"]
    [unseen] = engine.order_items(demo_order)  # created before the listener ran
    async with listening(listener_settings(engine)):
        await until(lambda: _subscribed(engine))
        entry = sf.query(
            "SELECT Id, Pricebook2Id, UnitPrice FROM PricebookEntry"
            " WHERE Product2.ProductCode = 'FIBER-1G' AND Pricebook2.Name = 'Portal'"
        )["records"][0]
        account = engine.order(demo_order)["AccountId"]
        order = _created(
            sf.restful(
                "sobjects/Order/",
                method="POST",
                json={
                    "AccountId": account,
                    "Pricebook2Id": entry["Pricebook2Id"],
                    "Status": "Draft",
                    "EffectiveDate": "2026-11-27",
                },
            )
        )
        seen = _created(
            sf.restful(
                "sobjects/OrderItem/",
                method="POST",
                json={
                    "OrderId": order,
                    "PricebookEntryId": entry["Id"],
                    "Quantity": 1,
                    "UnitPrice": entry["UnitPrice"],
                },
            )
        )
        detail = keys.orders_detail(order)
        await redis_client.set(detail, "cached")
        await until(lambda: _gone(redis_client, detail))  # the create's events are handled
        before = _item_order_lookups()

        await redis_client.set(detail, "cached")
        sf.restful(f"sobjects/OrderItem/{seen}", method="PATCH", json={"Quantity": 2})
        await until(lambda: _gone(redis_client, detail))
        assert _item_order_lookups() == before

        other = keys.orders_detail(demo_order)
        await redis_client.set(other, "cached")
        sf.restful(f"sobjects/OrderItem/{unseen['Id']}", method="PATCH", json={"Quantity": 2})
        await until(lambda: _gone(redis_client, other))
        assert _item_order_lookups() == before + 1


async def test_a_malformed_event_is_dead_lettered_and_the_next_good_one_handled(
    engine: Engine,
) -> None:
    async with listening(listener_settings(engine)):
        await until(lambda: _subscribed(engine))
        # A record id that is no Salesforce id: the listener cannot take it.
        engine.sf.control(
            "POST",
            "events/change",
            {"entity": "Order", "changeType": "UPDATE", "recordIds": ["not-an-id"]},
        )
        order_id = engine.activate("internet")
        result = await fulfilled(engine, order_id)
    assert result.status is FulfillmentStatus.ACTIVATED
    connection = await asyncpg.connect(engine.settings.database_url)
    try:
        letters = await connection.fetch("SELECT channel, replay_id, reason FROM cdc_dead_letters")
    finally:
        await connection.close()
    assert len(letters) == 1 and letters[0]["channel"] == "/data/OrderChangeEvent"


async def test_two_replicas_never_both_listen_and_one_takes_over(engine: Engine) -> None:
    settings = listener_settings(engine)
    async with listening(settings, "replica-a"):
        async with listening(settings, "replica-b"):
            await until(lambda: _active_count(engine, 1))
            order_id = engine.activate("internet")
            await fulfilled(engine, order_id)
        # The stopped one (or the other) holds on: still exactly one active.
        await until(lambda: _active_count(engine, 1))
        second = engine.activate("esim")
        assert (await fulfilled(engine, second)).status is FulfillmentStatus.ACTIVATED
    assert await runs(engine, order_id) == 1


async def _subscribed(engine: Engine) -> bool:
    """Salesforce serves every channel the listener subscribes to, on its transport."""
    wanted = set(engine.settings.cdc_channel_list)
    if engine.settings.cdc_transport == "pubsub":
        streams = engine.sf.control("GET", "pubsub/subscriptions")["subscriptions"]
        return wanted <= {stream["topic"] for stream in streams}
    sessions = engine.sf.control("GET", "streaming/sessions")["sessions"]
    return any(wanted <= set(session["subscriptions"]) for session in sessions)


async def _cursor_past(engine: Engine, channel: str, minimum: int) -> bool:
    value = await cursor(engine, channel)
    return value is not None and value >= minimum


def _created(reply: Any) -> str:
    assert isinstance(reply, dict)
    return str(reply["id"])


async def _gone(client: redis.Redis, key: str) -> bool:
    return await client.exists(key) == 0


async def _active_count(engine: Engine, expected: int) -> bool:
    active = await fetch_value(
        engine.settings.database_url,
        "SELECT count(*) FROM cdc_listener_status"
        " WHERE active AND updated_at > now() - interval '30 seconds'",
    )
    return int(active) == expected


async def test_a_quiet_listener_keeps_reporting_itself_alive(engine: Engine, api: Api) -> None:
    # Minutes without an event: nothing else writes the status row, and the API counts a row
    # older than 120 s as a replica gone. Here the row is aged by hand instead of waiting.
    async with listening(listener_settings(engine, cdc_status_heartbeat_seconds=0.5)):
        await until(lambda: _subscribed(engine))
        await until(lambda: _cdc_health(api, 200))
        connection = await asyncpg.connect(engine.settings.database_url)
        try:
            await connection.execute(
                "UPDATE cdc_listener_status SET updated_at = now() - interval '130 seconds'"
            )
        finally:
            await connection.close()
        assert await _cdc_health(api, 503), "a row as old as two minutes of quiet"
        await until(lambda: _cdc_health(api, 200), within=5)


async def _cdc_health(api: Api, status: int) -> bool:
    return (await api.http.get("/api/health/cdc")).status_code == status
