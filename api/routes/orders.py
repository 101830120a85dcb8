"""The portal's reads (bearer `API_SERVICE_TOKEN`): one order's fulfillment and an account's
orders, from the read model through Redis (`usecases.read_model.OrdersCache`).

Responses are per customer: `Cache-Control: private, no-store`, so no browser or proxy keeps
them; the server-side copy in Redis is the only cache, and the engine invalidates it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.auth import service_scope
from api.params import AccountId, OrderId, error_responses, no_store
from api.services import ApiServices, services
from usecases import read_model
from usecases.read_model import DEFAULT_LIMIT, MAX_LIMIT, Fulfillment, FulfillmentPage, OrdersCache

router = APIRouter(
    tags=["portal"],
    dependencies=[Depends(service_scope), Depends(no_store)],
    responses=error_responses(401, 403, 422, 503),
)


def _cache(api: ApiServices) -> OrdersCache:
    return OrdersCache(api.pool, api.redis, api.keys)


@router.get(
    "/api/orders/{sfOrderId}/fulfillment",
    response_model=Fulfillment,
    summary="An order's fulfillment",
    responses=error_responses(404),
)
async def order_fulfillment(
    sf_order_id: OrderId, api: Annotated[ApiServices, Depends(services)]
) -> Fulfillment:
    return await read_model.cached_fulfillment(_cache(api), sf_order_id)


@router.get(
    "/api/accounts/{sfAccountId}/orders",
    response_model=FulfillmentPage,
    summary="An account's orders with their fulfillment, newest first",
)
async def account_orders(
    sf_account_id: AccountId,
    api: Annotated[ApiServices, Depends(services)],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page")
    ] = None,
) -> FulfillmentPage:
    return await read_model.account_orders(_cache(api), sf_account_id, limit=limit, cursor=cursor)
