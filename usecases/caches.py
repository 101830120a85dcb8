"""Flush the portal's caches, for the ops route and `fulfillment cache flush`. Knows no HTTP."""

from __future__ import annotations

from enum import StrEnum

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from clients.cache import CacheGroup, CacheInvalidator, CacheUnavailableError
from config.logging import get_logger
from usecases.errors import InvalidRequestError, UnavailableError, or_unavailable
from usecases.read_model import account_order_ids

log = get_logger(__name__)


class FlushScope(StrEnum):
    SERVICES = "services"
    ORDERS = "orders"
    ALL = "all"


class Flushed(BaseModel):
    model_config = ConfigDict(frozen=True)

    scope: FlushScope
    account: str | None = Field(description="the account whose order keys went, if one")
    deleted: int = Field(description="how many keys were deleted")


async def flush_caches(
    pool: asyncpg.Pool,
    cache: CacheInvalidator,
    scope: FlushScope,
    account: str | None = None,
    *,
    requested_by: str,
) -> Flushed:
    """The runbook's "flush caches": for when invalidation events were missed.

    - services: the catalog (its indexed group, then a SCAN for keys nobody indexed) and every
      account's eligibility;
    - orders: one account's keys (its list and each of its orders), or with no account every
      `orders:*` key;
    - all: every key family the engine knows (`orders:`, `services:`, `whmcs:`), and nothing
      else under the shared prefix (the portal keeps other keys there).

    SCAN, never KEYS: Redis keeps serving while it runs.
    """
    if account is not None and scope is not FlushScope.ORDERS:
        raise InvalidRequestError("account: only the orders scope takes an account")
    keys = cache.keys
    try:
        if scope is FlushScope.ORDERS and account is not None:
            orders = await or_unavailable(account_order_ids(pool, account))
            names = [keys.orders_account(account)] + [keys.orders_detail(o) for o in orders]
            deleted = await cache.delete(names)
        elif scope is FlushScope.ORDERS:
            deleted = await cache.sweep(keys.orders_pattern())
        elif scope is FlushScope.SERVICES:
            deleted = await _flush_services(cache)
        else:
            deleted = await cache.sweep(keys.orders_pattern())
            deleted += await _flush_services(cache)
            deleted += await cache.sweep(f"{keys.prefix}whmcs:*")
    except CacheUnavailableError as down:
        raise UnavailableError(f"Redis unavailable: {down}") from None
    log.info(
        "operator.cache_flush",
        scope=scope.value,
        account=account,
        deleted=deleted,
        requested_by=requested_by,
    )
    return Flushed(scope=scope, account=account, deleted=deleted)


async def _flush_services(cache: CacheInvalidator) -> int:
    deleted = await cache.invalidate_group(CacheGroup.SERVICES_CATALOG)
    # The catalog's unindexed keys and every account's eligibility share the family.
    return deleted + await cache.sweep(f"{cache.keys.prefix}services:*")
