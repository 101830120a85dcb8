"""Every outbound call is timed and counted by outcome."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from clients.errors import BusinessError, ErrorCode, System, TransientError
from clients.metrics import observe


def _count(operation: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "fulfillment_client_requests_total",
        {"system": "whmcs", "operation": operation, "outcome": outcome},
    )
    return value or 0.0


def _timed(operation: str) -> float:
    value = REGISTRY.get_sample_value(
        "fulfillment_client_request_duration_seconds_count",
        {"system": "whmcs", "operation": operation},
    )
    return value or 0.0


async def test_outcomes_are_counted_and_calls_timed() -> None:
    operation = "MetricsTest"
    async with observe(System.WHMCS, operation):
        pass
    with pytest.raises(TransientError):
        async with observe(System.WHMCS, operation):
            raise TransientError(System.WHMCS, "down")
    with pytest.raises(BusinessError):
        async with observe(System.WHMCS, operation):
            raise BusinessError(System.WHMCS, ErrorCode.PAYMENT_METHOD_MISSING, "none")
    assert (_count(operation, "success"), _count(operation, "transient")) == (1, 1)
    assert _count(operation, "business") == 1
    assert _timed(operation) == 3
