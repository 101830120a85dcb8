"""The fulfillment workflow's vocabulary: its input, steps, progress and result.

The input holds the order id and where the trigger came from, never customer data (Temporal
keeps workflow inputs in history); customer data enters history only through activity results,
which the payload codec encrypts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from domain.errors import Failure
from domain.events import ReplayId
from domain.order import SF_ID_PATTERN
from domain.sim import SimActivation

WORKFLOW_ID_PREFIX = "order-fulfillment-"
# The workflow type, as registered by the worker and started by the listener, API and CLI.
WORKFLOW_TYPE = "OrderFulfillment"


def workflow_id(sf_order_id: str) -> str:
    """`order-fulfillment-<order id>`: one id per order, so a duplicate start is refused."""
    return f"{WORKFLOW_ID_PREFIX}{sf_order_id}"


# Read-model versions (migrations/0005): a time in milliseconds times this, plus a counter of the
# writes at that time, so every write outranks every earlier one, also across runs: a
# fulfillment started afresh under the same id, or a run reset to an earlier point (which counts
# its writes again from there).
VERSION_SPAN = 1_000_000


def read_model_version(at: datetime, writes: int = 0) -> int:
    """The version of a read-model write made at `at` (the `writes`-th at that moment)."""
    return int(at.timestamp() * 1000) * VERSION_SPAN + writes


class Step(StrEnum):
    """The workflow's steps, in the order they run (docs/design.md)."""

    LOAD_ORDER = "load_order"
    MARK_ACTIVATING = "mark_activating"
    RESOLVE_BILLING_CLIENT = "resolve_billing_client"
    VALIDATE_PAYMENT_METHOD = "validate_payment_method"
    CREATE_BILLING_ORDER = "create_billing_order"
    PROVISION_SIMS = "provision_sims"
    ACCEPT_BILLING_ORDER = "accept_billing_order"
    WRITE_BACK_SUCCESS = "write_back_success"
    INVALIDATE_CACHES = "invalidate_caches"


class SearchAttribute(StrEnum):
    """The fulfillment's search attributes (all keyword), registered once per namespace; the
    workflow sets them, and its starters give the first two at start."""

    SALESFORCE_ORDER_ID = "SalesforceOrderId"
    SALESFORCE_ACCOUNT_ID = "SalesforceAccountId"
    FULFILLMENT_STATUS = "FulfillmentStatus"
    FULFILLMENT_STEP = "FulfillmentStep"
    FULFILLMENT_ERROR_CODE = "FulfillmentErrorCode"


class FulfillmentStatus(StrEnum):
    """The read model's status (lower case in Postgres, the API and search attributes)."""

    PENDING = "pending"
    ACTIVATING = "activating"
    ACTIVATED = "activated"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TriggerSource(StrEnum):
    CDC = "cdc"
    RECONCILIATION = "reconciliation"
    OPERATOR = "operator"


class Trigger(BaseModel):
    """Where a fulfillment's start came from, for the audit trail and the UI."""

    model_config = ConfigDict(frozen=True)

    source: TriggerSource
    channel: str | None = None
    replay_id: ReplayId | None = None
    commit_timestamp: datetime | None = None
    transaction_key: str | None = None


class FulfillmentOptions(BaseModel):
    """How long the workflow waits and retries; defaults are production's, tests shorten them."""

    model_config = ConfigDict(frozen=True)

    # How long a parked fulfillment waits for an operator's retry or cancel.
    operator_wait: timedelta = timedelta(days=14)
    # How long one step may keep failing transiently before it parks as UPSTREAM_UNAVAILABLE.
    retry_budget: timedelta = timedelta(hours=1)
    # How long Freebit may take to activate a line (it documents "up to ~10 minutes").
    sim_activation_deadline: timedelta = timedelta(minutes=30)
    sim_poll_first: timedelta = timedelta(seconds=5)
    sim_poll_max: timedelta = timedelta(minutes=1)


class FulfillmentInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    sf_order_id: str = Field(pattern=SF_ID_PATTERN)
    trigger: Trigger
    options: FulfillmentOptions = Field(default_factory=FulfillmentOptions)

    def summary(self) -> str:
        """The workflow's static summary in the Temporal UI (no customer data: ids only)."""
        return f"Fulfil Salesforce order {self.sf_order_id}"

    def details(self) -> str:
        trigger = self.trigger
        where = f" on {trigger.channel}" if trigger.channel else ""
        replay = f", replay id {trigger.replay_id}" if trigger.replay_id is not None else ""
        return f"Started by {trigger.source.value}{where}{replay}."


