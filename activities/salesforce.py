"""Salesforce steps: read the order snapshot, write the engine's status fields back."""

from __future__ import annotations

from temporalio import activity

from activities.errors import translated
from clients.errors import OutcomeUnknownError
from clients.salesforce import ActivationUpdate, SalesforceClient
from domain.errors import WriteOutcome
from domain.order import ActivationStatus, OrderSnapshot
from domain.steps import Activity, OrderRef, StatusWriteBack, SuccessWriteBack, Written


class SalesforceActivities:
    def __init__(self, salesforce: SalesforceClient) -> None:
        self._sf = salesforce

    @activity.defn(name=Activity.LOAD_ORDER.value)
    @translated
    async def load_order(self, request: OrderRef) -> OrderSnapshot:
        return await self._sf.read_order(request.sf_order_id)

    @activity.defn(name=Activity.WRITE_BACK_STATUS.value)
    @translated
    async def write_back_status(self, request: StatusWriteBack) -> Written:
        update = ActivationUpdate(
            status=request.status,
            error_code=request.error_code,
            error_message=request.error_message,
            attempted_at=request.attempted_at,
        )
        return Written(outcome=await self._write(request.sf_order_id, update))

    @activity.defn(name=Activity.WRITE_BACK_SUCCESS.value)
    @translated
    async def write_back_success(self, request: SuccessWriteBack) -> Written:
        update = ActivationUpdate(
            status=ActivationStatus.ACTIVATED,
            attempted_at=request.attempted_at,
            whmcs_order_id=str(request.whmcs_order_id),
        )
        services = {item: str(service) for item, service in request.service_ids.items()}
        return Written(outcome=await self._write(request.sf_order_id, update, services))

    async def _write(
        self, sf_order_id: str, update: ActivationUpdate, services: dict[str, str] | None = None
    ) -> WriteOutcome:
        try:
            return await self._sf.update_activation(sf_order_id, update, item_service_ids=services)
        except OutcomeUnknownError:
            # The reply was lost: if the values are there, the write took effect.
            if await self._sf.activation_applied(sf_order_id, update, services):
                return WriteOutcome.ALREADY_DONE
            raise
