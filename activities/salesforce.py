"""Salesforce steps: read the order snapshot, write the engine's status fields back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio import activity

from activities.errors import translated
from clients.errors import OutcomeUnknownError
from clients.salesforce import ActivationUpdate, SalesforceClient
from config.logging import get_logger
from domain.errors import WriteOutcome
from domain.order import ActivationStatus, OrderSnapshot
from domain.steps import (
    Activity,
    LoadedOrder,
    MarkActivating,
    OrderRef,
    StatusWriteBack,
    SuccessWriteBack,
    Written,
)

log = get_logger(__name__)


class SalesforceActivities:
    def __init__(
        self, salesforce: SalesforceClient, *, settle: timedelta = timedelta(seconds=120)
    ) -> None:
        self._sf = salesforce
        self._settle = settle

    @activity.defn(name=Activity.LOAD_ORDER.value)
    @translated
    async def load_order(self, request: OrderRef) -> OrderSnapshot:
        return await self._sf.read_order(request.sf_order_id)

    @activity.defn(name=Activity.LOAD_ORDER_AND_MARK_ACTIVATING.value)
    @translated
    async def load_order_and_mark_activating(self, request: MarkActivating) -> LoadedOrder:
        """The order snapshot, and the order marked Activating, in one Salesforce call.

        A business refusal of the write (a validation rule, say) comes back with the snapshot,
        for the workflow to park with once the order's own checks passed; any other failure
        raises and the whole call is repeated: the read is free to repeat and the write sends
        the same values. A repeat waits first, as every status write-back's does, so that no
        earlier attempt's Activating can land after the status the workflow writes next.
        """
        await self._after_earlier_attempts_landed()
        update = ActivationUpdate(
            status=ActivationStatus.ACTIVATING, attempted_at=request.attempted_at
        )
        marked = await self._sf.read_order_and_mark(request.sf_order_id, update)
        return LoadedOrder(
            order=marked.order,
            activating=marked.outcome,
            refused=marked.refused.to_failure() if marked.refused is not None else None,
        )

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
        await self._after_earlier_attempts_landed()
        try:
            return await self._sf.update_activation(sf_order_id, update, item_service_ids=services)
        except OutcomeUnknownError:
            # The reply was lost: if the values are there, the write took effect.
            if await self._sf.activation_applied(sf_order_id, update, services):
                return WriteOutcome.ALREADY_DONE
            raise

    async def _after_earlier_attempts_landed(self) -> None:
        """On a repeat, wait until a write of an earlier attempt can no longer land.

        A status write is safe to repeat (same values), but not to overtake: an earlier
        attempt's request that Salesforce is still working on (a slow trigger or flow) could
        land after the workflow's next, newer status and put the older one back. Earlier
        attempts were all sent before this one was scheduled, so once `settle` has passed
        since then, none can land any more; the workflow moves on only after this write, so
        no older status ever lands after a newer one. Only repeats wait (a failed write is rare),
        heartbeating meanwhile.
        """
        if not activity.in_activity():
            return
        info = activity.info()
        if info.attempt <= 1:
            return
        remaining = info.current_attempt_scheduled_time + self._settle - datetime.now(UTC)
        if remaining > timedelta(0):
            log.info(
                "salesforce.write_waits_for_earlier_attempts",
                seconds=round(remaining.total_seconds(), 1),
            )
            await asyncio.sleep(remaining.total_seconds())
