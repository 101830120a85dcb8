"""WHMCS steps: find the billing client, check its payment method, create the order exactly
once, accept it, cancel it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import activity

from activities.errors import translated
from activities.heartbeat import remember, remembered
from clients.errors import (
    ClientError,
    ErrorCode,
    OutcomeUnknownError,
    System,
    UnrecognisedError,
)
from clients.fulfillment_store import BillingRecord, FulfillmentStore
from clients.whmcs import WhmcsClient
from config.logging import get_logger
from domain.billing import BillingOrder, BillingOrderResult, BillingOrderStatus
from domain.errors import OrderRejected
from domain.rules import has_payment_method, payment_gateway, resolve_whmcs_client_id
from domain.steps import (
    Activity,
    BillingClientQuery,
    BillingClientRef,
    BillingOrderRef,
    FoundBillingOrder,
    PaymentCheck,
    Written,
)

log = get_logger(__name__)

# WHMCS orders with nothing left to undo.
_DEAD = (BillingOrderStatus.CANCELLED, BillingOrderStatus.FRAUD)
# The heartbeat detail that remembers, in Temporal, when this activity last sent AddOrder.
_SENT_AT = "add_order_sent_at"


def _remembered_send() -> datetime | None:
    value = remembered(_SENT_AT)
    return datetime.fromisoformat(value) if isinstance(value, str) else None


class BillingActivities:
    def __init__(
        self,
        whmcs: WhmcsClient,
        store: FulfillmentStore,
        default_gateway: str,
        *,
        settle: timedelta = timedelta(seconds=120),
    ) -> None:
        self._whmcs = whmcs
        self._store = store
        self._default_gateway = default_gateway
        self._settle = settle

    @activity.defn(name=Activity.RESOLVE_BILLING_CLIENT.value)
    @translated
    async def resolve_billing_client(self, request: BillingClientQuery) -> BillingClientRef:
        """The portal's id mapping first, else `Account.WH_Account__c`; then WHMCS must know it."""
        mapped = (
            await self._store.mapped_whmcs_client(request.sf_account_id)
            if request.sf_account_id
            else None
        )
        client_id = resolve_whmcs_client_id(mapped, request.account)
        await self._whmcs.get_client(client_id)
        return BillingClientRef(whmcs_client_id=client_id)

    @activity.defn(name=Activity.VALIDATE_PAYMENT_METHOD.value)
    @translated
    async def validate_payment_method(self, request: BillingClientRef) -> PaymentCheck:
        methods = await self._whmcs.get_pay_methods(request.whmcs_client_id)
        if not has_payment_method(methods):
            raise OrderRejected(
                ErrorCode.PAYMENT_METHOD_MISSING,
                f"WHMCS client {request.whmcs_client_id} has no payment method",
            )
        return PaymentCheck(
            gateway=payment_gateway(methods, self._default_gateway),
            method_types=tuple(method.type for method in methods),
        )

    @activity.defn(name=Activity.CREATE_BILLING_ORDER.value)
    @translated
    async def create_billing_order(self, order: BillingOrder) -> BillingOrderResult:
        """One WHMCS order per Salesforce order, whatever is repeated, lost or restored.

        Under a per-order lock (two attempts never interleave), every attempt looks in WHMCS
        for the order before AddOrder, by the marker each service carries: our own records are
        no proof that none was sent (a restored or failed-over Postgres forgets rows). The look
        is by each line's marker as the service's domain (one call per line); it also reads the
        client's services of the order's products (`thorough`, a cost that grows with the
        client's history) when anything says an attempt ran before this one: the attempt
        number, the heartbeat details, an intent row, or the workflow. A first attempt looks
        by domain only: every order this release makes carries them, and one an older release
        made can only exist when an attempt ran before (then the look is thorough). A miss
        is not proof either while an AddOrder sent earlier may still commit (WHMCS runs hooks
        inside the request and keeps going after we hang up): inside `settle` of the last send
        the attempt fails as transient and looks again shortly after, never sending twice. The
        send is remembered in two places that fail apart, Postgres (`sent_at`) and Temporal
        (the heartbeat details, and the attempt number when Postgres lost the intent).
        """
        info = activity.info()
        async with self._store.billing_lock(order.sf_order_id) as record:
            intent = await record.intent(order.whmcs_client_id)
            earlier = (
                order.earlier_attempt
                or info.attempt > 1
                or intent.existed
                or _remembered_send() is not None
            )
            result = await self._whmcs.find_billing_order(order, thorough=earlier)
            if result is not None:
                log.info(
                    "billing.order_found",
                    sf_order_id=order.sf_order_id,
                    whmcs_order_id=result.whmcs_order_id,
                )
            else:
                sent = [intent.sent_at, _remembered_send()]
                if not intent.existed and info.attempt > 1:
                    # An earlier attempt ran, yet Postgres holds no intent: the rows were lost
                    # (or that attempt never reached Postgres). It may have sent AddOrder, at
                    # the latest when this attempt was scheduled.
                    sent.append(info.current_attempt_scheduled_time)
                self._wait_if_settling(max((at for at in sent if at), default=None))
                result = await self._add_order(order, record)
            await record.result(result)
            return result

    async def _add_order(self, order: BillingOrder, record: BillingRecord) -> BillingOrderResult:
        sent_at = datetime.now(UTC)
        await record.sending(sent_at)
        remember(_SENT_AT, sent_at.isoformat())
        try:
            return await self._whmcs.add_order(order)
        except OutcomeUnknownError:
            # What this attempt sent carries its domains: one call per line finds it.
            found = await self._whmcs.find_billing_order(order, thorough=False)
            if found is None:
                self._wait_if_settling(sent_at)
                raise
            log.info(
                "billing.order_made_despite_lost_reply",
                sf_order_id=order.sf_order_id,
                whmcs_order_id=found.whmcs_order_id,
            )
            return found
        except UnrecognisedError:
            # An error reply no table knows: it may have come after part of the work.
            raise
        except ClientError:
            # Refused, or never sent: nothing can commit late, so the next attempt need not wait.
            await record.sending(None)
            remember(_SENT_AT, None)
            raise

    def _wait_if_settling(self, sent_at: datetime | None) -> None:
        """Raise (transient, with a short retry delay) while an AddOrder sent at `sent_at` may
        still commit; the next attempt looks again, and a find ends the wait at once."""
        if sent_at is None:
            return
        remaining = (sent_at + self._settle - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            return
        log.info("billing.add_order_settling", remaining_seconds=round(remaining, 1))
        poll = max(1.0, self._settle.total_seconds() / 12)
        raise OutcomeUnknownError(
            System.WHMCS,
            "an AddOrder sent earlier may still be committing; looking again before resending",
            detail=f"sent {sent_at:%H:%M:%S} UTC, window {self._settle.total_seconds():g} s",
            retry_after=min(remaining, poll) + 0.1,
        )

    @activity.defn(name=Activity.FIND_BILLING_ORDER.value)
    @translated
    async def find_billing_order(self, order: BillingOrder) -> FoundBillingOrder:
        """The WHMCS order to undo when a fulfillment ends without it in its own state (parked
        with the outcome of AddOrder unknown, say): the one an attempt recorded, else the one
        the markers find. Cancelled or fraud orders are not returned: nothing to undo."""
        recorded = await self._store.billed_order(order.sf_order_id)
        if recorded is not None:
            status = await self._whmcs.order_status(recorded)
            if status is not None and status not in _DEAD:
                return FoundBillingOrder(
                    order=BillingOrderResult(whmcs_order_id=recorded, status=status)
                )
        return FoundBillingOrder(order=await self._whmcs.find_billing_order(order))

    @activity.defn(name=Activity.ACCEPT_BILLING_ORDER.value)
    @translated
    async def accept_billing_order(self, request: BillingOrderRef) -> Written:
        return Written(outcome=await self._whmcs.accept_order(request.whmcs_order_id))

    @activity.defn(name=Activity.CANCEL_BILLING_ORDER.value)
    @translated
    async def cancel_billing_order(self, request: BillingOrderRef) -> Written:
        return Written(outcome=await self._whmcs.cancel_order(request.whmcs_order_id))
