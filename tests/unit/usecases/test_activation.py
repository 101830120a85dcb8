"""`activate_fulfillment` asks the read model only when its answer can change the decision."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from config.settings import Settings
from domain.fulfillment import (
    ActivationDecision,
    FulfillmentInput,
    FulfillmentStatus,
    Trigger,
    TriggerSource,
)
from usecases.fulfillments import activate_fulfillment

CUTOVER = datetime(2026, 11, 1, tzinfo=UTC)
ORDER = FulfillmentInput(
    sf_order_id="801000000000001AAA", trigger=Trigger(source=TriggerSource.CDC)
)


class _Unknown:
    """A handle on a workflow Temporal has never seen."""

    async def describe(self) -> Any:
        raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")


class _NoRuns:
    def get_workflow_handle(self, *_args: Any, **_kwargs: Any) -> _Unknown:
        return _Unknown()


async def _decide(activated_at: datetime, recorded: FulfillmentStatus | None) -> tuple[Any, int]:
    asked: list[str] = []

    async def recorded_status(sf_order_id: str) -> FulfillmentStatus | None:
        asked.append(sf_order_id)
        return recorded

    decision = await activate_fulfillment(
        cast(Client, _NoRuns()),
        Settings(fulfillment_cutover_at=CUTOVER),
        ORDER,
        activated_at=activated_at,
        recorded_status=recorded_status,
    )
    return decision, len(asked)


async def test_an_order_activated_before_the_cutover_is_ignored_without_asking_the_read_model() -> (
    None
):
    before = datetime(2026, 10, 1, tzinfo=UTC)
    decision, asked = await _decide(before, FulfillmentStatus.ACTIVATED)
    assert (decision, asked) == (ActivationDecision.IGNORE_BEFORE_CUTOVER, 0)


async def test_an_order_the_read_model_saw_fulfilled_is_not_started_again() -> None:
    after = datetime(2026, 11, 2, tzinfo=UTC)
    decision, asked = await _decide(after, FulfillmentStatus.ACTIVATED)
    assert (decision, asked) == (ActivationDecision.IGNORE_RECORDED_FULFILLED, 1)
