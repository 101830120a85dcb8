"""Helpers of the API tests: fresh Salesforce ids, and the app served over real HTTP with
services a test builds itself (a Redis nobody listens on, a closed Postgres pool), next to the
`api` fixture's app with the real ones."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from temporalio.client import Client

from api.app import create_app
from api.services import ApiServices
from clients.cache import create_redis
from clients.postgres import create_pool
from clients.salesforce_ids import checksum
from config.settings import Settings

# Writes one read-model row: (sf_order_id, sf_account_id, **FulfillmentRecord fields).
Record = Callable[..., Awaitable[None]]


def sf_id(prefix: str) -> str:
    """A fresh, well-formed 18-character id (Redis keys outlive a test; ids must not repeat)."""
    id15 = f"{prefix}{secrets.randbelow(10**12):012d}"
    return id15 + checksum(id15)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def closed_port() -> int:
    """A local port nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def served(services: ApiServices) -> AsyncIterator[httpx.AsyncClient]:
    port = closed_port()
    server = _QuietServer(
        uvicorn.Config(
            create_app(services.settings, services=services),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
        )
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while True:
            if server.started:
                break
            await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def degraded_services(
    settings: Settings, temporal: Client, *, postgres: bool
) -> AsyncIterator[ApiServices]:
    """Services whose Redis is unreachable, and whose Postgres pool is closed unless
    `postgres`: whatever reaches them fails, so a request that succeeds (or is refused before)
    never touched them."""
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, max_size=2)
    dead_redis = create_redis(f"redis://127.0.0.1:{closed_port()}/0", timeout=0.5)
    if not postgres:
        await pool.close()
    try:
        yield ApiServices(settings, pool, dead_redis, temporal, None)
    finally:
        await dead_redis.aclose()
        if postgres:
            await pool.close()
