"""The FastAPI application: routers, error shapes, limits, metrics.

`create_app(settings)` opens its services in the lifespan; `create_app(settings, services=…)`
uses services the caller opened (tests, or a process that shares them).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors
from api.routes import ROUTERS
from api.services import ApiServices, open_services
from config.logging import get_logger
from config.settings import Settings

log = get_logger(__name__)

# Requests bodies are small JSON documents; anything larger is refused before it is read whole.
MAX_BODY_BYTES = 256 * 1024

REQUESTS = Counter(
    "fulfillment_api_requests", "HTTP requests by route and status", ["method", "route", "status"]
)
LATENCY = Histogram(
    "fulfillment_api_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def create_app(settings: Settings, *, services: ApiServices | None = None) -> FastAPI:
    _warn_about_the_codec(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            yield
            return
        async with open_services(settings) as opened:
            app.state.services = opened
            yield

    app = FastAPI(
        title="Order fulfillment API",
        version="1.0.0",
        description=(
            "Portal reads (bearer API_SERVICE_TOKEN), operator actions (bearer API_OPS_TOKEN), "
            "the public catalog, the WHMCS webhook, health and the Temporal UI codec."
        ),
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    if services is not None:
        app.state.services = services
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.middleware("http")(_observe)
    # Only the Temporal UI calls from a browser (the codec endpoint); the portal calls
    # server-to-server. CORS on the codec paths only: elsewhere its `Vary: Origin` would make a
    # CDN keep a copy of the public catalog per origin.
    app.add_middleware(
        CodecCORS,
        origins=[o.strip() for o in settings.api_codec_cors_origins.split(",") if o.strip()],
        credentials=settings.api_codec_cors_credentials,
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    return app


def _warn_about_the_codec(settings: Settings) -> None:
    if "api_codec_require_auth" in settings.model_fields_set:
        log.warning(
            "codec.deprecated_setting",
            setting="API_CODEC_REQUIRE_AUTH",
            use=f"API_CODEC_AUTH={settings.codec_auth}",
        )
    if settings.codec_auth == "none":
        # Anyone who reaches the route reads every customer's data in clear: dev stack only.
        log.warning("codec.open", hint="API_CODEC_AUTH=none: for the local dev stack only")


async def _observe(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    # The route's template, not the path: ids must not explode the metric's labels.
    route = request.scope.get("route")
    template = getattr(route, "path", "unmatched")
    LATENCY.labels(request.method, template).observe(time.perf_counter() - started)
    REQUESTS.labels(request.method, template, str(response.status_code)).inc()
    return response


class CodecCORS:
    """CORS for `/api/codec/*`; every other path passes untouched."""

    def __init__(self, app: ASGIApp, *, origins: list[str], credentials: bool) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Namespace"],
            allow_credentials=credentials,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/codec/"):
            await self.cors(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a body over `limit` bytes, by Content-Length or while it streams in."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await errors.error_response(413, "payload_too_large", "request body too large")(
                scope, receive, send
            )
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise errors.ApiError(413, "payload_too_large", "request body too large")
            return message

        await self.app(scope, limited, send)
