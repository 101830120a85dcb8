"""The asyncpg connection pool every engine process uses to reach Postgres."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def _init_connection(connection: asyncpg.Connection) -> None:
    # jsonb columns come back as Python objects, not strings, everywhere in the engine.
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def create_pool(
    database_url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout: float = 30.0,
    application_name: str = "order-fulfillment",
) -> asyncpg.Pool:
    """Open a pool; fails fast with asyncpg's own error when the server is unreachable."""
    pool: asyncpg.Pool | None = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        init=_init_connection,
        server_settings={"application_name": application_name},
    )
    assert pool is not None  # create_pool returns None only when awaited lazily
    return pool


async def ping(pool: asyncpg.Pool) -> bool:
    """True when a connection from the pool answers a trivial query (readiness checks)."""
    try:
        value: Any = await pool.fetchval("SELECT 1")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    return bool(value == 1)
