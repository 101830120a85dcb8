"""The fulfillments as the portal and the operators read them: queries over the `fulfillments`
read model, and the Redis copies of the portal's two reads.

Shared by the HTTP routes and the CLI; nothing here knows HTTP.

`orders:detail:<order>` holds one fulfillment and `orders:account:<account>` the first page of
an account's fulfillments (up to `MAX_LIMIT` rows, so one key answers every page size; later
pages are rare and read Postgres). Both are event-driven with no TTL: the engine deletes them
when the data behind them changes. Two consequences shape the code:

- a fill must never leave a value older than a deletion that already happened, or it would be
  served forever. The fill writes (SET NX), then reads the rows' versions again (migrations/0005:
  every write raises the version) and deletes its own key if they moved. A write that lands
  before that check is seen by it; one that lands after it is followed by the engine's delete.
- Redis is only an optimisation: when it fails, reads go to Postgres and still answer, and no
  fill is attempted until the next request.

Absence is never cached: nobody would delete a "no fulfillment" entry when one appears. A value
under our key that does not parse (another writer's format) is a miss and is left alone.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import asyncpg
import redis.asyncio as redis
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from clients.cache import CacheKeys
from clients.errors import System, TransientError
from clients.salesforce_ids import is_valid_sf_id
from config.logging import get_logger
from domain.errors import ErrorCode
from domain.fulfillment import FulfillmentStatus, Step
from usecases.errors import InvalidRequestError, NotFoundError, or_unavailable

log = get_logger(__name__)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

CACHE_READS = Counter(
    "fulfillment_api_orders_cache_reads",
    "Reads of the portal's orders:* cache keys by key kind and result (hit, miss, error)",
    ["key", "result"],
)

_COLUMNS = (
    "sf_order_id, sf_account_id, workflow_id, status, step, error_code, error_message,"
    " whmcs_order_id, whmcs_invoice_id, whmcs_service_ids, attempts, created_at, updated_at,"
    " version"
)
_POSTGRES_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
_REDIS_DOWN = (RedisError, OSError, TimeoutError)


class Fulfillment(BaseModel):
    """One order's fulfillment, as the read model holds it."""

    model_config = ConfigDict(frozen=True)

    sf_order_id: str = Field(description="Salesforce Order id (18 characters)")
    sf_account_id: str | None = Field(description="null until the order has been read")
    workflow_id: str = Field(description="the Temporal workflow id")
    status: FulfillmentStatus
    step: Step | None = Field(description="the step running, or where it stopped")
    error_code: ErrorCode | None = Field(
        description="why it is parked (failed), or null; a failed fulfillment with no code "
        "ended without finishing (terminated), and its message says what to do"
    )
    error_message: str | None
    whmcs_order_id: int | None
    whmcs_invoice_id: int | None
    whmcs_service_ids: list[int]
    attempts: int = Field(description="1, plus one per operator retry")
    created_at: datetime
    updated_at: datetime


class FulfillmentPage(BaseModel):
    """A page of fulfillments, newest first."""

    items: list[Fulfillment]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class InvalidCursorError(InvalidRequestError):
    """The cursor was not made by this API (or was altered)."""


class _CachedPage(BaseModel):
    """What `orders:account:<id>` holds: the first rows, and whether more exist."""

    items: list[Fulfillment]
    more: bool


# -- Postgres -------------------------------------------------------------------------------


@asynccontextmanager
async def _postgres(operation: str) -> AsyncIterator[None]:
    try:
        yield
    except _POSTGRES_DOWN as exc:
        raise TransientError(
            System.POSTGRES, f"{operation}: Postgres unavailable", detail=type(exc).__name__
        ) from None


