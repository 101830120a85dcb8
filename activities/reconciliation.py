"""Reconciliation steps: read the unfinished orders from Salesforce, start the fulfillments
that are missing, record the ones left `Activating` with none running.

Each missing fulfillment is started by `usecases.reconciliation.start_missing_fulfillment`, the
way an operator's pass starts one: a start names the order's workflow id and refuses any id
Temporal has seen, so two reconciliations, or one and the listener, racing on an order start it
once, and a fulfillment that ran and closed is never started again from here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.errors import translated
from clients.cache import CacheInvalidator, CacheUnavailableError
from clients.fulfillment_store import FulfillmentStore
from clients.salesforce import SalesforceClient
from config.logging import get_logger
from config.settings import Settings
from domain.fulfillment import FulfillmentOptions, read_model_version
from domain.fulfillment import workflow_id as fulfillment_workflow_id
from domain.reconciliation import (
    MissingFulfillments,
    ReconciliationActivity,
    StartedFulfillments,
    StrandedCandidates,
    StrandedFulfillments,
    UnfinishedOrdersPage,
    UnfinishedOrdersQuery,
)
from usecases.reconciliation import Outcome, start_missing_fulfillment

log = get_logger(__name__)

# Starts in flight at once: enough to get through a page quickly, few enough for the frontend.
_CONCURRENT_STARTS = 8


class ReconciliationActivities:
    def __init__(
        self,
        salesforce: SalesforceClient,
        settings: Settings,
        store: FulfillmentStore,
        cache: CacheInvalidator,
    ) -> None:
        self._sf = salesforce
        self._settings = settings
        self._store = store
        self._cache = cache

    @activity.defn(name=ReconciliationActivity.READ_UNFINISHED_ORDERS.value)
    @translated
    async def read_unfinished_orders(self, query: UnfinishedOrdersQuery) -> UnfinishedOrdersPage:
        limit = query.limit or self._settings.reconciliation_batch_size
        read_at = datetime.now(UTC)
        window = self._settings.activation_window(read_at)
        orders = await self._sf.unfinished_orders(
            self._settings.sf_trigger_status,
            after=query.after,
            limit=limit,
            activated_from=window.start,
            activated_until=window.end,
        )
        return UnfinishedOrdersPage(
            orders=tuple(orders),
            next_after=orders[-1].order_number if len(orders) >= limit else None,
            read_at=read_at,
        )

    @activity.defn(name=ReconciliationActivity.RECORD_STRANDED_FULFILLMENTS.value)
    @translated
    async def record_stranded_fulfillments(
        self, candidates: StrandedCandidates
    ) -> StrandedFulfillments:
        """Record in the read model each order no fulfillment runs for; never start one.

        Judged against Temporal now and Salesforce at `read_at`: an order whose run closed after
        Salesforce was read may have written its last status since, and is left to the next pass.
        """
        client = activity.client()
        stranded: list[str] = []
        recorded: list[str] = []
        for sf_order_id in dict.fromkeys(candidates.sf_order_ids):
            ended = await _ended_run(client, sf_order_id, candidates.read_at)
            if ended is None:
                continue
            stranded.append(sf_order_id)
            account = candidates.accounts.get(sf_order_id)
            if await self._record(sf_order_id, ended, candidates.read_at, account):
                recorded.append(sf_order_id)
        return StrandedFulfillments(stranded=tuple(stranded), newly_recorded=tuple(recorded))

    async def _record(
        self, sf_order_id: str, ended: _EndedRun, read_at: datetime, account: str | None
    ) -> bool:
        # Outranks every write of the ended run (all made by its close), and loses to a new run
        # started after it; a run Temporal no longer knows closed long before Salesforce was read.
        version = (
            read_model_version(ended.closed_at + _ONE_MS) - 1
            if ended.closed_at
            else read_model_version(read_at)
        )
        recorded = await self._store.record_stranded(
            sf_order_id, fulfillment_workflow_id(sf_order_id), ended.message(), version, account
        )
        if recorded is None:
            return False
        account = recorded
        log.error(
            "reconciliation.fulfillment_stranded",
            sf_order_id=sf_order_id,
            ended=ended.status,
            closed_at=ended.closed_at.isoformat() if ended.closed_at else None,
        )
        keys = self._cache.keys.for_order(sf_order_id, account or None)
        try:
            await self._cache.delete(keys)
        except CacheUnavailableError as down:
            # The portal's view of the order says "activating" a little longer; the keys wait
            # in the outbox like every other invalidation Redis refused.
            await self._store.defer_invalidation(keys, "stranded fulfillment")
            log.warning("cache.invalidation_deferred", sf_order_id=sf_order_id, error=str(down))
        return True

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
        """Whether this run started the order's fulfillment (`start_missing_fulfillment`)."""
        judged = await start_missing_fulfillment(
            client, self._settings, self._store, sf_order_id, starter=starter, options=options
        )
        return judged.outcome is Outcome.STARTED


_ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class _EndedRun:
    """How the latest run of an order that Salesforce shows `Activating` ended."""

    status: str
    # None: Temporal no longer knows the run.
    closed_at: datetime | None

    def message(self) -> str:
        if self.closed_at is None:
            how = (
                "Temporal no longer knows its fulfillment (deleted after the namespace's retention)"
            )
        else:
            ended = self.status.lower().replace("_", " ")
            how = f"its fulfillment ended {ended} at {self.closed_at:%Y-%m-%d %H:%M:%S} UTC"
        return (
            f"Salesforce shows the order Activating, but {how}: nothing was undone and nothing "
            "will continue it. Check WHMCS and Freebit for what it did, then re-activate the "
            "order in Salesforce to run it again, or cancel it there."
        )


async def _ended_run(client: Client, sf_order_id: str, read_at: datetime) -> _EndedRun | None:
    """How the order's fulfillment ended, if none runs and it closed before `read_at`."""
    try:
        described = await client.get_workflow_handle(
            fulfillment_workflow_id(sf_order_id)
        ).describe()
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
        return _EndedRun("gone", None)
    status = described.status
    if status in (None, WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW):
        return None
    closed_at = described.close_time
    if closed_at is None or closed_at >= read_at:
        return None
    return _EndedRun(status.name, closed_at)
