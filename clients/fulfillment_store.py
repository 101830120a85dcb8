"""The engine's own tables in Postgres: the `fulfillments` read model, billing-order intents,
the portal's id mapping (read only) and the cache-invalidation outbox.

Every failure to reach Postgres is a `TransientError` of the taxonomy; no caller sees asyncpg.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from clients.errors import System, TransientError
from domain.billing import BillingOrderResult
from domain.fulfillment import FulfillmentStatus
from domain.steps import FulfillmentRecord, OperatorAction

_RECORD = """
INSERT INTO fulfillments AS f
    (sf_order_id, sf_account_id, workflow_id, status, step, error_code, error_message,
     whmcs_order_id, whmcs_invoice_id, whmcs_service_ids, attempts, version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (sf_order_id) DO UPDATE SET
    sf_account_id = COALESCE(EXCLUDED.sf_account_id, f.sf_account_id),
    workflow_id = EXCLUDED.workflow_id,
    status = EXCLUDED.status, step = EXCLUDED.step,
    error_code = EXCLUDED.error_code, error_message = EXCLUDED.error_message,
    whmcs_order_id = EXCLUDED.whmcs_order_id, whmcs_invoice_id = EXCLUDED.whmcs_invoice_id,
    whmcs_service_ids = EXCLUDED.whmcs_service_ids, attempts = EXCLUDED.attempts,
    version = EXCLUDED.version, updated_at = now()
WHERE f.version < EXCLUDED.version
RETURNING version
"""

# Only over a row that still says the fulfillment is at work: a status the workflow wrote itself
# (parked, fulfilled, cancelled) says more than "it ended", and a newer run's rows outrank this.
_RECORD_STRANDED = """
INSERT INTO fulfillments AS f
    (sf_order_id, workflow_id, status, error_message, version, sf_account_id)
VALUES ($1, $2, 'failed', $3, $4, $5)
ON CONFLICT (sf_order_id) DO UPDATE SET
    status = 'failed', error_code = NULL, error_message = EXCLUDED.error_message,
    version = EXCLUDED.version, updated_at = now(),
    sf_account_id = COALESCE(f.sf_account_id, EXCLUDED.sf_account_id)
WHERE f.version < EXCLUDED.version AND f.status IN ('pending', 'activating')
RETURNING COALESCE(sf_account_id, '')
"""

_POSTGRES_DOWN = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class BillingIntent:
    """What Postgres remembers of earlier attempts at one order's billing."""

    # An earlier attempt recorded an intent (False: this attempt's row is the first, or the
    # rows were lost, as a restore from a backup loses them).
    existed: bool
    # When an attempt last sent AddOrder (None: no attempt recorded here ever sent one).
    sent_at: datetime | None = None


class BillingLockBusy(TransientError):
    """Another attempt at the same order's billing still holds its lock (a worker that Temporal
    gave up on but that is still running): transient, the next attempt finds its order."""


class BillingRecord:
    """The intent and result of one order's billing, written under its billing lock."""

    def __init__(
        self,
        connection: asyncpg.Connection,
        sf_order_id: str,
        errors: Callable[[str], AbstractAsyncContextManager[None]],
    ) -> None:
        self._connection = connection
        self._sf_order_id = sf_order_id
        self._errors = errors

    async def intent(self, whmcs_client_id: int) -> BillingIntent:
        """Record that the order is about to be billed; what earlier attempts recorded.

        Kept for audit, operators, and as one of the two places that remember an AddOrder may
        have been sent (`sending`); never as proof that none was: a restored or failed-over
        database forgets rows, so the caller looks in WHMCS before every AddOrder.
        """
        async with self._errors("record billing intent"), self._connection.transaction():
            # The read model's row may trail (its writes are best effort): the intent
            # needs it to exist.
            await self._connection.execute(
                "INSERT INTO fulfillments (sf_order_id, workflow_id) VALUES ($1, $2)"
                " ON CONFLICT (sf_order_id) DO NOTHING",
                self._sf_order_id,
                f"order-fulfillment-{self._sf_order_id}",
            )
            first = await self._connection.fetchval(
                "INSERT INTO billing_order_intents (sf_order_id, whmcs_client_id)"
                " VALUES ($1, $2) ON CONFLICT (sf_order_id) DO NOTHING RETURNING true",
                self._sf_order_id,
                whmcs_client_id,
            )
            if first:
                return BillingIntent(existed=False)
            sent_at = await self._connection.fetchval(
                "UPDATE billing_order_intents SET whmcs_client_id = $2 WHERE sf_order_id = $1"
                " RETURNING sent_at",
                self._sf_order_id,
                whmcs_client_id,
            )
            return BillingIntent(existed=True, sent_at=sent_at)

    async def sending(self, at: datetime | None) -> None:
        """Just before AddOrder goes out: committed first, so no AddOrder is ever unrecorded.
        None once WHMCS refused it (nothing can commit late)."""
        async with self._errors("record billing send"):
            await self._connection.execute(
                "UPDATE billing_order_intents SET sent_at = $2 WHERE sf_order_id = $1",
                self._sf_order_id,
                at,
            )

    async def result(self, result: BillingOrderResult) -> None:
        async with self._errors("record billing result"):
            await self._connection.execute(
                "UPDATE billing_order_intents SET whmcs_order_id = $2, whmcs_invoice_id = $3,"
                " completed_at = now() WHERE sf_order_id = $1",
                self._sf_order_id,
                result.whmcs_order_id,
                result.whmcs_invoice_id,
            )


@dataclass(frozen=True)
class DeferredInvalidation:
    id: int
    keys: tuple[str, ...]
    attempts: int
    groups: tuple[str, ...] = ()


class FulfillmentStore:
    """Queries over one asyncpg pool; the pool is the caller's."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, record: FulfillmentRecord) -> bool:
        """Write the read-model row if `record` is newer than what is stored; True if written."""
        async with self._errors("record fulfillment"):
            version = await self._pool.fetchval(
                _RECORD,
                record.sf_order_id,
                record.sf_account_id,
                record.workflow_id,
                record.status.value,
                record.step.value if record.step else None,
                record.error_code.value if record.error_code else None,
                record.error_message,
                record.whmcs_order_id,
                record.whmcs_invoice_id,
                list(record.whmcs_service_ids),
                record.attempts,
                record.version,
            )
        return version is not None

    async def record_stranded(
        self,
        sf_order_id: str,
        workflow_id: str,
        message: str,
        version: int,
        sf_account_id: str | None = None,
    ) -> str | None:
        """Mark a fulfillment that ended without finishing as failed, with `message` (no error
        code: none of the closed list says "terminated"), unless its row says more already;
        `sf_account_id` (Salesforce's) fills a row that has none.

        The order's account ('' when the row has none) if this wrote the row, else None.
        """
        async with self._errors("record stranded fulfillment"):
            account = await self._pool.fetchval(
                _RECORD_STRANDED, sf_order_id, workflow_id, message, version, sf_account_id
            )
        return None if account is None else str(account)

    async def record_operator_action(self, action: OperatorAction) -> bool:
        """One audit row per request id, however often it is recorded; True if this wrote it."""
        async with self._errors("record operator action"):
            written = await self._pool.fetchval(
                "INSERT INTO operator_actions"
                " (request_id, sf_order_id, action, reason, requested_by, outcome)"
                " VALUES ($1, $2, $3, $4, $5, 'accepted')"
                " ON CONFLICT (request_id) DO NOTHING RETURNING true",
                action.request_id,
                action.sf_order_id,
                action.action,
                action.reason,
                action.requested_by,
            )
        return bool(written)

    async def recorded_status(self, sf_order_id: str) -> FulfillmentStatus | None:
        """The read model's status of the order's fulfillment, or None when it has no row."""
        async with self._errors("read fulfillment status"):
            value = await self._pool.fetchval(
                "SELECT status FROM fulfillments WHERE sf_order_id = $1", sf_order_id
            )
        return None if value is None else FulfillmentStatus(value)

    async def billed_order(self, sf_order_id: str) -> int | None:
        """The WHMCS order id an attempt recorded for the order's billing, if any."""
        async with self._errors("read billing intent"):
            value = await self._pool.fetchval(
                "SELECT whmcs_order_id FROM billing_order_intents WHERE sf_order_id = $1",
                sf_order_id,
            )
        return int(value) if value is not None else None

    async def accounts_of(self, sf_order_ids: Sequence[str]) -> dict[str, str]:
        """The account of each order the read model knows."""
        async with self._errors("read order accounts"):
            rows = await self._pool.fetch(
                "SELECT sf_order_id, sf_account_id FROM fulfillments"
                " WHERE sf_order_id = ANY($1::text[]) AND sf_account_id IS NOT NULL",
                list(sf_order_ids),
            )
        return {row["sf_order_id"]: row["sf_account_id"] for row in rows}

    async def mapped_whmcs_client(self, sf_account_id: str) -> int | None:
        """The portal's mapping of a Salesforce account to its WHMCS client, if any."""
        async with self._errors("read id mapping"):
            value = await self._pool.fetchval(
                "SELECT whmcs_client_id FROM id_mappings WHERE sf_account_id = $1", sf_account_id
            )
        return int(value) if value is not None else None

    @asynccontextmanager
    async def billing_lock(
        self, sf_order_id: str, *, wait: float = 30.0, poll: float = 0.2
    ) -> AsyncIterator[BillingRecord]:
        """Serialise `create_billing_order` attempts for one order, across workers.

        A session advisory lock on a connection of its own: two attempts running at once (an
        activity retried while the first is still running) take turns, so the second finds the
        first's order. A worker that dies drops its connection, and with it the lock. The lock
        is tried, not waited on inside Postgres: a wait there would run into the driver's
        command timeout and read as "Postgres unreachable", and would hold the activity without
        a word; here it is polled (the activity keeps heartbeating) for up to `wait` seconds,
        then reported as what it is, `BillingLockBusy`. The intent and the result are written
        on that same connection: an attempt needs one pooled connection, never a second while
        holding the first (many attempts at once would otherwise take the whole pool and wait
        for each other).
        """
        async with self._errors("lock billing order"):
            connection = await self._pool.acquire()
        try:
            deadline = time.monotonic() + wait
            while True:
                async with self._errors("lock billing order"):
                    locked = await connection.fetchval(
                        "SELECT pg_try_advisory_lock(hashtextextended('billing:' || $1, 0))",
                        sf_order_id,
                    )
                if locked:
                    break
                if time.monotonic() >= deadline:
                    raise BillingLockBusy(
                        System.POSTGRES,
                        "another attempt is still billing this order",
                        detail=f"its lock was held for {wait:g} s",
                    )
                await asyncio.sleep(poll)
            try:
                yield BillingRecord(connection, sf_order_id, self._errors)
            finally:
                async with self._errors("unlock billing order"):
                    await connection.execute(
                        "SELECT pg_advisory_unlock(hashtextextended('billing:' || $1, 0))",
                        sf_order_id,
                    )
        finally:
            await self._pool.release(connection)

    async def defer_invalidation(
        self, keys: Sequence[str], reason: str, *, groups: Sequence[str] = ()
    ) -> None:
        """Keep keys (and cache groups) Redis refused in the outbox; `drain` retries them."""
        async with self._errors("defer cache invalidation"):
            await self._pool.execute(
                "INSERT INTO cache_invalidation_outbox (keys, groups, reason) VALUES ($1, $2, $3)",
                list(keys),
                list(groups),
                reason,
            )

    async def due_invalidations(self, limit: int = 100) -> list[DeferredInvalidation]:
        async with self._errors("read cache outbox"):
            rows = await self._pool.fetch(
                "SELECT id, keys, groups, attempts FROM cache_invalidation_outbox"
                " WHERE next_try_at <= now() ORDER BY id LIMIT $1",
                limit,
            )
        return [
            DeferredInvalidation(r["id"], tuple(r["keys"]), r["attempts"], tuple(r["groups"]))
            for r in rows
        ]

    async def invalidation_done(self, entry_id: int) -> None:
        async with self._errors("clear cache outbox"):
            await self._pool.execute(
                "DELETE FROM cache_invalidation_outbox WHERE id = $1", entry_id
            )

    async def invalidation_failed(self, entry: DeferredInvalidation, error: str) -> None:
        # Backs off up to five minutes between tries; the entry is never dropped.
        delay = min(300, 2 ** min(entry.attempts, 8))
        async with self._errors("update cache outbox"):
            await self._pool.execute(
                "UPDATE cache_invalidation_outbox SET attempts = attempts + 1, last_error = $2,"
                " next_try_at = now() + make_interval(secs => $3) WHERE id = $1",
                entry.id,
                error[:500],
                float(delay),
            )

    @asynccontextmanager
    async def _errors(self, operation: str) -> AsyncIterator[None]:
        try:
            yield
        except _POSTGRES_DOWN as exc:
            raise TransientError(
                System.POSTGRES, f"{operation}: Postgres unreachable", detail=type(exc).__name__
            ) from None
        except asyncpg.PostgresError as exc:
            # A serialization failure or deadlock passes on its own; other errors are bugs or
            # schema drift, and retrying shows them in the alert metrics, not a parked order.
            raise TransientError(
                System.POSTGRES, f"{operation} failed", detail=getattr(exc, "sqlstate", None)
            ) from None
