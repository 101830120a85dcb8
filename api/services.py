"""What the routes use: one instance per process, opened by the app's lifespan.

Routes take `ApiServices` through the `services` dependency; tests build the app with services
pointed at their own Postgres, Redis, Temporal and emulators.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import asyncpg
import httpx
import redis.asyncio as redis
from fastapi import Request
from temporalio.client import Client

from api.oidc import OidcVerifier
from clients.cache import CacheInvalidator, CacheKeys, create_redis
from clients.fulfillment_store import FulfillmentStore
from clients.postgres import create_pool
from clients.salesforce import SalesforceClient
from config.settings import Settings
from temporal_connection.connection import connect_temporal


@dataclass
class ApiServices:
    settings: Settings
    pool: asyncpg.Pool
    redis: redis.Redis
    temporal: Client
    # The catalog's source; None where no Salesforce is configured (the catalog answers 503).
    salesforce: SalesforceClient | None
    # Checks operators' access tokens at the codec when API_CODEC_AUTH is "oidc".
    oidc: OidcVerifier | None = None
    keys: CacheKeys = field(init=False)
    cache: CacheInvalidator = field(init=False)
    store: FulfillmentStore = field(init=False)

    def __post_init__(self) -> None:
        self.keys = CacheKeys(self.settings.cache_key_prefix)
        self.cache = CacheInvalidator(self.redis, self.keys)
        self.store = FulfillmentStore(self.pool)

    @property
    def service_tokens(self) -> tuple[str, ...]:
        return self.settings.api_service_tokens

    @property
    def ops_tokens(self) -> tuple[str, ...]:
        return self.settings.api_ops_tokens


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[ApiServices]:
    assert settings.database_url is not None and settings.redis_url is not None
    async with AsyncExitStack() as stack:
        pool = await create_pool(settings.database_url, max_size=10)
        stack.push_async_callback(pool.close)
        cache = create_redis(settings.redis_url)
        stack.push_async_callback(cache.aclose)
        # Lazy: the API starts (and answers health checks) while Temporal is still coming up.
        temporal = await connect_temporal(settings, lazy=True)
        salesforce: SalesforceClient | None = None
        if settings.sf_token_url and settings.sf_client_id:
            salesforce = SalesforceClient.from_settings(settings)
            stack.push_async_callback(salesforce.aclose)
        oidc: OidcVerifier | None = None
        if settings.codec_auth == "oidc":
            oidc = await stack.enter_async_context(_oidc_verifier(settings))
        yield ApiServices(settings, pool, cache, temporal, salesforce, oidc)


@asynccontextmanager
async def _oidc_verifier(settings: Settings) -> AsyncIterator[OidcVerifier]:
    assert settings.api_codec_oidc_issuer and settings.api_codec_oidc_audience
    assert settings.api_codec_oidc_jwks_url
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0), trust_env=False) as http:
        yield OidcVerifier(
            issuer=settings.api_codec_oidc_issuer,
            audience=settings.api_codec_oidc_audience,
            jwks_url=settings.api_codec_oidc_jwks_url,
            required_claim=settings.codec_required_claim,
            http=http,
        )


async def services(request: Request) -> ApiServices:
    # `async def`, as every dependency on a request's path that does not block: FastAPI runs a
    # plain `def` dependency in the thread pool, a hand-off that cost more than the Redis read.
    return cast(ApiServices, request.app.state.services)
