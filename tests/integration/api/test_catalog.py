"""The public catalog over real HTTP: Salesforce through Redis, the listener's invalidation seen
from outside, HTTP caching, the per-address rate limit, and what an outage leaves standing."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from clients.cache import CacheGroup, CacheInvalidator, CacheKeys
from emulators.salesforce.demo import PRODUCTS
from tests.fixtures.api import SERVICE_TOKEN, Api
from tests.fixtures.engine import Engine
from tests.integration.listener.test_listener import listener_settings, listening, until

PATH = "/api/public/services/catalog"
QUERY_PATH = "/services/data/v60.0/query"


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings a test changes (parametrize `overrides` to change them)."""
    return {}


@pytest.fixture(autouse=True)
def own_settings(engine: Engine, overrides: dict[str, Any]) -> None:
    # Autouse, so it runs before `api` copies the settings. Redis lives as long as the session:
    # a prefix of the test's own keeps earlier tests' catalogs and rate-limit buckets out.
    engine.settings = engine.settings.model_copy(
        update={"cache_key_prefix": f"test-{secrets.token_hex(4)}:portal:"} | overrides
    )


def keys(engine: Engine) -> CacheKeys:
    return CacheKeys(engine.settings.cache_key_prefix)


def catalog_key(engine: Engine) -> str:
    return keys(engine).services_catalog("portal")


async def invalidate(engine: Engine, client: redis.Redis) -> None:
    """What the listener does on a Product2/PricebookEntry change event."""
    await CacheInvalidator(client, keys(engine)).invalidate_group(CacheGroup.SERVICES_CATALOG)


def salesforce_queries(engine: Engine) -> int:
    return int(engine.sf.control("GET", f"requests?path={QUERY_PATH}")["count"])


def prices(reply: httpx.Response) -> dict[str, str]:
    return {p["product_code"]: p["unit_price"] for p in reply.json()["products"]}


