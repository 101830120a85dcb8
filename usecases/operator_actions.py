"""Operator actions, shared by the ops routes and the CLI: retry or cancel a parked fulfillment.
Nothing here knows HTTP; refusals are `usecases.errors` (the API says which status each is).

Retry and cancel are recorded in `operator_actions` once per request id (migrations/0007), then
sent to the workflow as an update whose id is that request id. A request repeated after a lost
reply, or two racing copies of it, therefore count once three times over: one audit row, one
Temporal update (the server deduplicates update ids within a run), and one decision (the
workflow ignores a request id it has handled).

A repeat answers as the first request did. Outcomes in the audit row: `pending` (recorded, no answer
yet) and `unavailable: <why>` (Temporal or the workflow did not answer in time; it may still act on
the update, which a repeat then finds) are sent again; `refused: <validator's reason>` is refused
again (`ConflictError`) without asking the workflow; `accepted` is sent again to the same run, which
answers with the first result, or, when that run has ended, answered from the record alone (no
progress).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NoReturn

import asyncpg
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from config.logging import get_logger
from domain.fulfillment import FulfillmentProgress, OperatorRequest, workflow_id
from domain.messages import CANCEL_UPDATE, RETRY_UPDATE
from usecases.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    or_unavailable,
)
from usecases.read_model import fetch_fulfillment

log = get_logger(__name__)

# How long an action waits for the workflow's answer (a worker must pick the update up).
UPDATE_WAIT = timedelta(seconds=20)

ACCEPTED = "accepted"
_REFUSED = "refused: "
_UNAVAILABLE = "unavailable: "
# Request ids the engine makes itself (migrations/0007's legacy rows, re-activations by CDC);
# a caller's key must not collide with them in the workflow's set of handled requests.
RESERVED_REQUEST_ID_PREFIXES = ("legacy-", "reactivation:")


class Action(StrEnum):
    RETRY = "retry"
    CANCEL = "cancel"


# The workflow's update each action is sent as.
_UPDATES = {Action.RETRY: RETRY_UPDATE, Action.CANCEL: CANCEL_UPDATE}


class ActionResult(BaseModel):
    """An operator's retry or cancel, accepted by the workflow."""

    model_config = ConfigDict(frozen=True)

    request_id: str = Field(description="the Idempotency-Key, or the id the API made")
    sf_order_id: str
    action: Action
    reason: str
    requested_by: str
    outcome: str = Field(description="`accepted`")
    recorded_at: datetime
    progress: FulfillmentProgress | None = Field(
        description="the workflow's progress right after the decision; null when a repeated "
        "request finds the workflow already finished"
    )


class _Recorded(BaseModel):
    request_id: str
    sf_order_id: str
    action: Action
    reason: str
    requested_by: str
    outcome: str
    created_at: datetime
    inserted: bool


_INSERT = """
INSERT INTO operator_actions (request_id, sf_order_id, action, reason, requested_by, outcome)
VALUES ($1, $2, $3, $4, $5, 'pending')
ON CONFLICT (request_id) DO NOTHING
RETURNING request_id, sf_order_id, action, reason, requested_by, outcome, created_at
"""
_SELECT = """
SELECT request_id, sf_order_id, action, reason, requested_by, outcome, created_at
FROM operator_actions WHERE request_id = $1
"""
# `accepted` is the workflow's own word and overrides anything; a refusal or an outage only
# replaces an outcome that is not final yet.
_FINISH = """
UPDATE operator_actions SET outcome = $2
WHERE request_id = $1
  AND ($2 = 'accepted' OR (outcome <> 'accepted' AND outcome NOT LIKE 'refused: %'))
"""


