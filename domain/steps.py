"""The contracts between the fulfillment workflow and its activities.

The workflow refers to activities by these names (it must not import their implementations) and
passes these models; the worker registers implementations under the same names. Inputs carry
ids and the values a step needs, results what the workflow keeps.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from domain.billing import BillingOrderResult
from domain.errors import ErrorCode, Failure, WriteOutcome
from domain.fulfillment import FulfillmentStatus, Step
from domain.order import Account, ActivationStatus, OrderSnapshot
from domain.sim import SimActivation


class Activity(StrEnum):
    """Activity type names, as registered by the worker."""

    LOAD_ORDER = "load_order"
    # The order read and the Activating write in one Salesforce call (patch
    # "load-and-mark-activating"; LOAD_ORDER then WRITE_BACK_STATUS before it).
    LOAD_ORDER_AND_MARK_ACTIVATING = "load_order_and_mark_activating"
    WRITE_BACK_STATUS = "write_back_status"
    RESOLVE_BILLING_CLIENT = "resolve_billing_client"
    VALIDATE_PAYMENT_METHOD = "validate_payment_method"
    CREATE_BILLING_ORDER = "create_billing_order"
    REGISTER_SIM = "register_sim"
    CHECK_SIM = "check_sim"
    ACCEPT_BILLING_ORDER = "accept_billing_order"
    CANCEL_BILLING_ORDER = "cancel_billing_order"
    FIND_BILLING_ORDER = "find_billing_order"
    WRITE_BACK_SUCCESS = "write_back_success"
    INVALIDATE_CACHES = "invalidate_caches"
    RECORD_FULFILLMENT = "record_fulfillment"
    RECORD_OPERATOR_ACTION = "record_operator_action"


class StepModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class OrderRef(StepModel):
    sf_order_id: str


class StatusWriteBack(StepModel):
    """`Activation_Status__c` and the error fields (None clears them)."""

    sf_order_id: str
    status: ActivationStatus
    attempted_at: datetime
    error_code: ErrorCode | None = None
    error_message: str | None = None


class MarkActivating(StepModel):
    """Read the order and mark it Activating (the error fields cleared) in one call."""

    sf_order_id: str
    attempted_at: datetime


class LoadedOrder(StepModel):
    """The order as read, and the Activating write sent with the read: its outcome, or the
    business error that refused it (`refused`; the workflow parks with it once the order's
    own checks have passed, as a refused MARK_ACTIVATING step did)."""

    order: OrderSnapshot
    activating: WriteOutcome | None = None
    refused: Failure | None = None


class BillingClientQuery(StepModel):
    sf_account_id: str
    account: Account | None = None


class BillingClientRef(StepModel):
    whmcs_client_id: int


class PaymentCheck(StepModel):
    """The gateway AddOrder will name, and the kinds of method the client holds."""

    gateway: str
    method_types: tuple[str, ...]


class BillingOrderRef(StepModel):
    whmcs_order_id: int


class SimLineQuery(StepModel):
    phone_number: str


class SimLine(StepModel):
    line: SimActivation | None = None


class SuccessWriteBack(StepModel):
    sf_order_id: str
    attempted_at: datetime
    whmcs_order_id: int
    # Salesforce order item id -> WHMCS service id.
    service_ids: dict[str, int] = Field(default_factory=dict)


class CacheInvalidation(StepModel):
    """What changed: the order (always), its account's list, and the WHMCS client's data."""

    sf_order_id: str
    sf_account_id: str | None = None
    whmcs_client_id: int | None = None
    reason: str


class CacheInvalidated(StepModel):
    keys: int
    # Redis was down: the keys wait in the outbox and are retried, never dropped.
    deferred: bool = False


class FulfillmentRecord(StepModel):
    """One row of the `fulfillments` read model; `version` orders writes (newer wins)."""

    sf_order_id: str
    sf_account_id: str | None = None
    workflow_id: str
    status: FulfillmentStatus
    step: Step | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None
    whmcs_order_id: int | None = None
    whmcs_invoice_id: int | None = None
    whmcs_service_ids: tuple[int, ...] = ()
    attempts: int = 1
    version: int = Field(ge=0)


class Written(StepModel):
    outcome: WriteOutcome


class OperatorAction(StepModel):
    """An operator's decision the workflow accepted from a signal, for `operator_actions` (the
    API and the CLI record their own, sent as updates, before they send them)."""

    request_id: str
    sf_order_id: str
    action: str
    reason: str
    requested_by: str


class FoundBillingOrder(StepModel):
    """The WHMCS order made for a Salesforce order, as compensation looks for it (None: none,
    or only cancelled ones)."""

    order: BillingOrderResult | None = None
