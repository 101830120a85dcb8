"""`fulfillment migrate --status` against a real Postgres: every migration, applied or pending,
and an exit status a deploy step can act on (0 up to date, 3 pending, 1 drifted or unreachable).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest_asyncio

from cli.main import PENDING_EXIT
from migrations.runner import apply_migrations, available_migrations, migration_status
from tests.fixtures.services import with_database

REPO = Path(__file__).resolve().parents[2]
LABELS = [f"{m.version}_{m.name}" for m in available_migrations()]


@pytest_asyncio.fixture
async def fresh_database(postgres_server_url: str) -> AsyncIterator[str]:
    """A database of this test's own, with the portal's tables and no migration applied."""
    name = f"migrate_status_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(postgres_server_url, name)
    # Nothing applied, but the portal's id_mappings in place, as a production database has it.
    await apply_migrations(url, create_portal_tables=True, migrations=[])
    yield url
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def status(database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "migrate", "--status"],
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url, "LOG_FORMAT": "json"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def execute(database_url: str, sql: str, *args: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(sql, *args)
    finally:
        await connection.close()


async def test_a_database_with_nothing_applied_lists_every_migration_pending(
    fresh_database: str,
) -> None:
    ran = status(fresh_database)
    assert ran.returncode == PENDING_EXIT == 3, ran.stderr
    assert ran.stdout.splitlines() == [f"{label}  (pending)" for label in LABELS]
    (line,) = ran.stderr.splitlines()
    assert f"{len(LABELS)} pending" in line


async def test_applied_ones_are_listed_bare_and_the_rest_pending(fresh_database: str) -> None:
    await apply_migrations(fresh_database, migrations=available_migrations()[:5])
    ran = status(fresh_database)
    assert ran.returncode == PENDING_EXIT, ran.stderr
    assert ran.stdout.splitlines() == LABELS[:5] + [f"{label}  (pending)" for label in LABELS[5:]]
    assert f"{len(LABELS) - 5} pending" in ran.stderr


async def test_an_up_to_date_database_lists_them_all_and_exits_0(fresh_database: str) -> None:
    await apply_migrations(fresh_database)
    ran = status(fresh_database)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == LABELS
    assert ran.stderr == ""


async def test_an_applied_migration_whose_file_changed_exits_1(fresh_database: str) -> None:
    await apply_migrations(fresh_database)
    await execute(
        fresh_database,
        "UPDATE schema_migrations SET checksum = 'edited' WHERE version = $1",
        LABELS[2][:4],
    )
    ran = status(fresh_database)
    assert ran.returncode == 1
    assert f"{LABELS[2]}  (changed since it was applied" in ran.stdout
    assert LABELS[2] in ran.stderr


async def test_a_migration_from_a_newer_release_is_named_and_not_an_error(
    fresh_database: str,
) -> None:
    await apply_migrations(fresh_database)
    await execute(
        fresh_database,
        "INSERT INTO schema_migrations (version, name, checksum) "
        "VALUES ('9999', 'from_the_future', 'x')",
    )
    states = await migration_status(fresh_database)
    assert [(s.label, s.state) for s in states][-1] == ("9999_from_the_future", "unknown")
    ran = status(fresh_database)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-1].startswith("9999_from_the_future  (applied by a newer")


async def test_a_rewritten_migrations_earlier_text_counts_as_applied(fresh_database: str) -> None:
    await apply_migrations(fresh_database)
    earlier = "2244c388374a6bd40e82b3e8bb4f36afbd917e6fc7be732a1abf5ec1e7cddd49"
    await execute(
        fresh_database,
        "UPDATE schema_migrations SET checksum = $1 WHERE version = '0001'",
        earlier,
    )
    states = await migration_status(fresh_database)
    assert {s.state for s in states} == {"applied"}


def test_an_unreachable_database_is_one_line_and_exit_1() -> None:
    ran = status("postgresql://fulfil:status-s3cret@127.0.0.1:1/x")
    assert ran.returncode == 1
    (line,) = ran.stderr.splitlines()
    assert "status-s3cret" not in ran.stdout + ran.stderr
    assert line.startswith("fulfillment migrate: cannot connect")
