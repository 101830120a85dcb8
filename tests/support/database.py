"""One query against the engine's Postgres from a test, on a connection of its own (so a test
reads what is committed, never what a pooled connection of the code under test holds)."""

from __future__ import annotations

from typing import Any

import asyncpg


async def fetch_value(database_url: str | None, query: str, *args: Any) -> Any:
    assert database_url, "the engine's settings name a database"
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()