def _fulfillment(row: asyncpg.Record) -> Fulfillment:
    return Fulfillment(
        sf_order_id=row["sf_order_id"],
        sf_account_id=row["sf_account_id"],
        workflow_id=row["workflow_id"],
        status=row["status"],
        step=row["step"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        whmcs_order_id=row["whmcs_order_id"],
        whmcs_invoice_id=row["whmcs_invoice_id"],
        whmcs_service_ids=list(row["whmcs_service_ids"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


# Rows are created now; a cursor naming a moment far outside that was not made here.
_PLAUSIBLE = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def encode_cursor(item: Fulfillment) -> str:
    raw = f"{item.created_at.isoformat()}|{item.sf_order_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, _, sf_order_id = raw.partition("|")
        at = datetime.fromisoformat(at_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursorError("cursor: not a cursor this API made") from None
    if at.tzinfo is None or not is_valid_sf_id(sf_order_id) or not _PLAUSIBLE <= at <= _LATEST:
        # Out of that range Postgres would refuse the moment: bad input, not an outage.
        raise InvalidCursorError("cursor: not a cursor this API made")
    return at, sf_order_id


async def fetch_fulfillment(pool: asyncpg.Pool, sf_order_id: str) -> Fulfillment | None:
    """The order's row as Postgres has it now (what operators read: never a cached copy)."""
    row = await _fetch_row(pool, sf_order_id)
    return _fulfillment(row) if row is not None else None


async def _fetch_row(pool: asyncpg.Pool, sf_order_id: str) -> asyncpg.Record | None:
    async with _postgres("read fulfillment"):
        row: asyncpg.Record | None = await pool.fetchrow(
            f"SELECT {_COLUMNS} FROM fulfillments WHERE sf_order_id = $1",  # noqa: S608 (constant columns)
            sf_order_id,
        )
    return row


async def list_fulfillments(
    pool: asyncpg.Pool,
    *,
    account: str | None = None,
    status: FulfillmentStatus | None = None,
    error_code: ErrorCode | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> FulfillmentPage:
    """Newest first (by creation: a stable order, so pages neither skip nor repeat rows that
    change while an operator pages through them)."""
    conditions: list[str] = []
    args: list[Any] = []

    def bind(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if account is not None:
        conditions.append(f"sf_account_id = {bind(account)}")
    if status is not None:
        conditions.append(f"status = {bind(status.value)}")
    if error_code is not None:
        conditions.append(f"error_code = {bind(error_code.value)}")
    if cursor is not None:
        at, after = decode_cursor(cursor)
        conditions.append(f"(created_at, sf_order_id) < ({bind(at)}, {bind(after)})")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # Only placeholders and constant fragments are interpolated; every value is bound.
    query = (
        f"SELECT {_COLUMNS} FROM fulfillments{where}"  # noqa: S608
        f" ORDER BY created_at DESC, sf_order_id DESC LIMIT {bind(limit + 1)}"
    )
    async with _postgres("list fulfillments"):
        rows = await pool.fetch(query, *args)
    return _page([_fulfillment(r) for r in rows[:limit]], more=len(rows) > limit, limit=limit)


def _page(items: list[Fulfillment], *, more: bool, limit: int) -> FulfillmentPage:
    shown = items[:limit]
    if len(items) > limit or (more and len(shown) == limit):
        return FulfillmentPage(items=shown, next_cursor=encode_cursor(shown[-1]))
    return FulfillmentPage(items=shown, next_cursor=None)


async def account_order_ids(pool: asyncpg.Pool, sf_account_id: str) -> list[str]:
    async with _postgres("read account orders"):
        rows = await pool.fetch(
            "SELECT sf_order_id FROM fulfillments WHERE sf_account_id = $1", sf_account_id
        )
    return [row["sf_order_id"] for row in rows]


async def _account_first_rows(
    pool: asyncpg.Pool, sf_account_id: str
) -> tuple[list[asyncpg.Record], tuple[int, Decimal]]:
    """The first rows and the account's fingerprint (row count, sum of versions), read in
    one statement, so from one snapshot."""
    async with _postgres("list account fulfillments"):
        rows = await pool.fetch(
            f"SELECT {_COLUMNS}, count(*) OVER () AS total,"  # noqa: S608 (constant columns)
            " sum(version) OVER () AS versions"
            " FROM fulfillments WHERE sf_account_id = $1"
            " ORDER BY created_at DESC, sf_order_id DESC LIMIT $2",
            sf_account_id,
            MAX_LIMIT + 1,
        )
    fingerprint = (rows[0]["total"], Decimal(rows[0]["versions"])) if rows else (0, Decimal(0))
    return rows, fingerprint


async def _account_fingerprint(pool: asyncpg.Pool, sf_account_id: str) -> tuple[int, Decimal]:
    async with _postgres("read account fingerprint"):
        row = await pool.fetchrow(
            "SELECT count(*) AS total, coalesce(sum(version), 0) AS versions"
            " FROM fulfillments WHERE sf_account_id = $1",
            sf_account_id,
        )
    assert row is not None
    return row["total"], Decimal(row["versions"])


async def _version(pool: asyncpg.Pool, sf_order_id: str) -> int | None:
    async with _postgres("read fulfillment version"):
        value: int | None = await pool.fetchval(
            "SELECT version FROM fulfillments WHERE sf_order_id = $1", sf_order_id
        )
    return value


# -- for the routes and the CLI ---------------------------------------------------------------
# Each either answers or refuses with `usecases.errors`: no fulfillment is `NotFoundError`, a
# system away is `UnavailableError`, a cursor not ours `InvalidCursorError`.


async def fulfillment(pool: asyncpg.Pool, sf_order_id: str) -> Fulfillment:
    """The order's fulfillment as Postgres has it now (what operators read)."""
    return _found(await or_unavailable(fetch_fulfillment(pool, sf_order_id)), sf_order_id)


async def cached_fulfillment(cache: OrdersCache, sf_order_id: str) -> Fulfillment:
    """The order's fulfillment as the portal reads it: through Redis."""
    return _found(await or_unavailable(cache.fulfillment(sf_order_id)), sf_order_id)


def _found(found: Fulfillment | None, sf_order_id: str) -> Fulfillment:
    if found is None:
        raise NotFoundError(f"no fulfillment for order {sf_order_id}")
    return found


async def fulfillments(
    pool: asyncpg.Pool,
    *,
    account: str | None = None,
    status: FulfillmentStatus | None = None,
    error_code: ErrorCode | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> FulfillmentPage:
    """`list_fulfillments`, for operators: newest first, filtered."""
    return await or_unavailable(
        list_fulfillments(
            pool, account=account, status=status, error_code=error_code, limit=limit, cursor=cursor
        )
    )


async def account_orders(
    cache: OrdersCache, sf_account_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> FulfillmentPage:
    """An account's fulfillments as the portal reads them: the first page through Redis."""
    return await or_unavailable(cache.account_orders(sf_account_id, limit=limit, cursor=cursor))


# -- through Redis --------------------------------------------------------------------------


class OrdersCache:
    """The portal's two reads, served from Redis when it has them, from Postgres otherwise."""

    def __init__(self, pool: asyncpg.Pool, client: redis.Redis, keys: CacheKeys) -> None:
        self._pool = pool
        self._redis = client
        self._keys = keys

    async def fulfillment(self, sf_order_id: str) -> Fulfillment | None:
        key = self._keys.orders_detail(sf_order_id)
        cached, usable = await self._get(key, "detail")
        if cached is not None:
            try:
                return Fulfillment.model_validate_json(cached)
            except ValidationError:
                log.warning("orders_cache.unreadable", key="detail")
                usable = False
        row = await _fetch_row(self._pool, sf_order_id)
        if row is None:
            return None
        found = _fulfillment(row)
        if usable:
            version: int = row["version"]

            async def moved() -> bool:
                return await _version(self._pool, sf_order_id) != version

            await self._fill(key, found.model_dump_json(), moved)
        return found

    async def account_orders(
        self, sf_account_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
    ) -> FulfillmentPage:
        if cursor is not None:
            return await list_fulfillments(
                self._pool, account=sf_account_id, limit=limit, cursor=cursor
            )
        key = self._keys.orders_account(sf_account_id)
        cached, usable = await self._get(key, "account")
        if cached is not None:
            try:
                page = _CachedPage.model_validate_json(cached)
                return _page(page.items, more=page.more, limit=limit)
            except ValidationError:
                log.warning("orders_cache.unreadable", key="account")
                usable = False
        rows, fingerprint = await _account_first_rows(self._pool, sf_account_id)
        first = _CachedPage(
            items=[_fulfillment(r) for r in rows[:MAX_LIMIT]], more=len(rows) > MAX_LIMIT
        )
        if usable:

            async def moved() -> bool:
                return await _account_fingerprint(self._pool, sf_account_id) != fingerprint

            await self._fill(key, first.model_dump_json(), moved)
        return _page(first.items, more=first.more, limit=limit)

    async def _get(self, key: str, kind: str) -> tuple[str | None, bool]:
        """The cached value (None on a miss) and whether Redis answered at all."""
        try:
            # The engine's clients decode responses (clients.cache.create_redis).
            value = cast(str | None, await self._redis.get(key))
        except _REDIS_DOWN as exc:
            CACHE_READS.labels(kind, "error").inc()
            log.warning("orders_cache.unavailable", key=kind, error=type(exc).__name__)
            return None, False
        CACHE_READS.labels(kind, "miss" if value is None else "hit").inc()
        return value, True

    async def _fill(self, key: str, value: str, moved: Callable[[], Awaitable[bool]]) -> None:
        try:
            # NX: a value another reader stored meanwhile is as good as ours; keep it.
            if not await self._redis.set(key, value, nx=True):
                return
            if await moved():
                # A write landed between our read and our SET; its delete may already be past.
                await self._redis.unlink(key)
        except _REDIS_DOWN as exc:
            log.warning("orders_cache.fill_failed", error=type(exc).__name__)
        except TransientError:
            # Cannot tell whether the value is current: do not leave it behind.
            try:
                await self._redis.unlink(key)
            except _REDIS_DOWN:
                log.warning("orders_cache.fill_unchecked")
