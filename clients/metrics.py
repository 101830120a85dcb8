"""Prometheus metrics of every outbound call, and the one helper all clients time calls with.

`fulfillment_client_request_duration_seconds{system, operation}` is the latency histogram and
`fulfillment_client_requests_total{system, operation, outcome}` counts outcomes: `success`,
`transient` (a `TransientError` or anything unforeseen, which Temporal retries the same way) and
`business` (a `BusinessError`, including configuration errors). Each attempt counts as its own
call, so retries show up as extra requests.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Counter, Histogram

from clients.errors import BusinessError, System

REQUEST_DURATION = Histogram(
    "fulfillment_client_request_duration_seconds",
    "Latency of outbound calls to outside systems",
    ["system", "operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
REQUESTS = Counter(
    "fulfillment_client_requests",
    "Outbound calls to outside systems by outcome",
    ["system", "operation", "outcome"],
)


@asynccontextmanager
async def observe(system: System, operation: str) -> AsyncIterator[None]:
    """Time the block and count its outcome; exceptions pass through unchanged."""
    started = time.perf_counter()
    # A cancelled call (the activity was cancelled) has no outcome and is not counted.
    outcome: str | None = None
    try:
        yield
        outcome = "success"
    except BusinessError:
        outcome = "business"
        raise
    except Exception:
        outcome = "transient"
        raise
    finally:
        if outcome is not None:
            REQUEST_DURATION.labels(system.value, operation).observe(time.perf_counter() - started)
            REQUESTS.labels(system.value, operation, outcome).inc()
