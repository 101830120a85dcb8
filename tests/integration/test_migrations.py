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
    Migration,
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


# The portal's table as a Prisma-built portal database has it: unique indexes rather than
# constraints, and columns of its own that the engine does not read.
PORTAL_ID_MAPPINGS = """
CREATE TABLE id_mappings (
    user_id         uuid PRIMARY KEY,
    whmcs_client_id bigint NOT NULL,
    sf_account_id   varchar(18),
    email           text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX id_mappings_whmcs_client_id_key ON id_mappings (whmcs_client_id);
CREATE UNIQUE INDEX id_mappings_sf_account_id_key ON id_mappings (sf_account_id);
"""

# 0001 as the first release shipped it, when the engine created id_mappings itself.
PREVIOUS_0001 = """\
-- The portal's cross-system identity mapping (user <-> WHMCS client <-> Salesforce account).
-- The engine resolves an order's WHMCS client here first, then falls back to Account.WH_Account__c.
CREATE TABLE IF NOT EXISTS id_mappings (
    user_id         uuid PRIMARY KEY,
    whmcs_client_id bigint UNIQUE,
    sf_account_id   varchar(18) UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT id_mappings_sf_account_id_form CHECK (sf_account_id ~ '^[A-Za-z0-9]{18}$')
);
"""


async def _execute(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _columns(url: str, table: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
            "ORDER BY ordinal_position",
            table,
        )
    finally:
        await connection.close()
    return [row["column_name"] for row in rows]


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
    first = await apply_migrations(empty_database, create_portal_tables=True)
    assert first == [f"{m.version}_{m.name}" for m in available_migrations()]
    assert first == sorted(first)
    assert await _tables(empty_database) >= EXPECTED_TABLES

    second = await apply_migrations(empty_database, create_portal_tables=True)
    assert second == []
    assert list(await applied_versions(empty_database)) == [
        m.version for m in available_migrations()
    ]


async def test_two_concurrent_runners_apply_each_migration_exactly_once(
    empty_database: str,
) -> None:
    results = await asyncio.gather(
        *(apply_migrations(empty_database, create_portal_tables=True) for _ in range(3))
    )
    applied = [name for result in results for name in result]
    assert sorted(applied) == [f"{m.version}_{m.name}" for m in available_migrations()]


async def test_an_edited_applied_migration_is_refused(empty_database: str) -> None:
    await apply_migrations(empty_database, create_portal_tables=True)
    connection = await asyncpg.connect(empty_database)
    try:
        await connection.execute(
            "UPDATE schema_migrations SET checksum = 'edited' WHERE version = '0001'"
        )
    finally:
        await connection.close()
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        await apply_migrations(empty_database, create_portal_tables=True)


async def test_without_the_portals_id_mappings_nothing_is_applied_and_one_line_says_why(
    empty_database: str,
) -> None:
    with pytest.raises(MigrationError) as info:
        await apply_migrations(empty_database)
    message = str(info.value)
    assert "id_mappings" in message and "portal" in message and "\n" not in message
    # Nothing half-done: a database that is not the portal's is left as it was found.
    assert await _tables(empty_database) <= {"schema_migrations"}
    assert await applied_versions(empty_database) == {}


async def test_the_portals_id_mappings_is_verified_and_left_as_the_portal_made_it(
    empty_database: str,
) -> None:
    await _execute(empty_database, PORTAL_ID_MAPPINGS)
    assert await apply_migrations(empty_database) == [
        f"{m.version}_{m.name}" for m in available_migrations()
    ]
    assert await _columns(empty_database, "id_mappings") == [
        "user_id", "whmcs_client_id", "sf_account_id", "email",
    ]  # fmt: skip
    # Even a dev/test run leaves an existing table alone (it only checks it).
    assert await apply_migrations(empty_database, create_portal_tables=True) == []
    assert "created_at" not in await _columns(empty_database, "id_mappings")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("ALTER TABLE id_mappings ALTER COLUMN whmcs_client_id TYPE integer",
         "whmcs_client_id is integer, expected bigint"),
        ("ALTER TABLE id_mappings ALTER COLUMN sf_account_id TYPE text",
         "sf_account_id is text, expected character varying(18)"),
        ("ALTER TABLE id_mappings ALTER COLUMN sf_account_id TYPE varchar(15)",
         "sf_account_id is character varying(15), expected character varying(18)"),
        ("DROP INDEX id_mappings_sf_account_id_key", "sf_account_id is not unique"),
        ("DROP INDEX id_mappings_whmcs_client_id_key; "
         "CREATE UNIQUE INDEX partial ON id_mappings (whmcs_client_id) WHERE email <> ''",
         "whmcs_client_id is not unique"),
        ("DROP INDEX id_mappings_whmcs_client_id_key; "
         "CREATE UNIQUE INDEX pair ON id_mappings (whmcs_client_id, email)",
         "whmcs_client_id is not unique"),
        ("ALTER TABLE id_mappings RENAME COLUMN user_id TO portal_user_id", "user_id is missing"),
    ],
)  # fmt: skip
async def test_a_divergent_id_mappings_is_refused_naming_what_differs(
    empty_database: str, change: str, named: str
) -> None:
    await _execute(empty_database, PORTAL_ID_MAPPINGS + change)
    for create_portal_tables in (False, True):
        with pytest.raises(MigrationError) as info:
            await apply_migrations(empty_database, create_portal_tables=create_portal_tables)
        assert named in str(info.value) and "\n" not in str(info.value)
    assert await applied_versions(empty_database) == {}


