"""The portal's Redis cache: the key scheme of DESIGN.md and the helpers that invalidate it.

The portal reads these keys; the engine deletes them when the data behind them changes. Two kinds:

- exact keys (`orders:account:<id>`, `orders:detail:<id>`, `services:eligibility:<id>`,
  `whmcs:{subscriptions,invoices,client}:<clientId>`) are deleted by name: O(1) each;
- the global catalog (`services:catalog:*`) is a *group*: whoever writes a key into it also adds
  the key's name to the group's index set (`write_in_group`), so invalidation deletes exactly the
  indexed members, atomically, in O(affected keys).

`KEYS` is never used: it blocks Redis for the whole keyspace. `sweep_group` (SCAN, cursor-based,
O(keyspace) in total but never blocking) exists only for the operators' "flush caches" procedure,
for keys written by a writer that did not index them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as redis
from prometheus_client import Counter
from redis.exceptions import RedisError

from clients.errors import System, TransientError

INVALIDATED = Counter(
    "fulfillment_cache_invalidated_keys",
    "Portal cache keys deleted, by how: exact keys, a group, or a broad sweep (a flush)",
    ["kind"],
)


class CacheUnavailableError(TransientError):
    """Redis could not be reached or refused the command; the caller must retry, not drop it."""

    def __init__(self, message: str) -> None:
        super().__init__(System.REDIS, message)


class CacheGroup(StrEnum):
    SERVICES_CATALOG = "services:catalog"


_INDEX_SUFFIX = ":__index__"

# Deletes every member of an index set and the set itself in one atomic step, so a writer can
# never slip a key into the set between reading the members and deleting them.
_INVALIDATE_GROUP = """
local members = redis.call('SMEMBERS', KEYS[1])
local deleted = 0
for i = 1, #members, 500 do
    deleted = deleted + redis.call('UNLINK', unpack(members, i, math.min(i + 499, #members)))
end
redis.call('UNLINK', KEYS[1])
return deleted
"""


@dataclass(frozen=True)
class CacheKeys:
    """Builds every cache key the engine knows; the prefix is `CACHE_KEY_PREFIX` (`portal:`)."""

    prefix: str = "portal:"

    def orders_account(self, sf_account_id: str) -> str:
        return f"{self.prefix}orders:account:{sf_account_id}"

    def orders_detail(self, sf_order_id: str) -> str:
        return f"{self.prefix}orders:detail:{sf_order_id}"

    def services_catalog(self, name: str) -> str:
        return f"{self.prefix}{CacheGroup.SERVICES_CATALOG}:{name}"

    def services_eligibility(self, sf_account_id: str) -> str:
        return f"{self.prefix}services:eligibility:{sf_account_id}"

    def whmcs_subscriptions(self, client_id: int) -> str:
        return f"{self.prefix}whmcs:subscriptions:{client_id}"

    def whmcs_invoices(self, client_id: int) -> str:
        return f"{self.prefix}whmcs:invoices:{client_id}"

    def whmcs_client(self, client_id: int) -> str:
        return f"{self.prefix}whmcs:client:{client_id}"

    def group_index(self, group: CacheGroup) -> str:
        return f"{self.prefix}{group}{_INDEX_SUFFIX}"

    def group_pattern(self, group: CacheGroup) -> str:
        return f"{self.prefix}{group}:*"

    # What each kind of change makes stale.
    def for_order(self, sf_order_id: str, sf_account_id: str | None) -> list[str]:
        keys = [self.orders_detail(sf_order_id)]
        if sf_account_id:
            keys.append(self.orders_account(sf_account_id))
        return keys

    def orders_pattern(self) -> str:
        return f"{self.prefix}orders:*"

    def for_whmcs_client(self, client_id: int) -> list[str]:
        return [
            self.whmcs_subscriptions(client_id),
            self.whmcs_invoices(client_id),
            self.whmcs_client(client_id),
        ]


def create_redis(redis_url: str, *, timeout: float = 2.0) -> redis.Redis:
    """A client with short timeouts: a cache that hangs is worse than a cache miss."""
    client: redis.Redis = redis.Redis.from_url(
        redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=True,
    )
    return client


class CacheInvalidator:
    """Deletes cache entries; raises `CacheUnavailableError` so callers can retry or queue."""

    def __init__(self, client: redis.Redis, keys: CacheKeys) -> None:
        self._redis = client
        self.keys = keys
        self._invalidate_group = client.register_script(_INVALIDATE_GROUP)

    async def delete(self, keys: Iterable[str]) -> int:
        """Delete exact keys (UNLINK: the memory is freed off the main thread)."""
        names = sorted(set(keys))
        if not names:
            return 0
        try:
            deleted = int(await self._redis.unlink(*names))
        except RedisError as exc:
            raise CacheUnavailableError(f"redis unlink failed: {exc}") from exc
        INVALIDATED.labels("keys").inc(deleted)
        return deleted

    async def invalidate_group(self, group: CacheGroup) -> int:
        """Delete every key indexed in `group`; returns how many existed."""
        try:
            deleted = int(await self._invalidate_group(keys=[self.keys.group_index(group)]))
        except RedisError as exc:
            raise CacheUnavailableError(f"redis group invalidation failed: {exc}") from exc
        INVALIDATED.labels("group").inc(deleted)
        return deleted

    async def write_in_group(
        self, group: CacheGroup, key: str, value: str, *, ttl_seconds: int
    ) -> None:
        """Write a group member and index it in one transaction (for the API's catalog reads)."""
        if not key.startswith(f"{self.keys.prefix}{group}:"):
            raise ValueError(f"{key!r} is not a key of group {group}")
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, value, ex=ttl_seconds)
                pipe.sadd(self.keys.group_index(group), key)
                # The index must not outlive its members for long; it is rebuilt by writers.
                pipe.expire(self.keys.group_index(group), ttl_seconds)
                await pipe.execute()
        except RedisError as exc:
            raise CacheUnavailableError(f"redis write failed: {exc}") from exc

    async def sweep_group(self, group: CacheGroup, *, batch: int = 500) -> int:
        """Delete every key matching the group's pattern with SCAN (operators' flush only)."""
        deleted = await self.sweep(self.keys.group_pattern(group), batch=batch)
        return deleted + await self.invalidate_group(group)

    async def sweep(self, pattern: str, *, batch: int = 500) -> int:
        """Delete every key matching `pattern` with SCAN: never blocking, O(keyspace) in total,
        so only for rare broad invalidations (an overflow event, an operator's flush)."""
        deleted = 0
        pending: list[str] = []
        try:
            async for key in self._redis.scan_iter(match=pattern, count=batch):
                pending.append(key)
                if len(pending) >= batch:
                    deleted += await self._unlink(pending)
                    pending = []
            deleted += await self._unlink(pending)
        except RedisError as exc:
            raise CacheUnavailableError(f"redis sweep failed: {exc}") from exc
        INVALIDATED.labels("sweep").inc(deleted)
        return deleted

    async def _unlink(self, names: Sequence[str]) -> int:
        return int(await self._redis.unlink(*names)) if names else 0


async def ping(client: redis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except RedisError:
        return False
