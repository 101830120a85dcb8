"""The public catalog: read from Salesforce, kept in Redis until a change event invalidates it.

What it shows: the active products of the portal's price book (`CATALOG_PRICEBOOK_NAME`) with
their prices, the same for everyone. The rendered JSON and its ETag are kept under
`services:catalog:<price book>` in the catalog group (`CacheInvalidator.write_in_group`), so the
CDC listener's Product2/PricebookEntry invalidation deletes it; the 12 h safety TTL heals a
missed event.

A fill must not write back a catalog read *before* a change whose invalidation ran while the
read was in flight (it would stay stale until the safety TTL). So a fill first puts a marker
key of its own into the group, reads Salesforce, writes the catalog, and then checks the
marker: if an invalidation deleted it meanwhile, the fill deletes what it wrote. Whatever the
order of the invalidation and the write, a catalog read before the change does not survive it.

One Salesforce read per miss per process: concurrent misses wait for the same fill. When Redis
is unavailable the catalog comes from Salesforce, and the process keeps what it read for a few
seconds so that an outage does not turn every public request into a Salesforce query. When
Salesforce is unavailable too and nothing is cached, the caller gets `CatalogUnavailableError`.

This module imports no web framework: the route (`api/routes/catalog.py`) speaks HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import redis.asyncio as redis
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from clients.cache import CacheGroup, CacheInvalidator, CacheUnavailableError
from clients.errors import ClientError
from clients.salesforce import SalesforceClient
from config.logging import get_logger
from domain.catalog import CatalogEntry

log = get_logger(__name__)

# A public page should fail fast rather than hold its connection while Salesforce retries; the
# fill goes on and fills the cache for the next request.
READ_TIMEOUT_SECONDS = 10.0
# While Redis is unavailable: how long a catalog read from Salesforce is reused in-process, and
# how long the process skips Redis after a failure (instead of a connect timeout per request).
FALLBACK_SECONDS = 5.0
REDIS_COOLDOWN_SECONDS = 5.0
# The cached value's layout; a value of another layout (an older release, another writer) is
# a miss, never served.
_FORMAT = "v1"

SERVED = Counter(
    "fulfillment_api_catalog_reads",
    "Public catalog reads by where the catalog came from",
    ["source"],  # redis; fallback (in-process, Redis down); miss (waited for a fill)
)


class CatalogProduct(BaseModel):
    model_config = ConfigDict(frozen=True)

    sf_product_id: str
    sf_pricebook_entry_id: str
    name: str
    product_code: str | None
    product_type: str | None = Field(description="SIM, Internet, VPN or Other")
    item_class: str | None = Field(description="Service, Activation, Installation or Add-on")
    billing_cycle: str | None = Field(description="Monthly, Onetime, …")
    unit_price: str = Field(
        pattern=r"^-?\d+(\.\d+)?$",
        description="the price book's unit price as a decimal string (exact, unlike a float)",
        examples=["990", "1980.5"],
    )


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True)

    pricebook: str
    products: list[CatalogProduct]


@dataclass(frozen=True)
class CatalogDocument:
    """The catalog as served: JSON bytes and their strong ETag."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> CatalogDocument:
        return cls(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    def encode(self) -> str:
        return f"{_FORMAT} {self.etag}\n{self.body.decode()}"

    @classmethod
    def decode(cls, value: str) -> CatalogDocument | None:
        head, newline, body = value.partition("\n")
        version, _, etag = head.partition(" ")
        if not newline or version != _FORMAT or not etag:
            return None
        return cls(body.encode(), etag)


class CatalogUnavailableError(Exception):
    """Neither the cache nor Salesforce could give the catalog; `str()` is for the log."""


def price_text(value: Decimal) -> str:
    """`990.0` -> `990`, `12.50` -> `12.5`: the value exactly, never in exponent notation."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def render(pricebook: str, entries: Sequence[CatalogEntry]) -> CatalogDocument:
    catalog = Catalog(
        pricebook=pricebook,
        products=[
            CatalogProduct(
                sf_product_id=entry.product.sf_product_id,
                sf_pricebook_entry_id=entry.sf_pricebook_entry_id,
                name=entry.product.name,
                product_code=entry.product.product_code,
                product_type=entry.product.product_type,
                item_class=entry.product.item_class,
                billing_cycle=entry.product.billing_cycle,
                unit_price=price_text(entry.unit_price),
            )
            for entry in entries
            # The query asks for active ones only; the public must never see an inactive one.
            if entry.is_active and entry.product.is_active
        ],
    )
    return CatalogDocument.of(catalog.model_dump_json().encode())


def cache_name(pricebook: str) -> str:
    """The price book's name as a key segment: `Portal` -> `portal`."""
    return re.sub(r"[^a-z0-9]+", "-", pricebook.casefold()).strip("-") or "default"


class CatalogReader:
    """One per process: the cache, the single fill in flight, the outage fallback."""

    def __init__(
        self,
        *,
        client: redis.Redis,
        cache: CacheInvalidator,
        salesforce: SalesforceClient | None,
        pricebook: str,
        ttl_seconds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._cache = cache
        self._salesforce = salesforce
        self.pricebook = pricebook
        self._name = cache_name(pricebook)
        self.key = cache.keys.services_catalog(self._name)
        self._ttl = ttl_seconds
        self._clock = clock
        self._fill_task: asyncio.Task[CatalogDocument] | None = None
        self._fallback: tuple[CatalogDocument, float] | None = None
        self._redis_down_until = 0.0

    async def read(self) -> CatalogDocument:
        cached = await self._cached()
        if cached is not None:
            return cached
        SERVED.labels("miss").inc()
        task = self._fill_task
        if task is None:
            task = asyncio.create_task(self._fill(), name="catalog-fill")
            self._fill_task = task
            task.add_done_callback(self._filled)
        try:
            # Shielded: a caller that goes away (or times out) leaves the fill to the others.
            return await asyncio.wait_for(asyncio.shield(task), READ_TIMEOUT_SECONDS)
        except TimeoutError:
            raise CatalogUnavailableError("Salesforce did not answer in time") from None

    def _filled(self, task: asyncio.Task[CatalogDocument]) -> None:
        if self._fill_task is task:
            self._fill_task = None
        if not task.cancelled():
            task.exception()  # retrieved here, so no waiter having left is never a warning

    @property
    def _redis_usable(self) -> bool:
        return self._clock() >= self._redis_down_until

    def _redis_failed(self, error: Exception, during: str) -> None:
        self._redis_down_until = self._clock() + REDIS_COOLDOWN_SECONDS
        log.warning("catalog.redis_unavailable", during=during, error=str(error))

    async def _cached(self) -> CatalogDocument | None:
        if self._redis_usable:
            try:
                value = await self._redis.get(self.key)
            except (RedisError, OSError) as exc:
                self._redis_failed(exc, "read")
            else:
                document = CatalogDocument.decode(value) if isinstance(value, str) else None
                if document is not None:
                    SERVED.labels("redis").inc()
                return document
        if self._fallback is not None:
            document, read_at = self._fallback
            if self._clock() - read_at < FALLBACK_SECONDS:
                SERVED.labels("fallback").inc()
                return document
        return None

    async def _fill(self) -> CatalogDocument:
        marker: str | None = None
        if self._redis_usable:
            marker = self._cache.keys.services_catalog(
                f"{self._name}:__filling__:{secrets.token_hex(8)}"
            )
            try:
                await self._cache.write_in_group(
                    CacheGroup.SERVICES_CATALOG, marker, "1", ttl_seconds=self._ttl
                )
            except CacheUnavailableError as exc:
                self._redis_failed(exc, "fill marker")
                marker = None
        try:
            document = await self._from_salesforce()
            self._fallback = (document, self._clock())
            if marker is not None:
                await self._store(document, marker)
            return document
        finally:
            if marker is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self._redis.unlink(marker)
                    await self._redis.srem(
                        self._cache.keys.group_index(CacheGroup.SERVICES_CATALOG), marker
                    )

    async def _store(self, document: CatalogDocument, marker: str) -> None:
        try:
            await self._cache.write_in_group(
                CacheGroup.SERVICES_CATALOG, self.key, document.encode(), ttl_seconds=self._ttl
            )
            if not await self._redis.exists(marker):
                # An invalidation ran while we read: what we read may predate the change.
                await self._cache.delete([self.key])
                log.info("catalog.fill_overtaken_by_invalidation", key=self.key)
        except (CacheUnavailableError, RedisError, OSError) as exc:
            self._redis_failed(exc, "write")

    async def _from_salesforce(self) -> CatalogDocument:
        if self._salesforce is None:
            raise CatalogUnavailableError("no Salesforce is configured")
        try:
            pricebook_id = await self._salesforce.find_pricebook_id(self.pricebook)
            if pricebook_id is None:
                raise CatalogUnavailableError(f"no active price book named {self.pricebook!r}")
            entries = await self._salesforce.read_catalog(pricebook_id)
        except ClientError as exc:
            log.warning("catalog.salesforce_unavailable", error=str(exc))
            raise CatalogUnavailableError(f"Salesforce unavailable: {exc}") from exc
        return render(self.pricebook, entries)
