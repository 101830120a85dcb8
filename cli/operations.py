"""Where the operators' commands act: straight against the engine's Postgres, Redis, Temporal and
Salesforce through the use cases the API runs too (`Direct`, with the engine's credentials), or
through the ops API (`OverHttp`, with only `API_OPS_TOKEN`, for an operator's laptop). Both
answer with the use cases' own models, so the commands print the same and exit the same either
way. Nothing here imports `api`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import asyncpg
import httpx
from pydantic import BaseModel, ValidationError
from temporalio.client import Client

from clients.cache import CacheInvalidator, CacheKeys, create_redis
from clients.fulfillment_store import FulfillmentStore
from clients.postgres import create_pool
from clients.salesforce import SalesforceClient
from config.settings import Settings
from domain.errors import ErrorCode
from domain.fulfillment import FulfillmentStatus, OperatorRequest
from temporal_connection.connection import connect_temporal
from usecases import read_model
from usecases.caches import Flushed, FlushScope, flush_caches
from usecases.dead_letters import (
    DeadLetters,
    RedriveRequested,
    list_dead_letters,
    request_redrive,
)
from usecases.operator_actions import Action, ActionResult, perform
from usecases.read_model import Fulfillment, FulfillmentPage
from usecases.reconciliation import ReconciliationPass, reconcile_once

M = TypeVar("M", bound=BaseModel)


class Operations(Protocol):
    async def status(self, sf_order_id: str) -> Fulfillment: ...

    async def act(
        self, action: Action, sf_order_id: str, request: OperatorRequest
    ) -> ActionResult: ...

    async def failed(
        self, *, error_code: ErrorCode | None, account: str | None, limit: int
    ) -> FulfillmentPage: ...

    async def flush(self, scope: FlushScope, account: str | None, *, who: str) -> Flushed: ...

    async def dead_letters(
        self, *, include_redriven: bool, limit: int, ids: Sequence[int] | None = None
    ) -> DeadLetters: ...

    async def redrive(self, ids: Sequence[int] | None, *, who: str) -> RedriveRequested: ...

    async def reconcile(self, *, dry_run: bool, who: str) -> ReconciliationPass: ...


class ApiRefusedError(Exception):
    """The ops API answered with an error: its status, code and message, as the API said them."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# -- straight against the engine's systems ------------------------------------------------------


class Direct:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, cache: CacheInvalidator, temporal: Client
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._cache = cache
        self._temporal = temporal

    async def status(self, sf_order_id: str) -> Fulfillment:
        return await read_model.fulfillment(self._pool, sf_order_id)

    async def act(self, action: Action, sf_order_id: str, request: OperatorRequest) -> ActionResult:
        return await perform(self._pool, self._temporal, action, sf_order_id, request)

    async def failed(
        self, *, error_code: ErrorCode | None, account: str | None, limit: int
    ) -> FulfillmentPage:
        return await read_model.fulfillments(
            self._pool,
            status=FulfillmentStatus.FAILED,
            error_code=error_code,
            account=account,
            limit=limit,
        )

    async def flush(self, scope: FlushScope, account: str | None, *, who: str) -> Flushed:
        return await flush_caches(self._pool, self._cache, scope, account, requested_by=who)

    async def dead_letters(
        self, *, include_redriven: bool, limit: int, ids: Sequence[int] | None = None
    ) -> DeadLetters:
        return await list_dead_letters(
            self._pool, ids=ids, include_redriven=include_redriven, limit=limit
        )

    async def redrive(self, ids: Sequence[int] | None, *, who: str) -> RedriveRequested:
        return await request_redrive(self._pool, ids, requested_by=who)

    async def reconcile(self, *, dry_run: bool, who: str) -> ReconciliationPass:
        salesforce = SalesforceClient.from_settings(self._settings)
        try:
            return await reconcile_once(
                self._settings,
                salesforce,
                self._temporal,
                FulfillmentStore(self._pool),
                dry_run=dry_run,
                requested_by=who,
            )
        finally:
            await salesforce.aclose()


