"""The reconciliation workflow: start the fulfillment of every activated order that has none.

Run by the `fulfillment-reconciliation` Temporal Schedule (`cdc_listener.reconciliation`), and
on demand. It reads the orders in the trigger status whose `Activation_Status__c` is not final,
a page at a time in order-number order; the orders no fulfillment has worked on
(`domain.reconciliation.never_fulfilled`) go to an activity that starts the fulfillment of each
one Temporal does not know. Every other order is left alone: a running or parked fulfillment
goes on, a closed one stays closed. Orders Salesforce shows `Activating` go to a third activity,
which records in the read model (and counts, for an alert) those whose fulfillment no longer runs:
a terminated run cannot compensate or report, so this is where operators learn of it. After
`PAGES_PER_RUN` pages it continues as new, so its history stays small however many orders are
unfinished.

Orchestration only: activities are referred to by name (`ReconciliationActivity`). A page
whose activity keeps failing for `_PAGE_BUDGET` fails the run; the schedule's next run starts
again from the first page, so a failure delays reconciliation and loses nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from domain.reconciliation import (
        PAGES_PER_RUN,
        RECONCILIATION_WORKFLOW_TYPE,
        MissingFulfillments,
        ReconciliationActivity,
        ReconciliationInput,
        ReconciliationResult,
        StartedFulfillments,
        StrandedCandidates,
        StrandedFulfillments,
        UnfinishedOrdersPage,
        UnfinishedOrdersQuery,
        maybe_stranded,
        never_fulfilled,
    )

M = TypeVar("M", bound=BaseModel)

# How long one page may keep failing (Salesforce or Temporal unreachable) before the run gives
# up; well above a blip, below the time an operator would wonder why nothing happens.
_PAGE_BUDGET = timedelta(minutes=15)
_SUMMARIES = {
    ReconciliationActivity.READ_UNFINISHED_ORDERS: "read unfinished orders from Salesforce",
    ReconciliationActivity.START_MISSING_FULFILLMENTS: "start the missing fulfillments",
    ReconciliationActivity.RECORD_STRANDED_FULFILLMENTS: "record orders no fulfillment runs for",
}
# Runs started before it never looked for stranded orders.
_REPORT_STRANDED = "report-stranded-fulfillments"


@workflow.defn(name=RECONCILIATION_WORKFLOW_TYPE)
class FulfillmentReconciliation:
    @workflow.run
    async def run(self, input: ReconciliationInput) -> ReconciliationResult:
        result = input.so_far
        after = input.after
        for _ in range(PAGES_PER_RUN):
            page = await _call(
                ReconciliationActivity.READ_UNFINISHED_ORDERS,
                UnfinishedOrdersQuery(after=after, limit=input.batch_size),
                UnfinishedOrdersPage,
            )
            missing = tuple(order.sf_order_id for order in page.orders if never_fulfilled(order))
            starts = StartedFulfillments()
            if missing:
                starts = await _call(
                    ReconciliationActivity.START_MISSING_FULFILLMENTS,
                    MissingFulfillments(sf_order_ids=missing, options=input.options),
                    StartedFulfillments,
                )
            if starts.started:
                workflow.metric_meter().create_counter(
                    "reconciliation_fulfillments_started",
                    "Fulfillments reconciliation started (their activation event was missed)",
                ).add(len(starts.started))
            stranded = await _stranded(page)
            result = result.plus(page, starts, stranded)
            workflow.set_current_details(f"Page {result.pages}: {result.summary()}.")
            if page.next_after is None:
                workflow.logger.info("reconciliation done: %s", result.summary())
                return result
            after = page.next_after
        workflow.continue_as_new(input.model_copy(update={"after": after, "so_far": result}))


async def _stranded(page: UnfinishedOrdersPage) -> StrandedFulfillments | None:
    candidates = tuple(order.sf_order_id for order in page.orders if maybe_stranded(order))
    if not candidates or page.read_at is None or not workflow.patched(_REPORT_STRANDED):
        return None
    stranded = await _call(
        ReconciliationActivity.RECORD_STRANDED_FULFILLMENTS,
        StrandedCandidates(
            sf_order_ids=candidates,
            read_at=page.read_at,
            accounts={
                order.sf_order_id: order.sf_account_id
                for order in page.orders
                if order.sf_order_id in candidates and order.sf_account_id
            },
        ),
        StrandedFulfillments,
    )
    if stranded.stranded:
        # Counted on every pass until an operator acts, so an alert on its increase holds for
        # as long as any order is stranded, whichever worker ran the pass.
        workflow.metric_meter().create_counter(
            "reconciliation_fulfillments_stranded",
            "Orders left Activating with no fulfillment running, seen by a reconciliation pass",
        ).add(len(stranded.stranded))
        workflow.logger.warning(
            "orders left Activating with no fulfillment running: %s",
            ", ".join(stranded.stranded),
        )
    return stranded


async def _call(activity: ReconciliationActivity, arg: BaseModel, result_type: type[M]) -> M:
    result: M = await workflow.execute_activity(
        activity.value,
        arg,
        result_type=result_type,
        start_to_close_timeout=timedelta(minutes=2),
        schedule_to_close_timeout=_PAGE_BUDGET,
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=2),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(minutes=1),
        ),
        summary=_SUMMARIES[activity],
    )
    return result
