"""The FastAPI application: routers, error shapes, limits, metrics.

`create_app(settings)` opens its services in the lifespan; `create_app(settings, services=…)`
uses services the caller opened (tests, or a process that shares them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from api import errors
from api.middleware import BodyLimit, Hardened
from api.routes import ROUTERS
from api.services import ApiServices, open_services
from config.logging import get_logger
from config.settings import Settings

log = get_logger(__name__)

# Requests bodies are small JSON documents; anything larger is refused before it is read whole.
MAX_BODY_BYTES = 256 * 1024
# A client that stops sending its body this long is answered 408 (an ingress should time out
# slow clients before they reach us; this is the net under it).
BODY_IDLE_SECONDS = 10.0


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
        # Swagger UI loads its script from a CDN: served only where API_DOCS asks (the dev
        # stack), with a policy limiting the page to it.
        docs_url="/api/docs" if settings.api_docs else None,
        redoc_url=None,
        lifespan=lifespan,
        # A redirect to the slash-less path would echo the Host header, before any auth.
        redirect_slashes=False,
    )
    app.state.settings = settings
    if services is not None:
        app.state.services = services
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    # Only the Temporal UI calls from a browser (the codec endpoint); the portal calls
    # server-to-server. CORS on the codec paths only: elsewhere its `Vary: Origin` would make a
    # CDN keep a copy of the public catalog per origin.
    app.add_middleware(
        CodecCORS,
        origins=[o.strip() for o in settings.api_codec_cors_origins.split(",") if o.strip()],
        credentials=settings.api_codec_cors_credentials,
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, idle=BODY_IDLE_SECONDS)
    # Outermost: it sees, and counts, every response, those refused above included.
    app.add_middleware(Hardened)
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
