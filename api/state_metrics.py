"""Numbers an operator asks for, read when Prometheus scrapes the API's `/metrics`.

Counters say what happened; these gauges say how things stand now, from Postgres and the
readiness checks: failed fulfillments by code, the cache-invalidation outbox's depth and oldest
entry, dead letters not yet redriven, and whether each dependency answers. Read at scrape time
(a few small queries every scrape interval), so they are as fresh as the scrape and need no
loop of their own. Every API replica reports the same figures: alert on `max`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import asyncpg
from prometheus_client import Gauge

from api.services import ApiServices
from clients import postgres
from clients.cache import ping as redis_ping
from config.logging import get_logger
from domain.errors import ErrorCode

log = get_logger(__name__)

# Readiness answers quickly even when a dependency hangs: each check gets this long.
CHECK_TIMEOUT = 2.0
# A failed fulfillment without a code ended without finishing (reconciliation's report).
NO_CODE = "none"

FAILED = Gauge(
    "fulfillment_failed_fulfillments",
    "Fulfillments the read model shows failed now, by error code (parked for an operator, "
    "expired, or, code none, ended without finishing)",
    ["code"],
)
OUTBOX_DEPTH = Gauge(
    "fulfillment_cache_outbox_depth", "Cache invalidations waiting in the outbox for Redis"
)
OUTBOX_OLDEST = Gauge(
    "fulfillment_cache_outbox_oldest_seconds",
    "Age of the oldest cache invalidation waiting in the outbox (0 when it is empty)",
)
DEAD_LETTERS = Gauge(
    "fulfillment_dead_letters_waiting", "Change events dead-lettered and not yet redriven"
)
DEPENDENCY_UP = Gauge(
    "fulfillment_api_dependency_up",
    "Whether the API reaches each dependency within 2 s (its readiness checks)",
    ["dependency"],
)

_STATE = """
SELECT
    (SELECT count(*) FROM cache_invalidation_outbox) AS outbox,
    (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)
       FROM cache_invalidation_outbox) AS outbox_oldest,
    (SELECT count(*) FROM cdc_dead_letters WHERE redriven_at IS NULL) AS dead_letters
"""
_FAILED = """
SELECT coalesce(error_code, 'none') AS code, count(*) AS n
FROM fulfillments WHERE status = 'failed' GROUP BY 1
"""


async def within(check: Awaitable[object]) -> bool:
    try:
        return bool(await asyncio.wait_for(check, timeout=CHECK_TIMEOUT))
    except Exception:
        return False


async def readiness(api: ApiServices) -> dict[str, bool]:
    """Whether Postgres, Redis and Temporal each answer within CHECK_TIMEOUT."""
    checks = await asyncio.gather(
        within(postgres.ping(api.pool)),
        within(redis_ping(api.redis)),
        within(api.temporal.service_client.check_health()),
    )
    return dict(zip(("postgres", "redis", "temporal"), checks, strict=True))


async def refresh(api: ApiServices) -> None:
    """Bring the gauges up to date; a figure that cannot be read keeps its last value."""
    ready = await readiness(api)
    for dependency, up in ready.items():
        DEPENDENCY_UP.labels(dependency).set(1 if up else 0)
    if not ready["postgres"]:
        return
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            state = await api.pool.fetchrow(_STATE)
            failed = await api.pool.fetch(_FAILED)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        log.warning("metrics.state_unavailable", error=type(error).__name__)
        return
    assert state is not None
    OUTBOX_DEPTH.set(state["outbox"])
    OUTBOX_OLDEST.set(float(state["outbox_oldest"]))
    DEAD_LETTERS.set(state["dead_letters"])
    counts = {row["code"]: row["n"] for row in failed}
    for code in [*(c.value for c in ErrorCode), NO_CODE]:
        FAILED.labels(code).set(counts.get(code, 0))