# Who asked, for a retry or cancel signal that does not say (sent from the Temporal UI).
SIGNALLED_BY_DEFAULT = "temporal-ui"


class OperatorRequest(BaseModel):
    """A `retry` or `cancel` from an operator (API, CLI or the Temporal UI)."""

    model_config = ConfigDict(frozen=True)

    reason: str = Field(min_length=1, max_length=500)
    # The API and the CLI always name who asks; a signal typed into the Temporal UI may not.
    requested_by: str = Field(default=SIGNALLED_BY_DEFAULT, min_length=1, max_length=200)
    # Makes a repeated request (a retried POST, or the same action as signal and update) count
    # once.
    request_id: str | None = Field(default=None, max_length=200)


class FulfillmentProgress(BaseModel):
    """What the `progress` query answers and the read model stores."""

    sf_order_id: str
    status: FulfillmentStatus = FulfillmentStatus.PENDING
    step: Step | None = None
    steps_done: list[Step] = Field(default_factory=list)
    attempt: int = 1
    # True while parked, waiting for an operator's retry or cancel.
    waiting_for_operator: bool = False
    last_error: Failure | None = None
    sf_account_id: str | None = None
    order_number: str | None = None
    whmcs_client_id: int | None = None
    whmcs_order_id: int | None = None
    whmcs_invoice_id: int | None = None
    whmcs_service_ids: dict[str, int] = Field(default_factory=dict)
    sims: list[SimActivation] = Field(default_factory=list)


class FulfillmentResult(BaseModel):
    """How a fulfillment ended; `undone` and `not_undone` list what its compensation (cancel,
    a cancellation request, the operator-wait expiry) reversed and could not."""

    model_config = ConfigDict(frozen=True)

    sf_order_id: str
    status: FulfillmentStatus
    error: Failure | None = None
    whmcs_order_id: int | None = None
    whmcs_service_ids: dict[str, int] = Field(default_factory=dict)
    undone: tuple[str, ...] = ()
    not_undone: tuple[str, ...] = ()


class ActivationDecision(StrEnum):
    """What an activation of an order (a trigger event, or reconciliation) does."""

    START = "start"
    START_AFRESH = "start_afresh"
    RETRY_PARKED = "retry_parked"
    IGNORE_RUNNING = "ignore_running"
    IGNORE_FULFILLED = "ignore_fulfilled"
    IGNORE_STALE = "ignore_stale"
    # No run known to Temporal (its retention deleted a closed one), but the read model records
    # the order activated: starting it would bill it again.
    IGNORE_RECORDED_FULFILLED = "ignore_recorded_fulfilled"
    # Activated before FULFILLMENT_CUTOVER_AT: fulfilled before the engine took over.
    IGNORE_BEFORE_CUTOVER = "ignore_before_cutover"


class ExistingFulfillment(BaseModel):
    """The latest fulfillment run of an order, as Temporal describes it."""

    model_config = ConfigDict(frozen=True)

    running: bool
    waiting_for_operator: bool = False
    # How a closed run ended (None while running, or when it ended without a result).
    ended: FulfillmentStatus | None = None
    closed_at: datetime | None = None


def decide_activation(
    existing: ExistingFulfillment | None,
    activated_at: datetime | None,
    *,
    recorded: FulfillmentStatus | None = None,
    cutover: datetime | None = None,
) -> ActivationDecision:
    """The re-activation rules of docs/design.md.

    A parked fulfillment takes a re-activation as a retry; a fulfilled order ignores it; a
    cancelled or expired one starts afresh under the same workflow id, but only for an
    activation committed after that run closed, so replaying an old event (a listener resuming
    from an older cursor) never starts an order again. With no run known to Temporal, an order
    activated before the `cutover` is not the engine's, and one the read model `recorded` as
    activated was fulfilled by a run Temporal has since forgotten: neither is started.
    """
    if existing is None:
        if cutover is not None and activated_at is not None and activated_at < cutover:
            return ActivationDecision.IGNORE_BEFORE_CUTOVER
        if recorded is FulfillmentStatus.ACTIVATED:
            return ActivationDecision.IGNORE_RECORDED_FULFILLED
        return ActivationDecision.START
    if existing.running:
        if existing.waiting_for_operator:
            return ActivationDecision.RETRY_PARKED
        return ActivationDecision.IGNORE_RUNNING
    if existing.ended is FulfillmentStatus.ACTIVATED:
        return ActivationDecision.IGNORE_FULFILLED
    if activated_at is None or existing.closed_at is None or activated_at <= existing.closed_at:
        return ActivationDecision.IGNORE_STALE
    return ActivationDecision.START_AFRESH
