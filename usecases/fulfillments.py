"""Starting and activating an order's fulfillment, as the listener, the API, the CLI and
reconciliation all do: one workflow id per order, one set of start options, one activation rule
(`domain.fulfillment.decide_activation`) carried out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from config.settings import Settings
from domain.fulfillment import (
    WORKFLOW_TYPE,
    ActivationDecision,
    ExistingFulfillment,
    FulfillmentInput,
    FulfillmentProgress,
    FulfillmentResult,
    FulfillmentStatus,
    OperatorRequest,
    SearchAttribute,
    decide_activation,
    workflow_id,
)
from domain.messages import PROGRESS_QUERY, RETRY_SIGNAL


async def start_fulfillment(
    client: Client,
    settings: Settings,
    fulfillment: FulfillmentInput,
    **overrides: Any,
) -> WorkflowHandle[Any, FulfillmentResult]:
    """Start the fulfillment of one order, as the listener, the API and the CLI do.

    The id is the order's (`order-fulfillment-<id>`), so a second start of a running or
    completed fulfillment is refused by Temporal (`WorkflowAlreadyStartedError`); `overrides`
    go to `Client.start_workflow` (an id reuse or conflict policy, a start delay).
    """
    return await client.start_workflow(
        WORKFLOW_TYPE,
        fulfillment,
        id=workflow_id(fulfillment.sf_order_id),
        task_queue=settings.temporal_task_queue,
        static_summary=fulfillment.summary(),
        static_details=fulfillment.details(),
        result_type=FulfillmentResult,
        search_attributes=start_search_attributes(fulfillment.sf_order_id),
        **overrides,
    )


def start_search_attributes(sf_order_id: str) -> TypedSearchAttributes:
    """What a fulfillment is started with: searchable by its order from its first moment, and
    one search-attribute upsert fewer per order (the workflow leaves out what these set)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(
                SearchAttributeKey.for_keyword(SearchAttribute.SALESFORCE_ORDER_ID), sf_order_id
            ),
            SearchAttributePair(
                SearchAttributeKey.for_keyword(SearchAttribute.FULFILLMENT_STATUS),
                FulfillmentStatus.PENDING.value,
            ),
        ]
    )


# The memo key naming who started a fulfillment on reconciliation's behalf (a reconciliation run,
# or `fulfillment reconcile`; shown in the UI too).
STARTED_BY = "started_by"


async def start_unless_known(
    client: Client, settings: Settings, fulfillment: FulfillmentInput, *, starter: str
) -> bool:
    """Start the fulfillment unless Temporal has (or had, within its retention) one of the order;
    whether `starter` started it.

    `REJECT_DUPLICATE` refuses any id Temporal has seen, so racing starters start it once and a
    fulfillment that ran and closed is never started again from here. A starter that asks again
    after a lost reply recognises its own start by the memo.
    """
    try:
        await start_fulfillment(
            client,
            settings,
            fulfillment,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            memo={STARTED_BY: starter},
        )
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle(workflow_id(fulfillment.sf_order_id))
        described = await handle.describe()
        return await described.memo_value(STARTED_BY, None, type_hint=str) == starter
    return True


async def existing_fulfillment(client: Client, sf_order_id: str) -> ExistingFulfillment | None:
    """The latest run of the order's fulfillment as `decide_activation` needs it, or None."""
    handle = client.get_workflow_handle(workflow_id(sf_order_id), result_type=FulfillmentResult)
    try:
        described = await handle.describe()
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            return None
        raise
    if described.status is WorkflowExecutionStatus.RUNNING:
        progress = await handle.query(PROGRESS_QUERY, result_type=FulfillmentProgress)
        return ExistingFulfillment(running=True, waiting_for_operator=progress.waiting_for_operator)
    ended: FulfillmentStatus | None = None
    if described.status is WorkflowExecutionStatus.COMPLETED:
        ended = (await handle.result()).status
    return ExistingFulfillment(running=False, ended=ended, closed_at=described.close_time)


async def activate_fulfillment(
    client: Client,
    settings: Settings,
    fulfillment: FulfillmentInput,
    *,
    activated_at: datetime | None,
    recorded_status: Callable[[str], Awaitable[FulfillmentStatus | None]],
) -> ActivationDecision:
    """What an activation of the order does, done: start, start afresh, retry, or nothing.

    One activation may arrive many times (replays, duplicates, reconciliation): each repeat
    finds the fulfillment it already started and does nothing more. A retry of a parked
    fulfillment carries a request id derived from the trigger, so a repeated event counts once.
    When Temporal knows no run and the cutover lets the order in, `recorded_status` (the read
    model's status of the order) is asked too: Temporal's retention forgets closed runs, the read
    model does not. It is asked only then: otherwise its answer would change nothing.
    """
    existing = await existing_fulfillment(client, fulfillment.sf_order_id)
    cutover = settings.fulfillment_cutover_at
    decision = decide_activation(existing, activated_at, cutover=cutover)
    if decision is ActivationDecision.START:
        # Only a start with no run known can the read model overrule (a run it saw fulfilled).
        recorded = await recorded_status(fulfillment.sf_order_id)
        decision = decide_activation(existing, activated_at, recorded=recorded, cutover=cutover)
    if decision is ActivationDecision.START:
        try:
            await start_fulfillment(client, settings, fulfillment)
        except WorkflowAlreadyStartedError:
            # Started meanwhile by another path (reconciliation, an operator): one is enough.
            return ActivationDecision.IGNORE_RUNNING
    elif decision is ActivationDecision.START_AFRESH:
        await start_fulfillment(
            client,
            settings,
            fulfillment,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
    elif decision is ActivationDecision.RETRY_PARKED:
        trigger = fulfillment.trigger
        request = OperatorRequest(
            reason="the order was activated again in Salesforce",
            requested_by=f"salesforce:{trigger.source.value}",
            request_id=f"reactivation:{trigger.channel}:{trigger.replay_id}"
            if trigger.replay_id is not None
            else None,
        )
        await client.get_workflow_handle(workflow_id(fulfillment.sf_order_id)).signal(
            RETRY_SIGNAL, request
        )
    return decision
