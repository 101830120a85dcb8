"""DESIGN.md's re-activation rules, as a pure decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.fulfillment import (
    ActivationDecision,
    ExistingFulfillment,
    FulfillmentStatus,
    decide_activation,
)

CLOSED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("existing", "activated_at", "decision"),
    [
        (None, None, ActivationDecision.START),
        (ExistingFulfillment(running=True), CLOSED, ActivationDecision.IGNORE_RUNNING),
        (
            ExistingFulfillment(running=True, waiting_for_operator=True),
            CLOSED,
            ActivationDecision.RETRY_PARKED,
        ),
        (
            ExistingFulfillment(running=False, ended=FulfillmentStatus.ACTIVATED, closed_at=CLOSED),
            CLOSED + timedelta(days=1),
            ActivationDecision.IGNORE_FULFILLED,
        ),
        (
            ExistingFulfillment(running=False, ended=FulfillmentStatus.CANCELLED, closed_at=CLOSED),
            CLOSED + timedelta(seconds=1),
            ActivationDecision.START_AFRESH,
        ),
        (
            ExistingFulfillment(running=False, ended=FulfillmentStatus.FAILED, closed_at=CLOSED),
            CLOSED + timedelta(seconds=1),
            ActivationDecision.START_AFRESH,
        ),
        # The activation that started the cancelled run, replayed: nothing new.
        (
            ExistingFulfillment(running=False, ended=FulfillmentStatus.CANCELLED, closed_at=CLOSED),
            CLOSED - timedelta(days=3),
            ActivationDecision.IGNORE_STALE,
        ),
        (
            ExistingFulfillment(running=False, ended=FulfillmentStatus.CANCELLED, closed_at=CLOSED),
            None,
            ActivationDecision.IGNORE_STALE,
        ),
    ],
)
def test_reactivation_follows_the_design(
    existing: ExistingFulfillment | None,
    activated_at: datetime | None,
    decision: ActivationDecision,
) -> None:
    assert decide_activation(existing, activated_at) is decision
