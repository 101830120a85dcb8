"""Doubles of the fulfillment activities, under the same names, over in-memory upstreams.

They behave as the real activities promise (a repeated write has one effect; `create_billing_order`
finds an earlier order before adding one) so the workflow tests can test the workflow: order of
steps, parking, retry, cancel, timers. The real activities are tested against the emulators.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.billing import BillingOrder, BillingOrderResult, BillingOrderStatus
from domain.errors import ErrorCode, ErrorKind, Failure, WriteOutcome
from domain.order import (
    Account,
    ActivationStatus,
    Address,
    OrderItem,
    OrderSnapshot,
    Product,
    SimDetails,
)
from domain.rules import resolve_whmcs_client_id
from domain.sim import SimActivation, SimPhase, SimRequest, SimType
from domain.steps import (
    Activity,
    BillingClientQuery,
    BillingClientRef,
    BillingOrderRef,
    CacheInvalidated,
    CacheInvalidation,
    FoundBillingOrder,
    FulfillmentRecord,
    LoadedOrder,
    MarkActivating,
    OperatorAction,
    OrderRef,
    PaymentCheck,
    SimLine,
    SimLineQuery,
    StatusWriteBack,
    SuccessWriteBack,
    Written,
)

ORDER_ID = "801000000000001AAA"
ACCOUNT_ID = "001000000000001AAA"
PHONE = "09012345678"
EID = "89049032000001000000012345678901"


def product(**overrides: Any) -> Product:
    fields: dict[str, Any] = {
        "sf_product_id": "01t000000000001AAA",
        "name": "Fibre 1G",
        "whmcs_product_id": 4,
        "product_type": "Internet",
        "item_class": "Service",
        "billing_cycle": "Monthly",
    }
    return Product(**(fields | overrides))


def internet_order(**overrides: Any) -> OrderSnapshot:
    fields: dict[str, Any] = {
        "sf_order_id": ORDER_ID,
        "order_number": "00000101",
        "sf_account_id": ACCOUNT_ID,
        "status": "Activated",
        "account": Account(
            sf_account_id=ACCOUNT_ID,
            name="Yamada Taro",
            customer_number="CUST-0001",
            whmcs_account_field="1",
        ),
        "billing_address": Address(street="1-2-3 Shibuya", city="Shibuya-ku", postal_code="150"),
        "items": (
            OrderItem(
                sf_order_item_id="802000000000001AAA",
                product=product(),
                quantity=Decimal(1),
                unit_price=Decimal("4980"),
            ),
        ),
    }
    return OrderSnapshot(**(fields | overrides))


def sim_order(**overrides: Any) -> OrderSnapshot:
    sim_product = product(
        name="eSIM 20GB", whmcs_product_id=3, product_type="SIM", freebit_plan_code="PASI_20G"
    )
    fields: dict[str, Any] = {
        "sim": SimDetails(sim_type=SimType.ESIM, eid=EID, phone_number=PHONE),
        "items": (
            OrderItem(
                sf_order_item_id="802000000000002AAA",
                product=sim_product,
                quantity=Decimal(1),
                unit_price=Decimal("2480"),
            ),
        ),
    }
    return internet_order(**(fields | overrides))


def business(code: ErrorCode, message: str) -> ApplicationError:
    failure = Failure(code=code, kind=ErrorKind.BUSINESS, message=message)
    return ApplicationError(
        message, failure.model_dump(mode="json"), type=code.value, non_retryable=True
    )


def transient(message: str = "upstream down") -> ApplicationError:
    return ApplicationError(message, type=ErrorKind.NOT_SENT.value)


@dataclass
class Upstreams:
    """Salesforce, WHMCS, Freebit, Postgres and Redis as the doubles see them."""

    order: OrderSnapshot | None = field(default_factory=internet_order)
    # WHMCS client id -> its pay method types.
    pay_methods: dict[int, list[str]] = field(default_factory=lambda: {1: ["RemoteCreditCard"]})
    whmcs_orders: dict[int, BillingOrderStatus] = field(default_factory=dict)
    whmcs_markers: dict[str, int] = field(default_factory=dict)
    # Freebit lines: phone -> (state, polls until it moves from processing to `outcome`).
    lines: dict[str, SimActivation] = field(default_factory=dict)
    sim_outcome: SimPhase = SimPhase.ACTIVE
    polls_to_activate: int = 2
    # Salesforce's Activation_* fields, in the order written.
    status_writes: list[StatusWriteBack] = field(default_factory=list)
    success_writes: list[SuccessWriteBack] = field(default_factory=list)
    records: list[FulfillmentRecord] = field(default_factory=list)
    # operator_actions rows, by request id (the table's key).
    operator_actions: dict[str, OperatorAction] = field(default_factory=dict)
    invalidations: list[CacheInvalidation] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    # Salesforce refuses the Activating write sent with the read (a validation rule, say).
    refuse_activating: Failure | None = None
    # Activity name -> errors to raise on its next calls, in turn.
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    # create_billing_order: commit in WHMCS, then lose the reply this many times.
    lose_add_order_replies: int = 0
    adds: int = 0
    # validate_payment_method hangs (and sets `held`) until it is cancelled.
    hold_payment_check: bool = False
    held: asyncio.Event = field(default_factory=asyncio.Event)

    def fail(self, activity_name: Activity, *errors: Exception) -> None:
        self.failures.setdefault(activity_name.value, []).extend(errors)

    def _enter(self, name: Activity) -> None:
        self.calls[name.value] += 1
        pending = self.failures.get(name.value)
        if pending:
            raise pending.pop(0)

    def activities(self) -> list[Any]:
        return [
            self.load_order,
            self.load_order_and_mark_activating,
            self.write_back_status,
            self.resolve_billing_client,
            self.validate_payment_method,
            self.create_billing_order,
            self.register_sim,
            self.check_sim,
            self.accept_billing_order,
            self.cancel_billing_order,
            self.find_billing_order,
            self.write_back_success,
            self.invalidate_caches,
            self.record_fulfillment,
            self.record_operator_action,
        ]

    @property
    def salesforce_status(self) -> StatusWriteBack | None:
        return self.status_writes[-1] if self.status_writes else None

    # -- Salesforce ------------------------------------------------------------------------------

    @activity.defn(name=Activity.LOAD_ORDER.value)
    async def load_order(self, request: OrderRef) -> OrderSnapshot:
        self._enter(Activity.LOAD_ORDER)
        if self.order is None or self.order.sf_order_id != request.sf_order_id:
            raise business(ErrorCode.ORDER_NOT_FOUND, "order does not exist")
        return self.order

    @activity.defn(name=Activity.LOAD_ORDER_AND_MARK_ACTIVATING.value)
    async def load_order_and_mark_activating(self, request: MarkActivating) -> LoadedOrder:
        """The read and the Activating write of one Composite call: the write depends on the
        read (an order that does not exist is not written), and a refused write comes back
        with the order."""
        self._enter(Activity.LOAD_ORDER_AND_MARK_ACTIVATING)
        if self.order is None or self.order.sf_order_id != request.sf_order_id:
            raise business(ErrorCode.ORDER_NOT_FOUND, "order does not exist")
        if self.refuse_activating is not None:
            return LoadedOrder(order=self.order, refused=self.refuse_activating)
        self.status_writes.append(
            StatusWriteBack(
                sf_order_id=request.sf_order_id,
                status=ActivationStatus.ACTIVATING,
                attempted_at=request.attempted_at,
            )
        )
        return LoadedOrder(order=self.order, activating=WriteOutcome.APPLIED)

    @activity.defn(name=Activity.WRITE_BACK_STATUS.value)
    async def write_back_status(self, request: StatusWriteBack) -> Written:
        self._enter(Activity.WRITE_BACK_STATUS)
        self.status_writes.append(request)
        return Written(outcome=WriteOutcome.APPLIED)

    @activity.defn(name=Activity.WRITE_BACK_SUCCESS.value)
    async def write_back_success(self, request: SuccessWriteBack) -> Written:
        self._enter(Activity.WRITE_BACK_SUCCESS)
        self.success_writes.append(request)
        return Written(outcome=WriteOutcome.APPLIED)

    # -- WHMCS -----------------------------------------------------------------------------------

    @activity.defn(name=Activity.RESOLVE_BILLING_CLIENT.value)
    async def resolve_billing_client(self, request: BillingClientQuery) -> BillingClientRef:
        self._enter(Activity.RESOLVE_BILLING_CLIENT)
        from domain.errors import OrderRejected

        try:
            client_id = resolve_whmcs_client_id(None, request.account)
        except OrderRejected as rejected:
            raise business(rejected.code, rejected.message) from None
        return BillingClientRef(whmcs_client_id=client_id)

    @activity.defn(name=Activity.VALIDATE_PAYMENT_METHOD.value)
    async def validate_payment_method(self, request: BillingClientRef) -> PaymentCheck:
        self._enter(Activity.VALIDATE_PAYMENT_METHOD)
        if self.hold_payment_check:
            # A call that does not come back, until the activity is cancelled (it hears of
            # that at a heartbeat, as the real ones do).
            self.held.set()
            while True:
                activity.heartbeat()
                await asyncio.sleep(0.1)
        methods = self.pay_methods.get(request.whmcs_client_id, [])
        if not methods:
            raise business(ErrorCode.PAYMENT_METHOD_MISSING, "no payment method")
        return PaymentCheck(gateway="stripe", method_types=tuple(methods))

    @activity.defn(name=Activity.CREATE_BILLING_ORDER.value)
    async def create_billing_order(self, order: BillingOrder) -> BillingOrderResult:
        self._enter(Activity.CREATE_BILLING_ORDER)
        marker = order.lines[0].sf_order_item_id
        existing = self.whmcs_markers.get(marker)
        if existing is None or self.whmcs_orders[existing] is BillingOrderStatus.CANCELLED:
            self.adds += 1
            existing = 100 + self.adds
            self.whmcs_orders[existing] = BillingOrderStatus.PENDING
            self.whmcs_markers[marker] = existing
            if self.lose_add_order_replies > 0:
                self.lose_add_order_replies -= 1
                raise ApplicationError("reply lost", type=ErrorKind.OUTCOME_UNKNOWN.value)
        return BillingOrderResult(
            whmcs_order_id=existing,
            whmcs_invoice_id=900 + existing,
            status=self.whmcs_orders[existing],
            service_ids={
                line.sf_order_item_id: existing * 10 + i for i, line in enumerate(order.lines)
            },
        )

    @activity.defn(name=Activity.ACCEPT_BILLING_ORDER.value)
    async def accept_billing_order(self, request: BillingOrderRef) -> Written:
        self._enter(Activity.ACCEPT_BILLING_ORDER)
        already = self.whmcs_orders[request.whmcs_order_id] is BillingOrderStatus.ACTIVE
        self.whmcs_orders[request.whmcs_order_id] = BillingOrderStatus.ACTIVE
        return Written(outcome=WriteOutcome.ALREADY_DONE if already else WriteOutcome.APPLIED)

    @activity.defn(name=Activity.CANCEL_BILLING_ORDER.value)
    async def cancel_billing_order(self, request: BillingOrderRef) -> Written:
        self._enter(Activity.CANCEL_BILLING_ORDER)
        if self.whmcs_orders[request.whmcs_order_id] is BillingOrderStatus.ACTIVE:
            raise business(ErrorCode.BILLING_ORDER_REJECTED, "order is Active")
        self.whmcs_orders[request.whmcs_order_id] = BillingOrderStatus.CANCELLED
        return Written(outcome=WriteOutcome.APPLIED)

    @activity.defn(name=Activity.FIND_BILLING_ORDER.value)
    async def find_billing_order(self, order: BillingOrder) -> FoundBillingOrder:
        self._enter(Activity.FIND_BILLING_ORDER)
        existing = self.whmcs_markers.get(order.lines[0].sf_order_item_id)
        if existing is None or self.whmcs_orders[existing] is BillingOrderStatus.CANCELLED:
            return FoundBillingOrder()
        return FoundBillingOrder(
            order=BillingOrderResult(whmcs_order_id=existing, status=self.whmcs_orders[existing])
        )

    # -- Freebit ---------------------------------------------------------------------------------

    @activity.defn(name=Activity.REGISTER_SIM.value)
    async def register_sim(self, request: SimRequest) -> Written:
        self._enter(Activity.REGISTER_SIM)
        if request.phone_number in self.lines:
            return Written(outcome=WriteOutcome.ALREADY_DONE)
        self.lines[request.phone_number] = SimActivation(
            phone_number=request.phone_number,
            phase=SimPhase.IN_PROGRESS,
            state="processing",
            sim_type=request.sim_type,
        )
        return Written(outcome=WriteOutcome.APPLIED)

    @activity.defn(name=Activity.CHECK_SIM.value)
    async def check_sim(self, request: SimLineQuery) -> SimLine:
        self._enter(Activity.CHECK_SIM)
        line = self.lines.get(request.phone_number)
        if line is not None and line.phase is SimPhase.IN_PROGRESS:
            if self.polls_to_activate <= 1 and self.sim_outcome is not SimPhase.IN_PROGRESS:
                line = line.model_copy(
                    update={
                        "phase": self.sim_outcome,
                        "state": self.sim_outcome.value,
                        "fail_reason": "rejected" if self.sim_outcome is SimPhase.FAILED else None,
                    }
                )
                self.lines[request.phone_number] = line
            self.polls_to_activate -= 1
        return SimLine(line=line)

    # -- Postgres and Redis ----------------------------------------------------------------------

    @activity.defn(name=Activity.INVALIDATE_CACHES.value)
    async def invalidate_caches(self, request: CacheInvalidation) -> CacheInvalidated:
        self._enter(Activity.INVALIDATE_CACHES)
        self.invalidations.append(request)
        return CacheInvalidated(keys=2)

    @activity.defn(name=Activity.RECORD_FULFILLMENT.value)
    async def record_fulfillment(self, record: FulfillmentRecord) -> Written:
        self._enter(Activity.RECORD_FULFILLMENT)
        stored = self.records[-1] if self.records else None
        if stored is not None and stored.version >= record.version:
            return Written(outcome=WriteOutcome.ALREADY_DONE)
        self.records.append(record)
        return Written(outcome=WriteOutcome.APPLIED)

    @activity.defn(name=Activity.RECORD_OPERATOR_ACTION.value)
    async def record_operator_action(self, action: OperatorAction) -> Written:
        self._enter(Activity.RECORD_OPERATOR_ACTION)
        if action.request_id in self.operator_actions:
            return Written(outcome=WriteOutcome.ALREADY_DONE)
        self.operator_actions[action.request_id] = action
        return Written(outcome=WriteOutcome.APPLIED)


TODAY = date(2026, 11, 27)
