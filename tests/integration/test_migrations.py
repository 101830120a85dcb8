"""Migrations against a real Postgres: in order, once, twice-safe, concurrency-safe, drift-proof."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from migrations.runner import (
    MigrationError,
    applied_versions,
    apply_migrations,
    available_migrations,
)
from tests.fixtures.services import with_database

EXPECTED_TABLES = {
    "schema_migrations", "id_mappings", "cdc_replay_cursors", "cdc_event_inbox", "fulfillments",
    "billing_order_intents", "operator_actions", "cache_invalidation_outbox",
}  # fmt: skip


@pytest_asyncio.fixture
async def empty_database(postgres_server_url: str) -> AsyncIterator[str]:
    """A brand-new database for one test, so each starts from nothing."""
    name = f"migrate_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(postgres_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield with_database(postgres_server_url, name)
    admin = await asyncpg.connect(postgres_server_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def _tables(url: str) -> set[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


async def test_applies_every_migration_in_order_then_nothing_the_second_time(
    empty_database: str,
) -> None:
    first = await apply_migrations(empty_database)
    assert first == [f"{m.version}_{m.name}" for m in available_migrations()]
    assert first == sorted(first)
    assert await _tables(empty_database) >= EXPECTED_TABLES

    second = await apply_migrations(empty_database)
    assert second == []
    assert list(await applied_versions(empty_database)) == [
        m.version for m in available_migrations()
    ]


async def test_two_concurrent_runners_apply_each_migration_exactly_once(
    empty_database: str,
) -> None:
    results = await asyncio.gather(*(apply_migrations(empty_database) for _ in range(3)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == [f"{m.version}_{m.name}" for m in available_migrations()]


async def test_an_edited_applied_migration_is_refused(empty_database: str) -> None:
    await apply_migrations(empty_database)
    connection = await asyncpg.connect(empty_database)
    try:
        await connection.execute(
            "UPDATE schema_migrations SET checksum = 'edited' WHERE version = '0001'"
        )
    finally:
        await connection.close()
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        await apply_migrations(empty_database)


async def test_schema_enforces_the_read_model_rules(db: asyncpg.Connection) -> None:
    order_id = "801" + secrets.token_hex(8)[:15].upper().ljust(15, "A")
    await db.execute(
        "INSERT INTO fulfillments (sf_order_id, sf_account_id, workflow_id) VALUES ($1, $2, $3)",
        order_id,
        "001000000000001AAA",
        f"order-fulfillment-{order_id}",
    )
    row = await db.fetchrow(
        "SELECT status, attempts, whmcs_service_ids FROM fulfillments WHERE sf_order_id = $1",
        order_id,
    )
    assert row is not None
    assert (row["status"], row["attempts"], row["whmcs_service_ids"]) == ("pending", 0, [])
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE fulfillments SET status = 'done' WHERE sf_order_id = $1", order_id)


def test_fulfillment_migrate_command_applies_and_reports(
    empty_database: str, repo_root: Path
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", "migrate", *args],
            env={"PATH": "/usr/bin:/bin", "DATABASE_URL": empty_database, "LOG_FORMAT": "json"},
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    first = run()
    assert first.returncode == 0, first.stderr
    assert f"applied {len(available_migrations())} migration(s)" in first.stdout
    again = run()
    assert again.returncode == 0, again.stderr
    assert "applied 0 migration(s)" in again.stdout
    status = run("--status")
    assert status.stdout.split() == [f"{m.version}_{m.name}" for m in available_migrations()]
