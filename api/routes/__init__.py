"""One router per area; `ROUTERS` is what the app includes, in this order."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import catalog, codec, health, ops, orders, webhooks

ROUTERS: list[APIRouter] = [
    health.router,
    codec.router,
    catalog.router,
    webhooks.router,
    orders.router,
    ops.router,
]