@asynccontextmanager
async def direct(settings: Settings) -> AsyncIterator[Direct]:
    assert settings.database_url is not None and settings.redis_url is not None
    pool = await create_pool(
        settings.database_url, min_size=1, max_size=2, application_name="fulfillment-cli"
    )
    redis = create_redis(settings.redis_url)
    try:
        # Lazy: `status` and `failed` never need Temporal.
        temporal = await connect_temporal(settings, lazy=True)
        cache = CacheInvalidator(redis, CacheKeys(settings.cache_key_prefix))
        yield Direct(settings, pool, cache, temporal)
    finally:
        await redis.aclose()
        await pool.close()


# -- through the ops API ------------------------------------------------------------------------


class OverHttp:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def status(self, sf_order_id: str) -> Fulfillment:
        return await self._call("GET", f"/api/ops/fulfillments/{sf_order_id}", Fulfillment)

    async def act(self, action: Action, sf_order_id: str, request: OperatorRequest) -> ActionResult:
        return await self._call(
            "POST",
            f"/api/ops/fulfillments/{sf_order_id}/{action.value}",
            ActionResult,
            json={"reason": request.reason},
            who=request.requested_by,
            headers={"Idempotency-Key": request.request_id} if request.request_id else {},
        )

    async def failed(
        self, *, error_code: ErrorCode | None, account: str | None, limit: int
    ) -> FulfillmentPage:
        params: dict[str, Any] = {"status": FulfillmentStatus.FAILED.value, "limit": limit}
        if error_code is not None:
            params["error_code"] = error_code.value
        if account is not None:
            params["account"] = account
        return await self._call("GET", "/api/ops/fulfillments", FulfillmentPage, params=params)

    async def flush(self, scope: FlushScope, account: str | None, *, who: str) -> Flushed:
        body: dict[str, Any] = {"scope": scope.value}
        if account is not None:
            body["account"] = account
        return await self._call("POST", "/api/ops/cache/flush", Flushed, json=body, who=who)

    async def dead_letters(
        self, *, include_redriven: bool, limit: int, ids: Sequence[int] | None = None
    ) -> DeadLetters:
        params = {"include_redriven": str(include_redriven or ids is not None).lower()}
        params["limit"] = str(limit if ids is None else 100)
        letters = await self._call("GET", "/api/ops/dead-letters", DeadLetters, params=params)
        if ids is None:
            return letters
        wanted = set(ids)
        return letters.model_copy(
            update={"items": [item for item in letters.items if item.id in wanted]}
        )

    async def redrive(self, ids: Sequence[int] | None, *, who: str) -> RedriveRequested:
        body: dict[str, Any] = {"all": True} if ids is None else {"ids": list(ids)}
        return await self._call(
            "POST", "/api/ops/dead-letters/redrive", RedriveRequested, json=body, who=who
        )

    async def reconcile(self, *, dry_run: bool, who: str) -> ReconciliationPass:
        return await self._call(
            "POST", "/api/ops/reconcile", ReconciliationPass, json={"dry_run": dry_run}, who=who
        )

    async def _call(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        who: str | None = None,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> M:
        sent = dict(headers or {})
        if who is not None:
            sent["X-Requested-By"] = who
        try:
            reply = await self._http.request(method, path, headers=sent, **options)
        except httpx.HTTPError as error:
            raise ApiRefusedError(
                503, "unavailable", f"the ops API is unreachable ({type(error).__name__})"
            ) from None
        if reply.status_code >= 400:
            raise _refusal(reply)
        try:
            return model.model_validate(reply.json())
        except (ValueError, ValidationError):
            raise ApiRefusedError(
                502, "unavailable", f"the ops API answered {path} with something else"
            ) from None


def _refusal(reply: httpx.Response) -> ApiRefusedError:
    try:
        body = reply.json()
        code, message = str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "unavailable", f"the ops API answered HTTP {reply.status_code}"
    return ApiRefusedError(reply.status_code, code, message)


@asynccontextmanager
async def over_http(base_url: str, ops_token: str) -> AsyncIterator[OverHttp]:
    async with httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers={"Authorization": f"Bearer {ops_token}"},
        timeout=httpx.Timeout(60.0, connect=10.0),
    ) as http:
        yield OverHttp(http)
