"""WHMCS steps: find the billing client, check its payment method, create the order exactly
once, accept it, cancel it."""

from __future__ import annotations

from temporalio import activity

from activities.errors import translated
from clients.errors import ErrorCode, OutcomeUnknownError
from clients.fulfillment_store import FulfillmentStore
from clients.whmcs import WhmcsClient
from config.logging import get_logger
from domain.billing import BillingOrder, BillingOrderResult
from domain.errors import OrderRejected
from domain.rules import has_payment_method, payment_gateway, resolve_whmcs_client_id
from domain.steps import (
    Activity,
    BillingClientQuery,
    BillingClientRef,
    BillingOrderRef,
    PaymentCheck,
    Written,
)

log = get_logger(__name__)


class BillingActivities:
    def __init__(self, whmcs: WhmcsClient, store: FulfillmentStore, default_gateway: str) -> None:
        self._whmcs = whmcs
        self._store = store
        self._default_gateway = default_gateway

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
        """One WHMCS order per Salesforce order, whatever is repeated.

        Under a per-order lock (two attempts never interleave): record the intent; if an
        earlier attempt recorded one, look for the order it may have made (WHMCS keeps each
        service's Salesforce item id in its marker field); only if there is none, AddOrder. The
        first attempt skips the lookup: it reads every service of the client, a cost that grows
        with the client's history, and no order can exist yet. A lost reply to AddOrder is
        followed by the same lookup: the order WHMCS made is taken, and only an order that was
        never made is left for the next attempt to make.
        """
        async with self._store.billing_lock(order.sf_order_id) as record:
            earlier = await record.intent(order.whmcs_client_id)
            result = await self._whmcs.find_billing_order(order) if earlier else None
            if result is not None:
                log.info(
                    "billing.order_found",
                    sf_order_id=order.sf_order_id,
                    whmcs_order_id=result.whmcs_order_id,
                )
            else:
                result = await self._add_order(order)
            await record.result(result)
            return result

    async def _add_order(self, order: BillingOrder) -> BillingOrderResult:
        try:
            return await self._whmcs.add_order(order)
        except OutcomeUnknownError:
            found = await self._whmcs.find_billing_order(order)
            if found is None:
                raise
            log.info(
                "billing.order_made_despite_lost_reply",
                sf_order_id=order.sf_order_id,
                whmcs_order_id=found.whmcs_order_id,
            )
            return found

    @activity.defn(name=Activity.ACCEPT_BILLING_ORDER.value)
    @translated
    async def accept_billing_order(self, request: BillingOrderRef) -> Written:
        return Written(outcome=await self._whmcs.accept_order(request.whmcs_order_id))

    @activity.defn(name=Activity.CANCEL_BILLING_ORDER.value)
    @translated
    async def cancel_billing_order(self, request: BillingOrderRef) -> Written:
        return Written(outcome=await self._whmcs.cancel_order(request.whmcs_order_id))
