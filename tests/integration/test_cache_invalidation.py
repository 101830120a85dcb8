"""Cache invalidation against a real Redis: exact keys, indexed groups, and never `KEYS`."""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis.asyncio as redis

from clients.cache import (
    CachedInGroup,
    CacheGroup,
    CacheInvalidator,
    CacheKeys,
    CacheUnavailableError,
    create_redis,
)
from clients.errors import TransientError


async def _keys_command_calls(client: redis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_keys", {}).get("calls", 0))


async def test_order_and_whmcs_keys_are_deleted_and_others_kept(
    redis_client: redis.Redis, cache_keys: CacheKeys
) -> None:
    invalidator = CacheInvalidator(redis_client, cache_keys)
    stale = [
        *cache_keys.for_order("801000000000001AAA", "001000000000001AAA"),
        *cache_keys.for_whmcs_client(42),
    ]
    kept = [cache_keys.orders_detail("801000000000002AAA"), cache_keys.whmcs_client(43)]
    for key in [*stale, *kept]:
        await redis_client.set(key, "cached")

    assert await invalidator.delete(stale) == len(stale)
    assert await redis_client.exists(*stale) == 0
    assert await redis_client.exists(*kept) == len(kept)


async def test_catalog_group_invalidation_deletes_indexed_members_without_keys(
    redis_client: redis.Redis, cache_keys: CacheKeys
) -> None:
    invalidator = CacheInvalidator(redis_client, cache_keys)
    names = [cache_keys.services_catalog(f"page:{n}") for n in range(1200)]
    for name in names:
        await invalidator.write_in_group(CacheGroup.SERVICES_CATALOG, name, "{}", ttl_seconds=60)
    unrelated = cache_keys.services_eligibility("001000000000001AAA")
    await redis_client.set(unrelated, "eligible")
    keys_calls_before = await _keys_command_calls(redis_client)

    assert await invalidator.invalidate_group(CacheGroup.SERVICES_CATALOG) == len(names)

    assert await redis_client.exists(*names[:500]) == 0
    assert await redis_client.exists(cache_keys.group_index(CacheGroup.SERVICES_CATALOG)) == 0
    assert await redis_client.get(unrelated) == "eligible"
    assert await _keys_command_calls(redis_client) == keys_calls_before


async def test_catalog_entries_carry_the_safety_ttl(
    redis_client: redis.Redis, cache_keys: CacheKeys
) -> None:
    invalidator = CacheInvalidator(redis_client, cache_keys)
    key = cache_keys.services_catalog("all")
    await invalidator.write_in_group(CacheGroup.SERVICES_CATALOG, key, "{}", ttl_seconds=43200)
    assert 43000 < await redis_client.ttl(key) <= 43200


async def test_sweep_finds_unindexed_catalog_keys_with_scan(
    redis_client: redis.Redis, cache_keys: CacheKeys
) -> None:
    invalidator = CacheInvalidator(redis_client, cache_keys)
    written_by_portal = [cache_keys.services_catalog(f"legacy:{n}") for n in range(30)]
    for key in written_by_portal:
        await redis_client.set(key, "{}")  # a writer that never indexed its keys
    keys_calls_before = await _keys_command_calls(redis_client)

    assert await invalidator.sweep_group(CacheGroup.SERVICES_CATALOG, batch=7) == 30

    assert await redis_client.exists(*written_by_portal) == 0
    assert await _keys_command_calls(redis_client) == keys_calls_before


async def test_redis_down_raises_cache_unavailable(cache_keys: CacheKeys) -> None:
    client = create_redis("redis://127.0.0.1:1/0", timeout=0.5)
    try:
        with pytest.raises(CacheUnavailableError) as info:
            await CacheInvalidator(client, cache_keys).delete([cache_keys.whmcs_client(1)])
        # Part of the one taxonomy: a cache outage is retried (or queued), never a business stop.
        assert isinstance(info.value, TransientError)
    finally:
        await client.aclose()


# -- a value the engine keeps in a group, read through ---------------------------------------------


class _Source:
    """Counts its reads; `gate` holds a read until the test lets it finish."""

    def __init__(self) -> None:
        self.reads = 0
        self.value = "v1"
        self.gate: asyncio.Event | None = None

    async def read(self) -> str:
        self.reads += 1
        value = self.value
        if self.gate is not None:
            await self.gate.wait()
        return value


def _products(client: redis.Redis, keys: CacheKeys) -> CachedInGroup:
    invalidator = CacheInvalidator(client, keys)
    return CachedInGroup(
        client,
        invalidator,
        CacheGroup.SERVICES_CATALOG,
        keys.whmcs_products(),
        ttl_seconds=60,
    )


async def test_concurrent_misses_share_one_fill_and_later_reads_need_none(
    redis_client: redis.Redis, cache_keys: CacheKeys
) -> None:
    cached, source = _products(redis_client, cache_keys), _Source()
    source.gate = asyncio.Event()
    readers = [asyncio.create_task(cached.get(source.read)) for _ in range(5)]
    await asyncio.sleep(0.05)
    source.gate.set()
    assert await asyncio.gather(*readers) == ["v1"] * 5
    assert await cached.get(source.read) == "v1"
    # Another process (a second worker) reads what this one filled.
    assert await _products(redis_client, cache_keys).get(source.read) == "v1"
    assert source.reads == 1
    assert 0 < await redis_client.ttl(cache_keys.whmcs_products()) <= 60


async def test_the_groups_invalidation_makes_the_next_read_fill_again(
    redis_client: redis.Redis, cache_keys: CacheKeys
) -> None:
    cached, source = _products(redis_client, cache_keys), _Source()
    await cached.get(source.read)
    source.value = "v2"
    await CacheInvalidator(redis_client, cache_keys).invalidate_group(CacheGroup.SERVICES_CATALOG)
    assert await cached.get(source.read) == "v2"
    assert source.reads == 2


async def test_a_fill_overtaken_by_an_invalidation_does_not_keep_what_it_read(
    redis_client: redis.Redis, cache_keys: CacheKeys
) -> None:
    cached, source = _products(redis_client, cache_keys), _Source()
    source.gate = asyncio.Event()
    reading = asyncio.create_task(cached.get(source.read))
    await asyncio.sleep(0.05)
    # The change lands while the source is being read: what was read may predate it.
    await CacheInvalidator(redis_client, cache_keys).invalidate_group(CacheGroup.SERVICES_CATALOG)
    source.gate.set()
    assert await reading == "v1"
    assert await redis_client.exists(cache_keys.whmcs_products()) == 0


async def test_a_refresh_reads_the_source_past_what_redis_holds(
    redis_client: redis.Redis, cache_keys: CacheKeys
) -> None:
    cached, source = _products(redis_client, cache_keys), _Source()
    await cached.get(source.read)
    source.value = "v2"
    assert await cached.get(source.read) == "v1"
    assert await cached.get(source.read, refresh=True) == "v2"
    assert await cached.get(source.read) == "v2"
    assert source.reads == 2


async def test_redis_down_reads_the_source_and_never_fails(cache_keys: CacheKeys) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    client = create_redis(dead, timeout=0.5)
    try:
        cached, source = _products(client, cache_keys), _Source()
        assert await cached.get(source.read) == "v1"
        assert await cached.get(source.read) == "v1"
    finally:
        await client.aclose()
    assert source.reads == 2
