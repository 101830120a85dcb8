"""Prometheus metrics of every outbound call, and the one helper all clients time calls with.

- `fulfillment_client_request_duration_seconds{system, operation}`: latency histogram.
- `fulfillment_client_requests_total{system, operation, outcome}`: outcomes `success`,
  `transient`, `outcome_unknown`, `unrecognised`, `business`, `configuration`. Each attempt
  counts as its own call, so retries show up as extra requests.
- `fulfillment_client_alerts_total{system, operation, reason}`: what needs a person even though
  nothing parks: `configuration` (the upstream refuses us), `unrecognised` (an error no table
  knows), `rate_limited` (an upstream API limit reached). Alert rules watch this counter.
- `fulfillment_salesforce_api_usage{kind}`: the org's API usage (`used`, `limit`) from the
  `Sforce-Limit-Info` reply header, last seen.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Counter, Gauge, Histogram

from clients.errors import (
    BusinessError,
    ConfigurationError,
    OutcomeUnknownError,
    System,
    UnrecognisedError,
)

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
ALERTS = Counter(
    "fulfillment_client_alerts",
    "Outbound call failures that need a person: configuration, unrecognised errors, API limits",
    ["system", "operation", "reason"],
)
SALESFORCE_API_USAGE = Gauge(
    "fulfillment_salesforce_api_usage",
    "Salesforce org API requests used and allowed in the rolling 24 hours (Sforce-Limit-Info)",
    ["kind"],
)


def alert(system: System, operation: str, reason: str) -> None:
    ALERTS.labels(system.value, operation, reason).inc()


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, ConfigurationError):
        return "configuration"
    if isinstance(exc, BusinessError):
        return "business"
    if isinstance(exc, OutcomeUnknownError):
        return "outcome_unknown"
    if isinstance(exc, UnrecognisedError):
        return "unrecognised"
    return "transient"


@asynccontextmanager
async def observe(system: System, operation: str) -> AsyncIterator[None]:
    """Time the block and count its outcome; exceptions pass through unchanged."""
    started = time.perf_counter()
    # A cancelled call (the activity was cancelled) has no outcome and is not counted.
    outcome: str | None = None
    try:
        yield
        outcome = "success"
    except Exception as exc:
        outcome = _outcome(exc)
        if outcome in ("configuration", "unrecognised"):
            alert(system, operation, outcome)
        raise
    finally:
        if outcome is not None:
            REQUEST_DURATION.labels(system.value, operation).observe(time.perf_counter() - started)
            REQUESTS.labels(system.value, operation, outcome).inc()