async def perform(
    pool: asyncpg.Pool,
    temporal: Client,
    action: Action,
    sf_order_id: str,
    request: OperatorRequest,
    *,
    wait: timedelta = UPDATE_WAIT,
) -> ActionResult:
    """Send `action` to the order's parked fulfillment; `request.request_id` is required.

    Waits at most `wait` for the workflow to take or refuse it (the update is answered by a
    worker: with none polling it would wait for ever).
    """
    request_id = request.request_id
    if not request_id:
        raise InvalidRequestError("a request id is required")
    if request_id.startswith(RESERVED_REQUEST_ID_PREFIXES):
        raise InvalidRequestError("Idempotency-Key: this prefix is reserved for the engine")
    current = await or_unavailable(fetch_fulfillment(pool, sf_order_id))
    if current is None:
        raise NotFoundError(f"no fulfillment for order {sf_order_id}")
    recorded = await _record(pool, action, sf_order_id, request, request_id)
    if recorded.sf_order_id != sf_order_id or recorded.action is not action:
        raise ConflictError(
            "Idempotency-Key already used for another request "
            f"({recorded.action.value} of order {recorded.sf_order_id})"
        )
    if recorded.outcome.startswith(_REFUSED):
        raise ConflictError(recorded.outcome.removeprefix(_REFUSED))
    accepted_before = recorded.outcome == ACCEPTED
    ended = (
        f"cannot {action.value}: the fulfillment is {current.status.value} and its workflow "
        "has ended"
    )

    def answer(progress: FulfillmentProgress | None) -> ActionResult:
        return ActionResult(
            request_id=request_id,
            sf_order_id=sf_order_id,
            action=action,
            reason=recorded.reason,
            requested_by=recorded.requested_by,
            outcome=ACCEPTED,
            recorded_at=recorded.created_at,
            progress=progress,
        )

    handle = temporal.get_workflow_handle(workflow_id(sf_order_id))
    if not recorded.inserted:
        # Update ids are deduplicated within one run only: a repeat goes to the run the request
        # was meant for, never to a fresh run started under the same workflow id since.
        run_id = await _run_of(handle, recorded.created_at, tolerant=accepted_before)
        if run_id is None:
            if accepted_before:
                return answer(None)
            await _refuse(pool, request_id, ended)
        handle = temporal.get_workflow_handle(workflow_id(sf_order_id), run_id=run_id)

    # The first request's words, whatever a repeat says: it is the same request.
    sent = OperatorRequest(
        reason=recorded.reason, requested_by=recorded.requested_by, request_id=request_id
    )
    try:
        async with asyncio.timeout(wait.total_seconds()):
            progress = await handle.execute_update(
                _UPDATES[action], sent, id=request_id, result_type=FulfillmentProgress
            )
    except (
        WorkflowUpdateFailedError,
        RPCError,
        WorkflowUpdateRPCTimeoutOrCancelledError,
        TimeoutError,
    ) as error:
        if accepted_before:
            # Decided before; the record is the answer even if the run cannot repeat it.
            return answer(None)
        if isinstance(error, WorkflowUpdateFailedError):
            cause = error.cause
            await _refuse(
                pool,
                request_id,
                cause.message if isinstance(cause, ApplicationError) else str(cause),
            )
        if isinstance(error, RPCError) and error.status is RPCStatusCode.NOT_FOUND:
            await _refuse(pool, request_id, ended)
        await _unavailable(pool, request_id, _temporal_trouble(error))
    if not accepted_before:
        await _finish(pool, request_id, ACCEPTED)
        log.info(
            "operator.action",
            action=action.value,
            sf_order_id=sf_order_id,
            requested_by=recorded.requested_by,
            request_id=request_id,
        )
    return answer(progress)


async def _run_of(
    handle: WorkflowHandle[Any, Any], recorded_at: datetime, *, tolerant: bool
) -> str | None:
    """The run a request recorded at `recorded_at` was meant for, if it is still running."""
    try:
        described = await handle.describe()
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND or tolerant:
            return None
        raise UnavailableError(f"{_temporal_trouble(error)}; repeat the request") from None
    if described.status is not WorkflowExecutionStatus.RUNNING:
        return None
    if described.start_time > recorded_at:
        return None
    return described.run_id


def _temporal_trouble(error: Exception) -> str:
    if isinstance(error, RPCError):
        return f"Temporal unavailable ({error.status.name})"
    return "the workflow did not answer in time"


async def _record(
    pool: asyncpg.Pool,
    action: Action,
    sf_order_id: str,
    request: OperatorRequest,
    request_id: str,
) -> _Recorded:
    async def run() -> _Recorded:
        row = await pool.fetchrow(
            _INSERT, request_id, sf_order_id, action.value, request.reason, request.requested_by
        )
        inserted = row is not None
        if row is None:
            row = await pool.fetchrow(_SELECT, request_id)
        assert row is not None  # rows are never deleted
        return _Recorded(**dict(row), inserted=inserted)

    return await or_unavailable(run())


async def _finish(pool: asyncpg.Pool, request_id: str, outcome: str) -> None:
    await or_unavailable(pool.execute(_FINISH, request_id, outcome[:1000]))


async def _refuse(pool: asyncpg.Pool, request_id: str, reason: str) -> NoReturn:
    await _finish(pool, request_id, _REFUSED + reason)
    raise ConflictError(reason)


async def _unavailable(pool: asyncpg.Pool, request_id: str, why: str) -> NoReturn:
    await _finish(pool, request_id, _UNAVAILABLE + why)
    raise UnavailableError(
        f"{why}; it may still be acted on: repeat the request with the same Idempotency-Key "
        "to learn its outcome"
    )
