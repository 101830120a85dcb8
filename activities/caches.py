"""Invalidate the portal's Redis caches after a fulfillment changed what they show.

Keys Redis refuses are kept in the Postgres outbox (`cache_invalidation_outbox`) and retried by
the worker's drainer (`drain_outbox`), never dropped; the step itself then succeeds, so a Redis
outage does not hold an order.
"""

from __future__ import annotations

import asyncio
import contextlib

from temporalio import activity

from activities.errors import translated
from clients.cache import CacheGroup, CacheInvalidator, CacheUnavailableError
from clients.errors import ClientError
from clients.fulfillment_store import FulfillmentStore
from config.logging import get_logger
from domain.steps import Activity, CacheInvalidated, CacheInvalidation

log = get_logger(__name__)


class CacheActivities:
    def __init__(self, invalidator: CacheInvalidator, store: FulfillmentStore) -> None:
        self._cache = invalidator
        self._store = store

    @activity.defn(name=Activity.INVALIDATE_CACHES.value)
    @translated
    async def invalidate_caches(self, request: CacheInvalidation) -> CacheInvalidated:
        keys = self._cache.keys.for_order(request.sf_order_id, request.sf_account_id)
        if request.whmcs_client_id is not None:
            keys += self._cache.keys.for_whmcs_client(request.whmcs_client_id)
        try:
            await self._cache.delete(keys)
        except CacheUnavailableError as down:
            await self._store.defer_invalidation(keys, request.reason)
            log.warning(
                "cache.invalidation_deferred",
                sf_order_id=request.sf_order_id,
                keys=len(keys),
                error=str(down),
            )
            return CacheInvalidated(keys=len(keys), deferred=True)
        return CacheInvalidated(keys=len(keys))


async def drain_outbox(
    store: FulfillmentStore, cache: CacheInvalidator, *, batch: int = 100
) -> int:
    """Retry due outbox entries once; returns how many were invalidated."""
    done = 0
    for entry in await store.due_invalidations(batch):
        try:
            await cache.delete(entry.keys)
            for group in entry.groups:
                await cache.invalidate_group(CacheGroup(group))
        except CacheUnavailableError as down:
            await store.invalidation_failed(entry, str(down))
            continue
        await store.invalidation_done(entry.id)
        done += 1
    return done


async def run_outbox_drainer(
    store: FulfillmentStore,
    cache: CacheInvalidator,
    *,
    interval: float = 5.0,
    stop: asyncio.Event,
) -> None:
    """Drain the outbox every `interval` seconds until `stop` is set; errors never end it."""
    while not stop.is_set():
        try:
            drained = await drain_outbox(store, cache)
            if drained:
                log.info("cache.outbox_drained", entries=drained)
        except ClientError as error:
            log.warning("cache.outbox_drain_failed", error=str(error))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
