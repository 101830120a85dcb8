"""One reconciliation pass run now, by an operator (`fulfillment reconcile [--dry-run]`).

It judges what the scheduled reconciliation judges (`workflows/reconciliation.py`) and starts
what it would start, the same way (`usecases.fulfillments.start_unless_known`), but answers for
every candidate: the orders in the trigger status, not final, activated since the window's start
(RECONCILIATION_LOOKBACK_HOURS, FULFILLMENT_CUTOVER_AT), each either started (or, in a dry run,
one that would be) or left alone with the reason. Orders activated before the window are only
counted: on an org with history they are years of orders no fulfillment is meant for.

The go-live check (docs/runbook.md): a dry run names exactly the orders the engine will take.
Nothing here knows HTTP.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field
from temporalio.client import Client

from clients.fulfillment_store import FulfillmentStore
from clients.salesforce import SalesforceClient
from config.logging import get_logger
from config.settings import Settings
from domain.fulfillment import (
    ExistingFulfillment,
    FulfillmentInput,
    FulfillmentStatus,
    Trigger,
    TriggerSource,
)
from domain.reconciliation import UnfinishedOrder, left_alone_by_salesforce
from usecases.fulfillments import existing_fulfillment, start_unless_known

log = get_logger(__name__)


class Outcome(StrEnum):
    STARTED = "started"
    WOULD_START = "would_start"
    LEFT_ALONE = "left_alone"


class Candidate(BaseModel):
    sf_order_id: str
    order_number: str
    activated_at: datetime | None
    outcome: Outcome
    reason: str


class ReconciliationPass(BaseModel):
    dry_run: bool
    window_start: datetime = Field(description="activations before this are out of the window")
    window_end: datetime = Field(description="activations after this are the listener's")
    candidates: list[Candidate]
    before_window: int = Field(description="unfinished orders activated before the window")

    @property
    def starts(self) -> list[Candidate]:
        return [c for c in self.candidates if c.outcome is not Outcome.LEFT_ALONE]


async def reconcile_once(
    settings: Settings,
    salesforce: SalesforceClient,
    temporal: Client,
    store: FulfillmentStore,
    *,
    dry_run: bool,
    requested_by: str,
) -> ReconciliationPass:
    now = datetime.now(UTC)
    window = settings.activation_window(now)
    starter = f"cli:{requested_by}"
    candidates: list[Candidate] = []
    after: str | None = None
    while True:
        page = await salesforce.unfinished_orders(
            settings.sf_trigger_status,
            after=after,
            limit=settings.reconciliation_batch_size,
            activated_from=window.start,
        )
        for order in page:
            reason = left_alone_by_salesforce(order, window, now) or await _known(
                temporal, store, order.sf_order_id
            )
            if reason is not None:
                candidates.append(_candidate(order, Outcome.LEFT_ALONE, reason))
            elif dry_run:
                candidates.append(_candidate(order, Outcome.WOULD_START, _NOBODY))
            else:
                candidates.append(await _start(settings, temporal, order, starter))
        if len(page) < settings.reconciliation_batch_size:
            break
        after = page[-1].order_number
    before = await salesforce.count_unfinished_orders(
        settings.sf_trigger_status, activated_before=window.start
    )
    return ReconciliationPass(
        dry_run=dry_run,
        window_start=window.start,
        window_end=window.end,
        candidates=candidates,
        before_window=before,
    )


_NOBODY = "in the window, and no fulfillment has worked on it"


async def _known(temporal: Client, store: FulfillmentStore, sf_order_id: str) -> str | None:
    """Why the engine's own records keep the order from being started, or None."""
    if await store.recorded_status(sf_order_id) is FulfillmentStatus.ACTIVATED:
        return "the read model records it activated (Temporal may have forgotten the run)"
    existing = await existing_fulfillment(temporal, sf_order_id)
    return None if existing is None else f"Temporal has its fulfillment ({_state(existing)})"


def _state(existing: ExistingFulfillment) -> str:
    if existing.running:
        return "parked" if existing.waiting_for_operator else "running"
    return f"ended {existing.ended.value}" if existing.ended else "ended without a result"


async def _start(
    settings: Settings, temporal: Client, order: UnfinishedOrder, starter: str
) -> Candidate:
    fulfillment = FulfillmentInput(
        sf_order_id=order.sf_order_id, trigger=Trigger(source=TriggerSource.RECONCILIATION)
    )
    if not await start_unless_known(temporal, settings, fulfillment, starter=starter):
        return _candidate(order, Outcome.LEFT_ALONE, "started meanwhile by another path")
    # Info, not the scheduled pass's warning: an operator asked, and the answer lists it.
    log.info("reconciliation.fulfillment_started", sf_order_id=order.sf_order_id, run=starter)
    return _candidate(order, Outcome.STARTED, _NOBODY)


def _candidate(order: UnfinishedOrder, outcome: Outcome, reason: str) -> Candidate:
    return Candidate(
        sf_order_id=order.sf_order_id,
        order_number=order.order_number,
        activated_at=order.activated_at,
        outcome=outcome,
        reason=reason,
    )
