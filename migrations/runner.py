"""Apply this package's SQL files in name order, each once, recorded in `schema_migrations`.

Safe to run twice (applied versions are skipped) and from two processes at once: the whole run
holds a Postgres advisory lock, so a second runner waits and then finds nothing left to do.
Each file runs in its own transaction together with its row in `schema_migrations`, so a failed
file leaves no half-applied schema behind. An applied file whose text changed since is refused:
migrations are append-only, a change goes into a new file (the one exception, `_REWRITTEN`, is
listed with its reason).

Before any file runs, the portal's tables are checked (`migrations.portal`): a database without
the portal's `id_mappings`, or with one of another shape, is refused in one line and left as it
was. Dev and test databases pass `create_portal_tables=True` to have the table created first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import asyncpg

from config.redaction import redact_url, url_passwords
from migrations.portal import create_portal_tables as _create_portal_tables
from migrations.portal import portal_table_problem

# Any fixed 64-bit number; it only has to be the same for every runner of this schema.
_LOCK_ID = 0x0F_0F_F1_11_0E_D0_00_01
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

# Applied files that were rewritten on purpose, with the checksums of their earlier text. A
# database that applied an earlier text is accepted, and its record updated to the file as it
# is now, instead of being refused as drifted. Only a rewrite after which both texts leave an
# acceptable schema belongs here.
_REWRITTEN: dict[str, frozenset[str]] = {
    # 0001 used to create id_mappings, which belongs to the portal (migrations/portal.py). A
    # database that ran it has that table with the shape the portal check accepts, and the
    # check runs on every migrate, so the earlier text is as good as the present one.
    "0001": frozenset({"2244c388374a6bd40e82b3e8bb4f36afbd917e6fc7be732a1abf5ec1e7cddd49"}),
}


class MigrationError(Exception):
    """A migration could not be applied, or the database has drifted from the files."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files(__package__ or "migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(match["version"], match["name"], entry.read_text("utf-8")))
        elif entry.name.endswith(".sql"):
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


async def apply_migrations(
    database_url: str,
    *,
    create_portal_tables: bool = False,
    migrations: Sequence[Migration] | None = None,
) -> list[str]:
    """Apply what is pending; return the `NNNN_name` of each migration applied by this call.

    `create_portal_tables` is for dev and test databases only: production gets the portal's
    tables from the portal, and the engine must not create a divergent copy before it does.
    `migrations` defaults to this package's files (tests pass an older release's set).
    """
    if migrations is None:
        migrations = available_migrations()
    connection = await _connect(database_url)
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            if create_portal_tables:
                await _create_portal_tables(connection)
            if problem := await portal_table_problem(connection):
                raise MigrationError(problem)
            return await _apply(connection, migrations)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await connection.close()


async def applied_versions(database_url: str) -> dict[str, str]:
    connection = await _connect(database_url)
    try:
        if await connection.fetchval("SELECT to_regclass('schema_migrations')") is None:
            return {}
        rows = await connection.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
        return {row["version"]: row["name"] for row in rows}
    finally:
        await connection.close()


State = Literal["applied", "pending", "changed", "unknown"]


@dataclass(frozen=True)
class MigrationState:
    """One migration as the database has it: `applied`; `pending` (a file not applied yet);
    `changed` (applied, and its file edited since: `apply_migrations` would refuse); `unknown`
    (applied, with no file in this release: a database migrated by a newer one)."""

    version: str
    name: str
    state: State

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"


async def migration_status(
    database_url: str, *, migrations: Sequence[Migration] | None = None
) -> list[MigrationState]:
    """Every migration, applied or not, in version order; reads only, takes no lock."""
    if migrations is None:
        migrations = available_migrations()
    connection = await _connect(database_url)
    try:
        rows: list[asyncpg.Record] = []
        if await connection.fetchval("SELECT to_regclass('schema_migrations')") is not None:
            rows = await connection.fetch("SELECT version, name, checksum FROM schema_migrations")
    finally:
        await connection.close()
    applied = {row["version"]: row for row in rows}
    states: list[MigrationState] = []
    for migration in migrations:
        row = applied.pop(migration.version, None)
        if row is None:
            state: State = "pending"
        elif row["checksum"] == migration.checksum or row["checksum"] in _REWRITTEN.get(
            migration.version, frozenset()
        ):
            state = "applied"
        else:
            state = "changed"
        states.append(MigrationState(migration.version, migration.name, state))
    states += [MigrationState(row["version"], row["name"], "unknown") for row in applied.values()]
    return sorted(states, key=lambda entry: entry.version)


async def _connect(database_url: str) -> asyncpg.Connection:
    try:
        connection: asyncpg.Connection = await asyncpg.connect(database_url)
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # One line for the operator, without the password (asyncpg's DSN errors may quote it).
        reason = redact_url(str(exc))
        for password in url_passwords(database_url):
            if len(password) >= 4:
                reason = reason.replace(password, "***")
        raise MigrationError(f"cannot connect to {redact_url(database_url)}: {reason}") from None
    return connection


async def _apply(connection: asyncpg.Connection, migrations: Sequence[Migration]) -> list[str]:
    await connection.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    text PRIMARY KEY,
            name       text NOT NULL,
            checksum   text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    rows = await connection.fetch("SELECT version, name, checksum FROM schema_migrations")
    applied = {row["version"]: row for row in rows}
    done: list[str] = []
    for migration in migrations:
        row = applied.get(migration.version)
        if row is not None:
            if row["checksum"] in _REWRITTEN.get(migration.version, frozenset()):
                await connection.execute(
                    "UPDATE schema_migrations SET checksum = $2, name = $3 WHERE version = $1",
                    migration.version,
                    migration.checksum,
                    migration.name,
                )
            elif row["checksum"] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version}_{migration.name} was changed after it was "
                    "applied; add a new migration file instead of editing an applied one"
                )
            continue
        try:
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"migration {migration.version}_{migration.name} failed: {exc}"
            ) from exc
        done.append(f"{migration.version}_{migration.name}")
    return done