def change_price(engine: Engine, code: str, price: float) -> None:
    entry = engine.demo["pricebook_entries"][code]
    engine.sf.client().restful(
        f"sobjects/PricebookEntry/{entry}", method="PATCH", json={"UnitPrice": price}
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def subscribed(engine: Engine) -> bool:
    sessions = engine.sf.control("GET", "streaming/sessions")["sessions"]
    wanted = set(engine.settings.cdc_channel_list)
    return any(wanted <= set(session["subscriptions"]) for session in sessions)


async def test_the_catalog_lists_the_portal_price_books_active_products_with_prices(
    api: Api, engine: Engine
) -> None:
    sf = engine.sf.client()
    # Another price book's price, an inactive product: neither may show.
    legacy = engine.demo["products"]["LEGACY-PHONE"]
    sf.restful(f"sobjects/Product2/{legacy}", method="PATCH", json={"IsActive": False})
    product = engine.demo["products"]["SIM-DATA-3GB"]
    where = f"Pricebook2.IsStandard = true AND Product2Id = '{product}'"
    soql = f"SELECT Id FROM PricebookEntry WHERE {where}"  # noqa: S608
    standard = sf.query(soql)["records"][0]["Id"]
    sf.restful(f"sobjects/PricebookEntry/{standard}", method="PATCH", json={"UnitPrice": 1.0})

    reply = await api.http.get(PATH)

    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["cache-control"] == "public, max-age=60, s-maxage=60"
    assert reply.headers["etag"].startswith('"')
    body = reply.json()
    assert body["pricebook"] == "Portal"
    expected = {code: f"{price:g}" for code, *_, price in PRODUCTS if code != "LEGACY-PHONE"}
    assert prices(reply) == expected
    esim = next(p for p in body["products"] if p["product_code"] == "ESIM-DATA-20GB")
    assert esim == {
        "sf_product_id": engine.demo["products"]["ESIM-DATA-20GB"],
        "sf_pricebook_entry_id": engine.demo["pricebook_entries"]["ESIM-DATA-20GB"],
        "name": "eSIM Data 20GB",
        "product_code": "ESIM-DATA-20GB",
        "product_type": "SIM",
        "item_class": "Service",
        "billing_cycle": "Monthly",
        "unit_price": "2480",
    }


async def test_a_warm_cache_costs_salesforce_no_query(
    api: Api, engine: Engine, redis_client: redis.Redis
) -> None:
    engine.sf.control("DELETE", "requests")
    first = await api.http.get(PATH)
    assert salesforce_queries(engine) > 0
    engine.sf.control("DELETE", "requests")

    again = [await api.http.get(PATH) for _ in range(5)]

    assert salesforce_queries(engine) == 0
    assert {r.content for r in again} == {first.content}
    # Kept where the listener's invalidation looks, with the safety TTL.
    key = catalog_key(engine)
    assert await redis_client.sismember(keys(engine).group_index(CacheGroup.SERVICES_CATALOG), key)
    assert 0 < await redis_client.ttl(key) <= engine.settings.services_cache_safety_ttl_seconds


@pytest.mark.parametrize("overrides", [{"catalog_rate_limit_per_minute": 10_000}])
async def test_a_price_changed_in_salesforce_is_served_right_after_its_change_event(
    api: Api, engine: Engine, redis_client: redis.Redis
) -> None:
    async with listening(listener_settings(engine)):
        await until(lambda: subscribed(engine))
        assert prices(await api.http.get(PATH))["SIM-DATA-3GB"] == "990"
        assert await redis_client.exists(catalog_key(engine))

        change_price(engine, "SIM-DATA-3GB", 1290)
        changed = time.monotonic()
        # The change event's invalidation, seen from Redis: the moment the listener acted.
        await until(lambda: _gone(redis_client, catalog_key(engine)), within=10)
        invalidated = time.monotonic()
        reply = await api.http.get(PATH)
        served = time.monotonic()

    assert prices(reply)["SIM-DATA-3GB"] == "1290"
    assert served - invalidated < 1.0
    assert served - changed < 5.0


@pytest.mark.parametrize("overrides", [{"catalog_rate_limit_per_minute": 10_000}])
async def test_a_fill_overtaken_by_an_invalidation_does_not_keep_what_it_read(
    api: Api, engine: Engine, redis_client: redis.Redis
) -> None:
    # The fill reads slowly; the listener's invalidation lands while it reads. Whatever the
    # fill then writes may predate the change behind that invalidation, so it must not stay.
    engine.fault(engine.sf, {"kind": "latency", "ms": 800, "path": QUERY_PATH})
    index = keys(engine).group_index(CacheGroup.SERVICES_CATALOG)
    reading = asyncio.create_task(api.http.get(PATH))
    await until(lambda: _members(redis_client, index), within=5)
    await invalidate(engine, redis_client)

    assert (await reading).status_code == 200

    assert not await redis_client.exists(catalog_key(engine))
    engine.sf.control("DELETE", "faults")
    await api.http.get(PATH)
    assert await redis_client.exists(catalog_key(engine))  # the next fill, untroubled, stays


@pytest.mark.parametrize("overrides", [{"catalog_rate_limit_per_minute": 10_000}])
async def test_concurrent_misses_cost_one_salesforce_read(api: Api, engine: Engine) -> None:
    engine.fault(engine.sf, {"kind": "latency", "ms": 300, "path": QUERY_PATH})
    engine.sf.control("DELETE", "requests")

    replies = await asyncio.gather(*(api.http.get(PATH) for _ in range(25)))

    assert {r.status_code for r in replies} == {200}
    assert len({r.headers["etag"] for r in replies}) == 1
    # One read: the price book by name, then its entries.
    assert salesforce_queries(engine) == 2


async def test_authorization_and_cookies_change_nothing(api: Api) -> None:
    plain = await api.http.get(PATH)
    for headers in (
        {"Authorization": f"Bearer {SERVICE_TOKEN}"},
        {"Authorization": "Bearer not-a-token"},
        {"Cookie": "session=abc; portal_user=42"},
        {"Authorization": "Basic dXNlcjpwYXNz", "Cookie": "session=xyz"},
    ):
        reply = await api.http.get(PATH, headers=headers)
        assert reply.status_code == 200
        assert reply.content == plain.content
        assert _without_date(reply.headers) == _without_date(plain.headers)
    # Nothing may ask a shared cache to keep one copy per caller.
    varies = {v.strip().casefold() for v in plain.headers.get("vary", "").split(",")}
    assert not varies & {"cookie", "authorization", "*"}
    assert "set-cookie" not in plain.headers


@pytest.mark.parametrize("overrides", [{"catalog_rate_limit_per_minute": 3}])
async def test_past_the_limit_an_address_gets_429_with_retry_after_and_others_do_not(
    api: Api,
) -> None:
    # The fixture's uvicorn trusts X-Forwarded-For from 127.0.0.1, as production trusts its
    # proxies: the address it reports is the client's.
    client = {"X-Forwarded-For": "203.0.113.7"}
    assert [(await api.http.get(PATH, headers=client)).status_code for _ in range(3)] == [200] * 3

    refused = await api.http.get(PATH, headers=client)

    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # one request every 20 s
    assert refused.headers["cache-control"] == "no-store"
    # A conditional request counts too; another address is untouched.
    assert (await api.http.get(PATH, headers=client | {"If-None-Match": "*"})).status_code == 429
    other = await api.http.get(PATH, headers={"X-Forwarded-For": "198.51.100.9"})
    assert other.status_code == 200


async def test_a_matching_etag_gets_304_and_a_changed_catalog_a_new_etag(
    api: Api, engine: Engine, redis_client: redis.Redis
) -> None:
    first = await api.http.get(PATH)
    etag = first.headers["etag"]

    for match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        reply = await api.http.get(PATH, headers={"If-None-Match": match})
        assert reply.status_code == 304, match
        assert reply.content == b""
        assert reply.headers["etag"] == etag
        assert reply.headers["cache-control"] == first.headers["cache-control"]
    assert (await api.http.get(PATH, headers={"If-None-Match": '"other"'})).status_code == 200

    change_price(engine, "VPN-BASIC", 660)
    await invalidate(engine, redis_client)
    changed = await api.http.get(PATH, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert prices(changed)["VPN-BASIC"] == "660"


@pytest.mark.parametrize(
    "overrides",
    [{"redis_url": f"redis://127.0.0.1:{closed_port()}/0", "catalog_rate_limit_per_minute": 3}],
)
async def test_without_redis_the_catalog_comes_from_salesforce_and_the_limit_holds_in_memory(
    api: Api, engine: Engine
) -> None:
    engine.sf.control("DELETE", "requests")
    first = await api.http.get(PATH)
    assert first.status_code == 200
    assert prices(first)["FIBER-1G"] == "4980"
    assert salesforce_queries(engine) == 2
    # An outage must not turn every public request into a Salesforce query.
    assert (await api.http.get(PATH)).content == first.content
    assert salesforce_queries(engine) == 2

    await api.http.get(PATH)
    refused = await api.http.get(PATH)
    assert refused.status_code == 429
    assert "retry-after" in refused.headers


async def test_salesforce_down_serves_the_cached_catalog_and_503_when_nothing_is_cached(
    api: Api, engine: Engine, redis_client: redis.Redis
) -> None:
    cached = await api.http.get(PATH)
    engine.fault(engine.sf, {"kind": "fail", "count": 1000, "status": 503, "path": QUERY_PATH})

    assert (await api.http.get(PATH)).content == cached.content

    await invalidate(engine, redis_client)
    down = await api.http.get(PATH)
    assert down.status_code == 503
    assert down.json() == {
        "code": "unavailable",
        "message": "the catalog is unavailable; try again later",
    }
    assert down.headers["cache-control"] == "no-store"
    # A failed read leaves nothing behind that a later read could take for a catalog.
    assert not await redis_client.exists(catalog_key(engine))
    engine.sf.control("DELETE", "faults")
    assert (await api.http.get(PATH)).status_code == 200


@pytest.mark.parametrize("overrides", [{"catalog_pricebook_name": "No Such Book"}])
async def test_a_missing_price_book_is_503_not_an_empty_catalog(api: Api) -> None:
    reply = await api.http.get(PATH)
    assert reply.status_code == 503
    assert reply.json()["code"] == "unavailable"


async def test_the_schema_documents_the_catalog(api: Api) -> None:
    schema = (await api.http.get("/api/openapi.json")).json()
    operation = schema["paths"][PATH]["get"]
    assert "security" not in operation
    assert {"200", "304", "429", "503"} <= set(operation["responses"])


async def _gone(client: redis.Redis, key: str) -> bool:
    return await client.exists(key) == 0


async def _members(client: redis.Redis, key: str) -> bool:
    return bool(await client.scard(key))


def _without_date(headers: httpx.Headers) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name != "date"}
