"""Starting the fulfillments that are missing: the one way the scheduled reconciliation
(`activities/reconciliation.py`) and an operator's pass (`fulfillment reconcile [--dry-run]`)
start an order, `start_missing_fulfillment`.

A start names the order's workflow id and refuses any id Temporal has seen
(`usecases.fulfillments.start_unless_known`), so two reconciliations, or one and the listener,
racing on an order start it once, and a fulfillment that ran and closed is never started again
from here; nor is one the read model records activated (Temporal's retention forgets runs).

An operator's pass (`reconcile_once`) judges what the scheduled reconciliation judges
(`workflows/reconciliation.py`) and starts what it would start, but answers for every
candidate: the orders in the trigger status, not final, activated since the window's start
(RECONCILIATION_LOOKBACK_HOURS, FULFILLMENT_CUTOVER_AT), each either started (or, in a dry run,
one that would be) or left alone with the reason. Orders activated before the window are only
counted: on an org with history they are years of orders no fulfillment is meant for.

The go-live check (docs/runbook.md): a dry run names exactly the orders the engine will take.
Nothing here knows HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from temporalio.client import Client

from clients.errors import ClientError
from clients.fulfillment_store import FulfillmentStore
from clients.salesforce import SalesforceClient
from config.logging import get_logger
from config.settings import Settings
from domain.fulfillment import (
    ExistingFulfillment,
    FulfillmentInput,
    FulfillmentOptions,
    FulfillmentStatus,
    Trigger,
    TriggerSource,
)
from domain.reconciliation import UnfinishedOrder, left_alone_by_salesforce
from usecases.errors import UnavailableError
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


@dataclass(frozen=True)
class Judged:
    """What became of one order: started (or would be), or left alone, and why."""

    outcome: Outcome
    reason: str


_NOBODY = "in the window, and no fulfillment has worked on it"
_RECORDED = "the read model records it activated (Temporal may have forgotten the run)"
_MEANWHILE = "started meanwhile by another path"


async def start_missing_fulfillment(
    temporal: Client,
    settings: Settings,
    store: FulfillmentStore,
    sf_order_id: str,
    *,
    starter: str,
    options: FulfillmentOptions | None = None,
    asked_by_operator: bool = False,
    dry_run: bool = False,
) -> Judged:
    """Start the order's fulfillment unless the engine's own records keep it from that.

    Left alone when the read model records the order activated (Salesforce lost our status, and
    Temporal's retention the run), or when Temporal has, or had, a run of it (`starter`, in the
    run's memo, recognises its own start after a lost reply: `start_unless_known`).

    The scheduled reconciliation leaves Temporal's part to its refusal of a known id, and warns
    for each start: every order it starts is one whose activation the listener missed. An
    operator's pass (`asked_by_operator`) asks Temporal first, so the answer says what it has,
    starts nothing on a `dry_run`, and logs a start as info: the operator asked, and the answer
    lists it.
    """
    if await store.recorded_status(sf_order_id) is FulfillmentStatus.ACTIVATED:
        if not asked_by_operator:
            log.warning("reconciliation.recorded_fulfilled", sf_order_id=sf_order_id)
        return Judged(Outcome.LEFT_ALONE, _RECORDED)
    if asked_by_operator:
        existing = await existing_fulfillment(temporal, sf_order_id)
        if existing is not None:
            return Judged(Outcome.LEFT_ALONE, f"Temporal has its fulfillment ({_state(existing)})")
    if dry_run:
        return Judged(Outcome.WOULD_START, _NOBODY)
    extra: dict[str, Any] = {} if options is None else {"options": options}
    fulfillment = FulfillmentInput(
        sf_order_id=sf_order_id, trigger=Trigger(source=TriggerSource.RECONCILIATION), **extra
    )
    if not await start_unless_known(temporal, settings, fulfillment, starter=starter):
        return Judged(Outcome.LEFT_ALONE, _MEANWHILE)
    level = log.info if asked_by_operator else log.warning
    level("reconciliation.fulfillment_started", sf_order_id=sf_order_id, run=starter)
    return Judged(Outcome.STARTED, _NOBODY)


def _state(existing: ExistingFulfillment) -> str:
    if existing.running:
        return "parked" if existing.waiting_for_operator else "running"
    return f"ended {existing.ended.value}" if existing.ended else "ended without a result"


async def reconcile_once(
    settings: Settings,
    salesforce: SalesforceClient,
    temporal: Client,
    store: FulfillmentStore,
    *,
    dry_run: bool,
    requested_by: str,
) -> ReconciliationPass:
    """One pass now, for an operator; Salesforce or Postgres away is `UnavailableError`."""
    try:
        return await _reconcile(
            settings, salesforce, temporal, store, dry_run=dry_run, requested_by=requested_by
        )
    except ClientError as error:
        raise UnavailableError(str(error)) from None


async def _reconcile(
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
            reason = left_alone_by_salesforce(order, window, now)
            if reason is not None:
                judged = Judged(Outcome.LEFT_ALONE, reason)
            else:
                judged = await start_missing_fulfillment(
                    temporal,
                    settings,
                    store,
                    order.sf_order_id,
                    starter=starter,
                    asked_by_operator=True,
                    dry_run=dry_run,
                )
            candidates.append(_candidate(order, judged))
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


def _candidate(order: UnfinishedOrder, judged: Judged) -> Candidate:
    return Candidate(
        sf_order_id=order.sf_order_id,
        order_number=order.order_number,
        activated_at=order.activated_at,
        outcome=judged.outcome,
        reason=judged.reason,
    )
