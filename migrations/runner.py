"""Apply this package's SQL files in name order, each once, recorded in `schema_migrations`.

Safe to run twice (applied versions are skipped) and from two processes at once: the whole run
holds a Postgres advisory lock, so a second runner waits and then finds nothing left to do.
Each file runs in its own transaction together with its row in `schema_migrations`, so a failed
file leaves no half-applied schema behind. An applied file whose text changed since is refused:
migrations are append-only, a change goes into a new file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

# Any fixed 64-bit number; it only has to be the same for every runner of this schema.
_LOCK_ID = 0x0F_0F_F1_11_0E_D0_00_01
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


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


async def apply_migrations(database_url: str) -> list[str]:
    """Apply what is pending; return the `NNNN_name` of each migration applied by this call."""
    migrations = available_migrations()
    connection: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            return await _apply(connection, migrations)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await connection.close()


async def applied_versions(database_url: str) -> dict[str, str]:
    connection: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        if await connection.fetchval("SELECT to_regclass('schema_migrations')") is None:
            return {}
        rows = await connection.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
        return {row["version"]: row["name"] for row in rows}
    finally:
        await connection.close()


async def _apply(connection: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
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
            if row["checksum"] != migration.checksum:
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
