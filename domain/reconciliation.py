"""Reconciliation's vocabulary: the unfinished orders it reads, what it starts, what it reports.

Reconciliation is the net under the CDC listener. A Temporal Schedule runs the
`FulfillmentReconciliation` workflow, which pages through the orders in the trigger status whose
`Activation_Status__c` is not final and starts the fulfillment of every one that never had one,
so an activation whose change event was lost (past the 72-hour retention, or while the listener
was down) still gets fulfilled. It never retries, restarts or signals a fulfillment that exists
or existed: a parked order waits for its operator, and re-activation is the listener's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from domain.fulfillment import FulfillmentOptions
from domain.order import SF_ID_PATTERN, ActivationStatus

# The workflow type, as the worker registers it and the schedule starts it.
RECONCILIATION_WORKFLOW_TYPE = "FulfillmentReconciliation"
# One SOQL reply holds up to 2000 records, so a page never needs a query locator.
MAX_BATCH_SIZE = 2000
# Pages read by one run before it continues as new, so its history stays small.
PAGES_PER_RUN = 10
# A run lists at most this many started order ids (the count stays exact): the list travels in
# the input of every continued run.
MAX_LISTED_ORDERS = 1000


class ReconciliationActivity(StrEnum):
    """Activity type names, as registered by the worker."""

    READ_UNFINISHED_ORDERS = "read_unfinished_orders"
    START_MISSING_FULFILLMENTS = "start_missing_fulfillments"
    RECORD_STRANDED_FULFILLMENTS = "record_stranded_fulfillments"


class UnfinishedOrder(BaseModel):
    """An order in the trigger status whose activation is not final."""

    model_config = ConfigDict(frozen=True)

    sf_order_id: str = Field(pattern=SF_ID_PATTERN)
    # The auto-number: unique and never changed, so the pages are keyed on it.
    order_number: str = Field(min_length=1)
    # The order's Account (None from an older worker): a stranded order's read-model row may
    # not have it yet (the run ended between Salesforce's write and the read model's).
    sf_account_id: str | None = Field(default=None, pattern=SF_ID_PATTERN)
    # `Activation_Status__c` as Salesforce holds it (a value we do not know stays as it is).
    activation_status: str | None = None
    # `Order.ActivatedDate` (None from an older worker, or an org that never stamped it).
    activated_at: datetime | None = None


@dataclass(frozen=True)
class ActivationWindow:
    """The activations reconciliation may start: no older than `start` (the lookback, or the
    cutover when that is later), no newer than `end` (the minimum age)."""

    start: datetime
    end: datetime

    @classmethod
    def at(
        cls, now: datetime, *, min_age: timedelta, lookback: timedelta, cutover: datetime | None
    ) -> ActivationWindow:
        start = now - lookback
        if cutover is not None and cutover > start:
            start = cutover
        return cls(start=start, end=now - min_age)


def never_fulfilled(order: UnfinishedOrder) -> bool:
    """Whether no fulfillment has worked on the order yet, judged by what Salesforce shows.

    A fulfillment's first write is `Activating` (then `Failed`, `Activated` or `Cancelled`), so
    any other value than none or `Pending` means one ran. Such an order is left alone even when
    Temporal no longer knows its fulfillment: a closed workflow is deleted after the namespace's
    retention, and starting it again would re-run an order that parked, expired or was stopped
    on purpose.
    """
    return order.activation_status in (None, ActivationStatus.PENDING.value)


def left_alone_by_salesforce(
    order: UnfinishedOrder, window: ActivationWindow, now: datetime
) -> str | None:
    """Why Salesforce's own data keeps reconciliation from starting `order`, or None.

    Said for an operator (`fulfillment reconcile`): what the order shows and whose it is.
    """
    activated = order.activated_at
    if activated is None or activated < window.start:
        return "activated before the window (RECONCILIATION_LOOKBACK_HOURS, FULFILLMENT_CUTOVER_AT)"
    if activated > window.end:
        seconds = max(0, int((now - activated).total_seconds()))
        return (
            f"activated {seconds} s ago, under RECONCILIATION_MIN_AGE_SECONDS: its change event "
            "is the listener's to handle"
        )
    if not never_fulfilled(order):
        return (
            f"Salesforce shows Activation_Status__c = {order.activation_status}: a fulfillment "
            "has worked on it"
        )
    return None


def maybe_stranded(order: UnfinishedOrder) -> bool:
    """Whether Salesforce shows a fulfillment at work on the order: stranded if none runs.

    Only `Activating`: a fulfillment's every other way of stopping (parked, cancelled, expired,
    fulfilled) writes a status of its own, so an order left `Activating` by a run that is no more
    ended without a word (terminated). A parked run terminated leaves `Failed`, which the read
    model already lists.
    """
    return order.activation_status == ActivationStatus.ACTIVATING.value


class UnfinishedOrdersQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    # The order number the previous page ended at; None for the first page.
    after: str | None = None
    # None: the worker's RECONCILIATION_BATCH_SIZE.
    limit: int | None = Field(default=None, ge=1, le=MAX_BATCH_SIZE)


class UnfinishedOrdersPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    orders: tuple[UnfinishedOrder, ...] = ()
    # Where the next page starts; None when this page was the last.
    next_after: str | None = None
    # When Salesforce was asked: a run that closed before then has left its last status in what
    # the page shows (None from workers older than the stranded-order report).
    read_at: datetime | None = None


class MissingFulfillments(BaseModel):
    """Orders no fulfillment has worked on: start one for each that Temporal does not have."""

    model_config = ConfigDict(frozen=True)

    sf_order_ids: tuple[str, ...]
    # For the fulfillments started; None: the defaults of the code that starts them.
    options: FulfillmentOptions | None = None


class StartedFulfillments(BaseModel):
    model_config = ConfigDict(frozen=True)

    started: tuple[str, ...] = ()
    # Temporal has (or had, within its retention) a fulfillment of these: left alone.
    already_present: tuple[str, ...] = ()


class StrandedCandidates(BaseModel):
    """Orders Salesforce showed `Activating` at `read_at`: record those no fulfillment runs."""

    model_config = ConfigDict(frozen=True)

    sf_order_ids: tuple[str, ...]
    read_at: datetime
    # Each order's Account as Salesforce holds it (empty from an older workflow).
    accounts: dict[str, str] = Field(default_factory=dict)


class StrandedFulfillments(BaseModel):
    model_config = ConfigDict(frozen=True)

    # No running fulfillment, and the last one closed before Salesforce was read (or is gone).
    stranded: tuple[str, ...] = ()
    # Of those, the ones this call recorded in the read model (the others were already).
    newly_recorded: tuple[str, ...] = ()


class ReconciliationResult(BaseModel):
    """What a reconciliation found and did, summed over the runs it continued as."""

    model_config = ConfigDict(frozen=True)

    # Unfinished orders read; each is either started or already present.
    found: int = 0
    started: int = 0
    # Orders that have or had a fulfillment: Temporal refused the start, or Salesforce shows
    # that one worked on the order.
    already_present: int = 0
    pages: int = 0
    started_order_ids: tuple[str, ...] = ()
    # Orders left `Activating` with no fulfillment running (also counted in already_present).
    stranded: int = 0
    stranded_order_ids: tuple[str, ...] = ()

    def plus(
        self,
        page: UnfinishedOrdersPage,
        starts: StartedFulfillments,
        stranded: StrandedFulfillments | None = None,
    ) -> ReconciliationResult:
        started = len(starts.started)
        found_stranded = stranded.stranded if stranded else ()
        return ReconciliationResult(
            found=self.found + len(page.orders),
            started=self.started + started,
            already_present=self.already_present + len(page.orders) - started,
            pages=self.pages + 1,
            started_order_ids=(self.started_order_ids + starts.started)[:MAX_LISTED_ORDERS],
            stranded=self.stranded + len(found_stranded),
            stranded_order_ids=(self.stranded_order_ids + found_stranded)[:MAX_LISTED_ORDERS],
        )

    def summary(self) -> str:
        text = (
            f"{self.found} unfinished orders found, {self.started} fulfillments started, "
            f"{self.already_present} already present"
        )
        if self.stranded:
            text += f", {self.stranded} left Activating with no fulfillment running"
        return text


class ReconciliationInput(BaseModel):
    """The schedule starts it empty; a continued run carries where it was and what it found."""

    model_config = ConfigDict(frozen=True)

    # None: the worker's RECONCILIATION_BATCH_SIZE.
    batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH_SIZE)
    # For the fulfillments it starts; None: their defaults (tests shorten the waits).
    options: FulfillmentOptions | None = None
    after: str | None = None
    so_far: ReconciliationResult = Field(default_factory=ReconciliationResult)
