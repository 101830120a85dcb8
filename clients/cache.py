"""The portal's Redis cache: the key scheme of docs/design.md and the helpers that invalidate it.

The portal reads these keys; the engine deletes them when the data behind them changes. Two kinds:

- exact keys (`orders:account:<id>`, `orders:detail:<id>`, `services:eligibility:<id>`,
  `whmcs:{subscriptions,invoices,client}:<clientId>`) are deleted by name: O(1) each;
- the global catalog (`services:catalog:*`) is a *group*: whoever writes a key into it also adds
  the key's name to the group's index set (`write_in_group`), so invalidation deletes exactly the
  indexed members, atomically, in O(affected keys).

`CachedInGroup` is the read-through side for a value the engine itself keeps in a group (the WHMCS
product catalogue, `services:catalog:whmcs-products`): Redis first, else one fill per process from
the source, written so that an invalidation during the fill is never undone by it.

`KEYS` is never used: it blocks Redis for the whole keyspace. `sweep_group` (SCAN, cursor-based,
O(keyspace) in total but never blocking) exists only for the operators' "flush caches" procedure,
for keys written by a writer that did not index them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as redis
from prometheus_client import Counter
from redis.exceptions import RedisError

from clients.errors import System, TransientError
from config.logging import get_logger

log = get_logger(__name__)

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
        return self.in_group(CacheGroup.SERVICES_CATALOG, name)

    def whmcs_products(self) -> str:
        """The WHMCS product catalogue the engine reads for every order (the custom field ids
        AddOrder needs): a catalog member, so Product2/PricebookEntry events drop it too."""
        return self.services_catalog("whmcs-products")

    def in_group(self, group: CacheGroup, name: str) -> str:
        return f"{self.prefix}{group}:{name}"

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


# While Redis fails: how long a reader skips it (instead of a connect timeout per read).
REDIS_COOLDOWN_SECONDS = 5.0

Fill = Callable[[], Awaitable[str]]


class CachedInGroup:
    """One value of a cache group, read through; one per process.

    `get` answers from Redis, else runs `fill` (the source) once for every concurrent miss in
    the process and writes the answer into the group with the group's safety TTL, so the
    group's invalidation (the listener's, on a change event) deletes it. A fill that an
    invalidation overtook does not keep its value: before reading the source it puts a marker
    key of its own into the group and writes the value only if the marker is still there
    afterwards (otherwise deleting what it wrote), so a value read before a change never
    survives that change's invalidation.

    Redis is never needed: when it fails, the value comes from the source (and Redis is left
    alone for a few seconds). Errors of the source reach the caller.
    """

    def __init__(
        self,
        client: redis.Redis,
        cache: CacheInvalidator,
        group: CacheGroup,
        key: str,
        *,
        ttl_seconds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not key.startswith(cache.keys.in_group(group, "")):
            raise ValueError(f"{key!r} is not a key of group {group}")
        self._redis = client
        self._cache = cache
        self._group = group
        self.key = key
        self._ttl = ttl_seconds
        self._clock = clock
        self._redis_down_until = 0.0
        # The fill in flight, and when it began (a refresh joins only a fill begun after it).
        self._fill: tuple[asyncio.Task[str], float] | None = None

    async def get(self, fill: Fill, *, refresh: bool = False) -> str:
        """The value; `refresh` skips what Redis holds (the caller found it lacking)."""
        asked = self._clock()
        if not refresh:
            cached = await self._cached()
            if cached is not None:
                return cached
        current = self._fill
        if current is not None and (not refresh or current[1] >= asked):
            task = current[0]
        else:
            task = asyncio.create_task(self._filled_from(fill), name=f"fill {self.key}")
            self._fill = (task, asked)
            task.add_done_callback(self._done)
        # Shielded: a caller that goes away (a cancelled activity) leaves the fill to others.
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[str]) -> None:
        if self._fill is not None and self._fill[0] is task:
            self._fill = None
        if not task.cancelled():
            task.exception()  # retrieved here: a fill nobody waits for any more is no warning

    @property
    def _redis_usable(self) -> bool:
        return self._clock() >= self._redis_down_until

    def _redis_failed(self, error: Exception, during: str) -> None:
        self._redis_down_until = self._clock() + REDIS_COOLDOWN_SECONDS
        log.warning("cache.redis_unavailable", key=self.key, during=during, error=str(error))

    async def _cached(self) -> str | None:
        if not self._redis_usable:
            return None
        try:
            value = await self._redis.get(self.key)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc, "read")
            return None
        return value if isinstance(value, str) else None

    async def _filled_from(self, fill: Fill) -> str:
        marker: str | None = None
        if self._redis_usable:
            marker = f"{self.key}:__filling__:{secrets.token_hex(8)}"
            try:
                await self._cache.write_in_group(self._group, marker, "1", ttl_seconds=self._ttl)
            except CacheUnavailableError as exc:
                self._redis_failed(exc, "fill marker")
                marker = None
        try:
            value = await fill()
            if marker is not None:
                await self._store(value, marker)
            return value
        finally:
            if marker is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self._redis.unlink(marker)
                    await self._redis.srem(self._cache.keys.group_index(self._group), marker)

    async def _store(self, value: str, marker: str) -> None:
        try:
            await self._cache.write_in_group(self._group, self.key, value, ttl_seconds=self._ttl)
            if not await self._redis.exists(marker):
                # The group was invalidated while the source was read: what was read may
                # predate the change.
                await self._cache.delete([self.key])
                log.info("cache.fill_overtaken_by_invalidation", key=self.key)
        except (CacheUnavailableError, RedisError, OSError) as exc:
            self._redis_failed(exc, "write")
