"""Operators (bearer `API_OPS_TOKEN`): read one fulfillment, retry or cancel a parked one, list
fulfillments, flush the portal's caches, list and redrive dead letters, run a reconciliation
pass. The logic is `usecases` (`operator_actions`, `caches`, `dead_letters`, `read_model`,
`reconciliation`), shared with the CLI (which also calls these routes, with `--api`); this
module only speaks HTTP, and `api.errors` answers the use cases' refusals.

Actions name who asks (`X-Requested-By`) and may name the request (`Idempotency-Key`): a POST
repeated with the same key is recorded and decided once, and answered as the first time.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from pydantic import BaseModel, ConfigDict, Field

from api.auth import operator, ops_scope
from api.errors import NO_STORE, ApiError
from api.params import (
    NO_CONTROL_CHARACTERS,
    AccountFilter,
    OrderId,
    checked,
    error_responses,
    no_store,
)
from api.services import ApiServices, services
from clients.salesforce_ids import ACCOUNT
from domain.errors import ErrorCode
from domain.fulfillment import FulfillmentStatus, OperatorRequest
from domain.order import SF_ID_PATTERN
from usecases import read_model
from usecases.caches import Flushed, FlushScope, flush_caches
from usecases.dead_letters import (
    DeadLetters,
    RedriveRequested,
    list_dead_letters,
    request_redrive,
)
from usecases.operator_actions import Action, ActionResult, perform
from usecases.read_model import DEFAULT_LIMIT, MAX_LIMIT, Fulfillment, FulfillmentPage
from usecases.reconciliation import ReconciliationPass, reconcile_once

router = APIRouter(
    prefix="/api/ops",
    tags=["operators"],
    dependencies=[Depends(ops_scope), Depends(no_store)],
    responses=error_responses(401, 403, 422, 503),
)


class ActionBody(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    reason: str = Field(
        min_length=1,
        max_length=500,
        pattern=NO_CONTROL_CHARACTERS,
        description="why, for the audit trail (no control characters)",
    )


class FlushBody(BaseModel):
    scope: FlushScope = Field(
        description="services: the catalog and every eligibility; orders: one account's "
        "order keys (with `account`) or every order key; all: every key family of the engine"
    )
    account: str | None = Field(
        default=None,
        pattern=SF_ID_PATTERN,
        description="a Salesforce Account id (scope orders only)",
    )


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$",
        description="names the request: a repeat with the same key is decided once and "
        "answered as the first time (default: a new UUID, so every POST is its own request)",
    ),
]


async def _act(
    action: Action,
    sf_order_id: str,
    body: ActionBody,
    who: str,
    key: str | None,
    api: ApiServices,
) -> ActionResult:
    request = OperatorRequest(
        reason=body.reason, requested_by=who, request_id=key or str(uuid.uuid4())
    )
    return await perform(api.pool, api.temporal, action, sf_order_id, request)


_BODY_ERRORS = error_responses(400, 413)
_ACTION_ERRORS = error_responses(404, 409) | _BODY_ERRORS


@router.get(
    "/fulfillments/{sfOrderId}",
    response_model=Fulfillment,
    summary="One order's fulfillment, from the read model itself (never a cached copy)",
    responses=error_responses(404),
)
async def fulfillment(
    sf_order_id: OrderId, api: Annotated[ApiServices, Depends(services)]
) -> Fulfillment:
    return await read_model.fulfillment(api.pool, sf_order_id)


@router.post(
    "/fulfillments/{sfOrderId}/retry",
    status_code=202,
    response_model=ActionResult,
    summary="Retry a parked fulfillment (after fixing its cause)",
    responses=_ACTION_ERRORS,
)
async def retry(
    sf_order_id: OrderId,
    body: ActionBody,
    who: Annotated[str, Depends(operator)],
    api: Annotated[ApiServices, Depends(services)],
    idempotency_key: IdempotencyKey = None,
) -> ActionResult:
    return await _act(Action.RETRY, sf_order_id, body, who, idempotency_key, api)


@router.post(
    "/fulfillments/{sfOrderId}/cancel",
    status_code=202,
    response_model=ActionResult,
    summary="Cancel a parked fulfillment (what was done is compensated)",
    responses=_ACTION_ERRORS,
)
async def cancel(
    sf_order_id: OrderId,
    body: ActionBody,
    who: Annotated[str, Depends(operator)],
    api: Annotated[ApiServices, Depends(services)],
    idempotency_key: IdempotencyKey = None,
) -> ActionResult:
    return await _act(Action.CANCEL, sf_order_id, body, who, idempotency_key, api)


@router.get(
    "/fulfillments",
    response_model=FulfillmentPage,
    summary="Fulfillments, newest first, filtered by status, error code or account",
)
async def fulfillments(
    api: Annotated[ApiServices, Depends(services)],
    account: AccountFilter,
    status: Annotated[FulfillmentStatus | None, Query(description="e.g. failed")] = None,
    error_code: Annotated[ErrorCode | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page")
    ] = None,
) -> FulfillmentPage:
    return await read_model.fulfillments(
        api.pool, account=account, status=status, error_code=error_code, limit=limit, cursor=cursor
    )


@router.post(
    "/cache/flush",
    response_model=Flushed,
    summary="Flush the portal's caches (when invalidation events were missed)",
    responses=_BODY_ERRORS,
)
async def flush(
    body: FlushBody,
    who: Annotated[str, Depends(operator)],
    api: Annotated[ApiServices, Depends(services)],
) -> Flushed:
    account = None
    if body.account is not None:
        account = checked(body.account, key_prefix=ACCOUNT, name="account")
    return await flush_caches(api.pool, api.cache, body.scope, account, requested_by=who)


class RedriveBody(BaseModel):
    ids: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None, max_length=1000, description="the dead letters to handle again"
    )
    all: bool = Field(default=False, description="every dead letter not yet redriven")


@router.get(
    "/dead-letters",
    response_model=DeadLetters,
    summary="Change events the listener could not read, newest first",
)
async def dead_letters(
    api: Annotated[ApiServices, Depends(services)],
    include_redriven: Annotated[bool, Query(description="also those already redriven")] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many")] = (
        DEFAULT_LIMIT
    ),
) -> DeadLetters:
    return await list_dead_letters(api.pool, include_redriven=include_redriven, limit=limit)


@router.post(
    "/dead-letters/redrive",
    response_model=RedriveRequested,
    status_code=202,
    summary="Ask the listener to handle dead letters again (it does within seconds)",
    responses=error_responses(404) | _BODY_ERRORS,
)
async def redrive(
    body: RedriveBody,
    who: Annotated[str, Depends(operator)],
    api: Annotated[ApiServices, Depends(services)],
) -> RedriveRequested:
    if body.all == (body.ids is not None):
        raise ApiError(
            422, "invalid_request", "name the dead letters (ids) or all, not both", headers=NO_STORE
        )
    return await request_redrive(api.pool, body.ids, requested_by=who)


class ReconcileBody(BaseModel):
    dry_run: bool = Field(default=False, description="start nothing: say what would be started")


@router.post(
    "/reconcile",
    response_model=ReconciliationPass,
    summary="One reconciliation pass now: what it started (or would), and why the rest is left",
    responses=_BODY_ERRORS,
)
async def reconcile(
    body: ReconcileBody,
    who: Annotated[str, Depends(operator)],
    api: Annotated[ApiServices, Depends(services)],
) -> ReconciliationPass:
    if api.salesforce is None:
        raise ApiError(503, "unavailable", "no Salesforce is configured", headers=NO_STORE)
    return await reconcile_once(
        api.settings,
        api.salesforce,
        api.temporal,
        api.store,
        dry_run=body.dry_run,
        requested_by=who,
    )
