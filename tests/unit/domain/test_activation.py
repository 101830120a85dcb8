"""docs/design.md's re-activation rules, as a pure decision."""

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


CUTOVER = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


def test_with_no_run_known_an_activation_before_the_cutover_starts_nothing() -> None:
    before = CUTOVER - timedelta(seconds=1)
    assert decide_activation(None, before, cutover=CUTOVER) is (
        ActivationDecision.IGNORE_BEFORE_CUTOVER
    )
    assert decide_activation(None, CUTOVER, cutover=CUTOVER) is ActivationDecision.START
    assert decide_activation(None, before) is ActivationDecision.START, "no cutover set"


@pytest.mark.parametrize(
    ("recorded", "decision"),
    [
        (FulfillmentStatus.ACTIVATED, ActivationDecision.IGNORE_RECORDED_FULFILLED),
        (FulfillmentStatus.CANCELLED, ActivationDecision.START),
        (FulfillmentStatus.FAILED, ActivationDecision.START),
        (None, ActivationDecision.START),
    ],
)
def test_with_no_run_known_the_read_model_decides_whether_the_order_was_fulfilled(
    recorded: FulfillmentStatus | None, decision: ActivationDecision
) -> None:
    # Temporal's retention forgot the run; the read model did not.
    assert decide_activation(None, CUTOVER, recorded=recorded) is decision


def test_the_read_model_is_not_asked_over_a_run_temporal_knows() -> None:
    cancelled = ExistingFulfillment(
        running=False, ended=FulfillmentStatus.CANCELLED, closed_at=CLOSED
    )
    later = CLOSED + timedelta(days=1)
    decided = decide_activation(cancelled, later, recorded=FulfillmentStatus.ACTIVATED)
    assert decided is ActivationDecision.START_AFRESH
