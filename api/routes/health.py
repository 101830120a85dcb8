"""Health without auth: liveness, readiness (Postgres, Redis, Temporal), the CDC listener, the
services cache; and `/metrics` for Prometheus."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel

from api.services import ApiServices, services
from api.state_metrics import readiness as readiness_checks
from api.state_metrics import refresh as refresh_state_metrics
from clients.cache import CacheGroup

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, bool]


class ChannelCursor(BaseModel):
    # Cursors are kept per transport (CDC_TRANSPORT): a replay id is only meaningful to the
    # transport that gave it, as text (CometD's in decimal, the Pub/Sub API's in hex).
    transport: Literal["cometd", "pubsub"]
    channel: str
    replay_id: str
    last_event_at: datetime | None
    last_event_age_seconds: float | None
    moved_at: datetime


class ListenerReplica(BaseModel):
    instance: str
    active: bool
    connected: bool
    last_connect_at: datetime | None
    reconnects: int
    updated_at: datetime


class CdcHealth(BaseModel):
    status: str
    connected: bool
    replicas: list[ListenerReplica]
    cursors: list[ChannelCursor]
    dead_letters: int


class CacheHealth(BaseModel):
    status: str
    redis: bool
    catalog_keys: int


@router.get("/api/health", response_model=Liveness)
async def liveness() -> Liveness:
    return Liveness(status="ok")


@router.get(
    "/api/health/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency is down"}},
)
async def readiness(
    api: Annotated[ApiServices, Depends(services)], response: Response
) -> Readiness:
    checks = await readiness_checks(api)
    down = [name for name, ok in checks.items() if not ok]
    if down:
        response.status_code = 503
        return Readiness(status=f"unavailable: {', '.join(down)}", checks=checks)
    return Readiness(status="ok", checks=checks)


@router.get(
    "/api/health/cdc",
    response_model=CdcHealth,
    responses={503: {"model": CdcHealth, "description": "no listener replica is connected"}},
)
async def cdc_health(
    api: Annotated[ApiServices, Depends(services)], response: Response
) -> CdcHealth:
    replicas = await api.pool.fetch(
        "SELECT instance, active, connected, last_connect_at, reconnects, updated_at"
        " FROM cdc_listener_status ORDER BY instance"
    )
    cursors = await api.pool.fetch(
        "SELECT transport, channel, replay_id, last_event_at, updated_at FROM cdc_replay_cursors"
        " ORDER BY transport, channel"
    )
    dead = await api.pool.fetchval(
        "SELECT count(*) FROM cdc_dead_letters WHERE redriven_at IS NULL"
    )
    now = datetime.now(UTC)
    fresh = [r for r in replicas if (now - r["updated_at"]).total_seconds() < 120]
    connected = any(r["active"] and r["connected"] for r in fresh)
    if not connected:
        response.status_code = 503
    return CdcHealth(
        status="ok" if connected else "disconnected",
        connected=connected,
        replicas=[ListenerReplica(**dict(r)) for r in replicas],
        cursors=[
            ChannelCursor(
                transport=r["transport"],
                channel=r["channel"],
                replay_id=r["replay_id"],
                last_event_at=r["last_event_at"],
                last_event_age_seconds=(now - r["last_event_at"]).total_seconds()
                if r["last_event_at"]
                else None,
                moved_at=r["updated_at"],
            )
            for r in cursors
        ],
        dead_letters=int(dead),
    )


@router.get(
    "/api/health/services/cache",
    response_model=CacheHealth,
    responses={503: {"model": CacheHealth, "description": "Redis is unavailable"}},
)
async def services_cache(
    api: Annotated[ApiServices, Depends(services)], response: Response
) -> CacheHealth:
    try:
        members = await api.redis.scard(api.keys.group_index(CacheGroup.SERVICES_CATALOG))
        up = True
    except Exception:
        members, up = 0, False
        response.status_code = 503
    return CacheHealth(
        status="ok" if up else "redis unavailable", redis=up, catalog_keys=int(members)
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(api: Annotated[ApiServices, Depends(services)]) -> Response:
    # How things stand now (failed fulfillments, the outbox, readiness) is read per scrape.
    await refresh_state_metrics(api)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
