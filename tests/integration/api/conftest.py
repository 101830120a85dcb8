"""The API layer's fixtures: a pool on the test database, and `record`, which writes read-model
rows as the engine does (`FulfillmentStore.record`, each write one version newer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest_asyncio

from clients.fulfillment_store import FulfillmentStore
from clients.postgres import create_pool
from domain.fulfillment import FulfillmentStatus
from domain.steps import FulfillmentRecord
from tests.fixtures.engine import Engine
from tests.integration.api._support import Record


@pytest_asyncio.fixture
async def pool(engine: Engine) -> AsyncIterator[asyncpg.Pool]:
    assert engine.settings.database_url is not None
    opened = await create_pool(engine.settings.database_url, max_size=4)
    yield opened
    await opened.close()


@pytest_asyncio.fixture
async def record(pool: asyncpg.Pool) -> Record:
    store = FulfillmentStore(pool)
    versions: dict[str, int] = {}

    async def write(sf_order_id: str, sf_account_id: str, **fields: Any) -> None:
        versions[sf_order_id] = versions.get(sf_order_id, 0) + 1
        written = await store.record(
            FulfillmentRecord(
                sf_order_id=sf_order_id,
                sf_account_id=sf_account_id,
                workflow_id=f"order-fulfillment-{sf_order_id}",
                version=versions[sf_order_id],
                **({"status": FulfillmentStatus.ACTIVATING} | fields),
            )
        )
        assert written

    return write
