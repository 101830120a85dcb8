"""Reconciliation steps: read the unfinished orders from Salesforce, start the fulfillments
that are missing.

A start names the order's workflow id and refuses any id Temporal has seen
(`REJECT_DUPLICATE`), so two reconciliations, or one and the listener, racing on an order start
it once, and a fulfillment that ran and closed is never started again from here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.errors import translated
from clients.salesforce import SalesforceClient
from config.logging import get_logger
from config.settings import Settings
from config.temporal import start_fulfillment
from domain.fulfillment import FulfillmentInput, FulfillmentOptions, Trigger, TriggerSource
from domain.fulfillment import workflow_id as fulfillment_workflow_id
from domain.reconciliation import (
    MissingFulfillments,
    ReconciliationActivity,
    StartedFulfillments,
    UnfinishedOrdersPage,
    UnfinishedOrdersQuery,
)

log = get_logger(__name__)

# The memo key naming the reconciliation run that started a fulfillment (shown in the UI too).
STARTED_BY = "started_by"
# Starts in flight at once: enough to get through a page quickly, few enough for the frontend.
_CONCURRENT_STARTS = 8


class ReconciliationActivities:
    def __init__(self, salesforce: SalesforceClient, settings: Settings) -> None:
        self._sf = salesforce
        self._settings = settings

    @activity.defn(name=ReconciliationActivity.READ_UNFINISHED_ORDERS.value)
    @translated
    async def read_unfinished_orders(self, query: UnfinishedOrdersQuery) -> UnfinishedOrdersPage:
        limit = query.limit or self._settings.reconciliation_batch_size
        orders = await self._sf.unfinished_orders(
            self._settings.sf_trigger_status, after=query.after, limit=limit
        )
        return UnfinishedOrdersPage(
            orders=tuple(orders),
            next_after=orders[-1].order_number if len(orders) >= limit else None,
        )

    @activity.defn(name=ReconciliationActivity.START_MISSING_FULFILLMENTS.value)
    async def start_missing_fulfillments(self, request: MissingFulfillments) -> StartedFulfillments:
        client = activity.client()
        info = activity.info()
        # Names this run, not this attempt: a retry after a lost reply recognises its own starts.
        starter = f"{info.workflow_id}/{info.workflow_run_id}"
        limit = asyncio.Semaphore(_CONCURRENT_STARTS)

        async def start(sf_order_id: str) -> bool:
            async with limit:
                return await self._start(client, sf_order_id, request.options, starter)

        # A task group: one failed start cancels the others, and the retried activity repeats
        # the page, each order still started once.
        async with asyncio.TaskGroup() as group:
            tasks = {
                sf_order_id: group.create_task(start(sf_order_id))
                for sf_order_id in dict.fromkeys(request.sf_order_ids)
            }
        return StartedFulfillments(
            started=tuple(order for order, task in tasks.items() if task.result()),
            already_present=tuple(order for order, task in tasks.items() if not task.result()),
        )

    async def _start(
        self,
        client: Client,
        sf_order_id: str,
        options: FulfillmentOptions | None,
        starter: str,
    ) -> bool:
        """Start the order's fulfillment unless Temporal knows one; whether this run started it."""
        extra: dict[str, Any] = {} if options is None else {"options": options}
        fulfillment = FulfillmentInput(
            sf_order_id=sf_order_id,
            trigger=Trigger(source=TriggerSource.RECONCILIATION),
            **extra,
        )
        try:
            await start_fulfillment(
                client,
                self._settings,
                fulfillment,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                memo={STARTED_BY: starter},
            )
        except WorkflowAlreadyStartedError:
            if await _started_by(client, sf_order_id) != starter:
                return False
            # An earlier attempt of this activity started it and its reply was lost.
        # A warning: every order started here is one whose activation the listener missed.
        log.warning("reconciliation.fulfillment_started", sf_order_id=sf_order_id, run=starter)
        return True


async def _started_by(client: Client, sf_order_id: str) -> str | None:
    described = await client.get_workflow_handle(fulfillment_workflow_id(sf_order_id)).describe()
    starter = await described.memo_value(STARTED_BY, None, type_hint=str)
    return starter if isinstance(starter, str) else None
