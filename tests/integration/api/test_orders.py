"""The portal's reads over real HTTP: one order's fulfillment and an account's orders, from the
read model through Redis, with Redis gone, and refused before any use when the id is wrong.

Rows are written as the engine writes them (`FulfillmentStore.record`, newer versions win) and
the engine's invalidation is a delete of the key, as `activities.caches` does it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
import redis.asyncio as redis

from clients.cache import CacheKeys
from domain.errors import ErrorCode
from domain.fulfillment import FulfillmentStatus, Step
from tests.fixtures.api import Api
from tests.fixtures.engine import Engine
from tests.integration.api._support import Record, degraded_services, served, sf_id
from usecases.read_model import OrdersCache

NO_STORE = "private, no-store"


def keys(engine: Engine) -> CacheKeys:
    return CacheKeys(engine.settings.cache_key_prefix)


async def test_a_fulfillment_is_served_from_redis_until_the_engine_deletes_its_key(
    api: Api, engine: Engine, record: Record, redis_client: redis.Redis
) -> None:
    order, account = sf_id("801"), sf_id("001")
    await record(
        order,
        account,
        status=FulfillmentStatus.FAILED,
        step=Step.VALIDATE_PAYMENT_METHOD,
        error_code=ErrorCode.PAYMENT_METHOD_MISSING,
        error_message="whmcs: no payment method",
    )
    key = keys(engine).orders_detail(order)
    assert not await redis_client.exists(key)

    first = await api.http.get(f"/api/orders/{order}/fulfillment", headers=api.service())

    assert first.status_code == 200
    assert first.headers["cache-control"] == NO_STORE
    body = first.json()
    assert (body["sf_order_id"], body["sf_account_id"], body["status"]) == (
        order,
        account,
        "failed",
    )
    assert (body["step"], body["error_code"], body["attempts"]) == (
        "validate_payment_method",
        "PAYMENT_METHOD_MISSING",
        1,
    )
    assert await redis_client.exists(key)
    assert await redis_client.ttl(key) == -1  # event-driven: no TTL

    # The row moves on; the cached view stays until the engine invalidates it.
    await record(order, account, status=FulfillmentStatus.ACTIVATED, whmcs_order_id=7, attempts=2)
    second = await api.http.get(f"/api/orders/{order}/fulfillment", headers=api.service())
    assert second.json() == body

    await redis_client.delete(key)
    third = (await api.http.get(f"/api/orders/{order}/fulfillment", headers=api.service())).json()
    assert (third["status"], third["whmcs_order_id"], third["attempts"]) == ("activated", 7, 2)
    assert (third["error_code"], third["step"]) == (None, None)


async def test_a_15_character_id_reads_the_same_fulfillment(api: Api, record: Record) -> None:
    order, account = sf_id("801"), sf_id("001")
    await record(order, account)
    reply = await api.http.get(f"/api/orders/{order[:15]}/fulfillment", headers=api.service())
    assert reply.status_code == 200
    assert reply.json()["sf_order_id"] == order


async def test_an_order_without_fulfillment_is_404_and_nothing_is_cached(
    api: Api, engine: Engine, redis_client: redis.Redis
) -> None:
    order = sf_id("801")
    reply = await api.http.get(f"/api/orders/{order}/fulfillment", headers=api.service())
    assert reply.status_code == 404
    assert reply.json() == {"code": "not_found", "message": f"no fulfillment for order {order}"}
    assert reply.headers["cache-control"] == NO_STORE
    assert not await redis_client.exists(keys(engine).orders_detail(order))


async def test_an_accounts_orders_page_newest_first_and_the_first_page_is_cached(
    api: Api, engine: Engine, record: Record, redis_client: redis.Redis
) -> None:
    account, other = sf_id("001"), sf_id("001")
    orders = [sf_id("801") for _ in range(5)]
    for order in orders:
        await record(order, account)
    await record(sf_id("801"), other)
    newest_first = list(reversed(orders))
    url = f"/api/accounts/{account}/orders"

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        reply = await api.http.get(url, params=params, headers=api.service())
        assert reply.status_code == 200
        assert reply.headers["cache-control"] == NO_STORE
        page = reply.json()
        assert len(page["items"]) <= 2
        seen += [item["sf_order_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first

    key = keys(engine).orders_account(account)
    assert await redis_client.exists(key)
    assert await redis_client.ttl(key) == -1
    # One cached first page answers every page size.
    whole = (await api.http.get(url, params={"limit": 5}, headers=api.service())).json()
    assert [i["sf_order_id"] for i in whole["items"]] == newest_first
    assert whole["next_cursor"] is None

    # A new order is not seen until the engine invalidates the account's key.
    newer = sf_id("801")
    await record(newer, account)
    cached = (await api.http.get(url, headers=api.service())).json()
    assert [i["sf_order_id"] for i in cached["items"]] == newest_first
    await redis_client.delete(key)
    fresh = (await api.http.get(url, headers=api.service())).json()
    assert [i["sf_order_id"] for i in fresh["items"]] == [newer, *newest_first]


async def test_an_account_without_orders_answers_an_empty_page(api: Api) -> None:
    reply = await api.http.get(f"/api/accounts/{sf_id('001')}/orders", headers=api.service())
    assert reply.status_code == 200
    assert reply.json() == {"items": [], "next_cursor": None}


async def test_a_cursor_not_made_by_the_api_is_refused(api: Api) -> None:
    for cursor in ("not-a-cursor", "MjAyNS0wMS0wMXxub3BlIQ", "x" * 201):
        reply = await api.http.get(
            f"/api/accounts/{sf_id('001')}/orders",
            params={"cursor": cursor},
            headers=api.service(),
        )
        assert reply.status_code == 422, cursor
        assert reply.json()["code"] == "invalid_request"


async def test_reads_answer_from_postgres_while_redis_is_unreachable(
    api: Api, engine: Engine, record: Record
) -> None:
    order, account = sf_id("801"), sf_id("001")
    await record(order, account, status=FulfillmentStatus.FAILED, step=Step.PROVISION_SIMS)
    async with (
        degraded_services(engine.settings, engine.client, postgres=True) as services,
        served(services) as http,
    ):
        detail = await http.get(f"/api/orders/{order}/fulfillment", headers=api.service())
        orders = await http.get(f"/api/accounts/{account}/orders", headers=api.service())
        ready = await http.get("/api/health/ready")
    assert detail.status_code == 200 and detail.json()["status"] == "failed"
    assert orders.status_code == 200 and [i["sf_order_id"] for i in orders.json()["items"]] == [
        order
    ]
    assert ready.json()["checks"]["redis"] is False  # Redis really was gone


async def test_invalid_ids_are_refused_before_postgres_or_redis_is_touched(
    api: Api, engine: Engine
) -> None:
    valid_order, valid_account = sf_id("801"), sf_id("001")
    bad_orders = [
        "801",  # too short
        valid_order + "X",  # too long
        valid_order[:15] + "ZZZ",  # checksum does not match
        valid_account,  # an Account id where an Order id belongs
        "801000000000001%27%20OR%201=1",  # SOQL injection, URL-encoded
        "8010000000000-1",  # not alphanumeric
    ]
    bad_accounts = [valid_order, "001" + "é" * 12, valid_account[:15] + "aaa"]
    # Neither Postgres (closed pool) nor Redis (nobody listens) can answer these services.
    async with (
        degraded_services(engine.settings, engine.client, postgres=False) as services,
        served(services) as http,
    ):
        for bad in bad_orders:
            reply = await http.get(f"/api/orders/{bad}/fulfillment", headers=api.service())
            assert reply.status_code == 422, bad
            assert reply.json()["code"] == "invalid_request"
            assert bad not in reply.json()["message"]
        for bad in bad_accounts:
            reply = await http.get(f"/api/accounts/{bad}/orders", headers=api.service())
            assert reply.status_code == 422, bad
        # A valid id does go on, and meets the closed pool: the 422s came before any use.
        reached = await http.get(f"/api/orders/{valid_order}/fulfillment", headers=api.service())
    assert reached.status_code == 503
    assert reached.json()["code"] == "unavailable"


async def test_portal_reads_need_the_service_token(api: Api) -> None:
    for url in (
        f"/api/orders/{sf_id('801')}/fulfillment",
        f"/api/accounts/{sf_id('001')}/orders",
    ):
        missing = await api.http.get(url)
        wrong = await api.http.get(url, headers={"Authorization": "Bearer nope"})
        ops = await api.http.get(url, headers=api.ops())
        assert (missing.status_code, wrong.status_code, ops.status_code) == (401, 401, 403), url
        assert missing.json()["code"] == "unauthorized"
        assert ops.json()["code"] == "forbidden"
        assert missing.headers["www-authenticate"] == "Bearer"


async def test_auth_is_checked_before_the_id(api: Api) -> None:
    reply = await api.http.get("/api/orders/not-an-id/fulfillment")
    assert reply.status_code == 401


class _WriteLandsBeforeSet(redis.Redis):
    """A Redis client that lets the engine write (and invalidate) just before each SET: the
    narrowest race a cache fill can lose."""

    before_set: Callable[[], Awaitable[None]]

    async def set(self, *args: Any, **kwargs: Any) -> Any:
        await self.before_set()
        return await super().set(*args, **kwargs)


async def test_a_fill_that_races_a_write_leaves_no_stale_value_behind(
    engine: Engine, pool: asyncpg.Pool, record: Record, redis_url: str
) -> None:
    order, account = sf_id("801"), sf_id("001")
    await record(order, account, status=FulfillmentStatus.ACTIVATING)
    racing = cast(
        _WriteLandsBeforeSet, _WriteLandsBeforeSet.from_url(redis_url, decode_responses=True)
    )
    cache_keys = keys(engine)

    async def engine_moves_on() -> None:
        await record(order, account, status=FulfillmentStatus.ACTIVATED)
        await racing.unlink(*cache_keys.for_order(order, account))

    racing.before_set = engine_moves_on
    try:
        cache = OrdersCache(pool, racing, cache_keys)
        read = await cache.fulfillment(order)
        assert read is not None and read.status is FulfillmentStatus.ACTIVATING
        # What it read was already old when it stored it: it must not stay.
        assert not await racing.exists(cache_keys.orders_detail(order))

        page = await cache.account_orders(account)
        assert [i.status for i in page.items] == [FulfillmentStatus.ACTIVATED]
        assert not await racing.exists(cache_keys.orders_account(account))

        # Without a racing write the next read fills the key, and it stays.
        async def nothing() -> None:
            return None

        racing.before_set = nothing
        fresh = await cache.fulfillment(order)
        assert fresh is not None and fresh.status is FulfillmentStatus.ACTIVATED
        assert await racing.exists(cache_keys.orders_detail(order))
    finally:
        await racing.aclose()