async def test_a_dev_or_test_database_gets_the_table_created(empty_database: str) -> None:
    await apply_migrations(empty_database, create_portal_tables=True)
    assert await _columns(empty_database, "id_mappings") == [
        "user_id", "whmcs_client_id", "sf_account_id", "created_at", "updated_at",
    ]  # fmt: skip
    # Later runs without the flag (`fulfillment migrate`) find it and accept it.
    assert await apply_migrations(empty_database) == []


async def test_a_database_migrated_by_the_first_release_upgrades_in_place(
    empty_database: str,
) -> None:
    # The first release ran 0001 (creating id_mappings) through 0004; a dev database still has
    # those records, their checksums and data written since.
    first_release = [
        Migration("0001", "id_mappings", PREVIOUS_0001),
        *[m for m in available_migrations() if "0002" <= m.version <= "0004"],
    ]
    await apply_migrations(empty_database, migrations=first_release, create_portal_tables=True)
    await _execute(
        empty_database,
        """
        INSERT INTO fulfillments (sf_order_id, sf_account_id, workflow_id, status)
        VALUES ('801000000000001AAA', '001000000000001AAA', 'wf-1', 'failed');
        INSERT INTO operator_actions (sf_order_id, action, reason, requested_by, outcome)
        VALUES ('801000000000001AAA', 'retry', 'card added', 'ops', 'accepted'),
               ('801000000000001AAA', 'retry', 'card added', 'ops', 'accepted');
        """,
    )

    # `fulfillment migrate` as a deployment runs it: no portal tables created.
    applied = await apply_migrations(empty_database)
    assert applied == [
        f"{m.version}_{m.name}" for m in available_migrations() if m.version > "0004"
    ]
    assert await apply_migrations(empty_database) == []

    connection = await asyncpg.connect(empty_database)
    try:
        stored = await connection.fetchval(
            "SELECT checksum FROM schema_migrations WHERE version = '0001'"
        )
        version = await connection.fetchval("SELECT version FROM fulfillments")
        request_ids = await connection.fetch("SELECT request_id FROM operator_actions ORDER BY id")
    finally:
        await connection.close()
    # The record now names the file as it is, so the next edit of 0001 is caught again.
    assert stored == available_migrations()[0].checksum
    assert version == 0
    ids = [row["request_id"] for row in request_ids]
    assert len(set(ids)) == 2 and all(ids)


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


def _migrate_command(
    repo_root: Path, database_url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "migrate", *args],
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url, "LOG_FORMAT": "json"},
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_fulfillment_migrate_command_applies_and_reports(
    empty_database: str, repo_root: Path
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _migrate_command(repo_root, empty_database, *args)

    asyncio.run(_execute(empty_database, PORTAL_ID_MAPPINGS))
    first = run()
    assert first.returncode == 0, first.stderr
    assert f"applied {len(available_migrations())} migration(s)" in first.stdout
    again = run()
    assert again.returncode == 0, again.stderr
    assert "applied 0 migration(s)" in again.stdout
    status = run("--status")
    assert status.stdout.split() == [f"{m.version}_{m.name}" for m in available_migrations()]


def test_fulfillment_migrate_refuses_a_database_without_the_portals_table_in_one_line(
    empty_database: str, repo_root: Path
) -> None:
    result = _migrate_command(repo_root, empty_database)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "id_mappings" in line


@pytest.mark.parametrize("port", ["notaport", "1"])
def test_fulfillment_migrate_never_prints_the_database_password(repo_root: Path, port: str) -> None:
    password = "migrate-s3cret-Pw"
    result = _migrate_command(repo_root, f"postgresql://fulfil:{password}@127.0.0.1:{port}/x")
    assert result.returncode == 1
    assert password not in result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert "postgresql://fulfil:***@127.0.0.1" in line
