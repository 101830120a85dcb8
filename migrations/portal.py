"""Tables the customer portal owns and the engine only reads: the shape relied on, checked.

`id_mappings` is the portal's (docs/design.md, "Postgres"). Production gets it from the portal's own
migrations; the engine verifies the columns it reads instead of creating a table of its own,
which would diverge from the portal's the day either side changes. Only a dev or test database,
where no portal runs, has it created here (`create_portal_tables=True`), and even then an
existing table is checked, never replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as Postgres's format_type() spells it
    unique: bool


ID_MAPPINGS = "id_mappings"
ID_MAPPINGS_COLUMNS = (
    Column("user_id", "uuid", unique=False),
    Column("whmcs_client_id", "bigint", unique=True),
    Column("sf_account_id", "character varying(18)", unique=True),
)

# The same table the first release's 0001 created, so dev databases made before and after the
# change are alike.
_ID_MAPPINGS_DDL = """
CREATE TABLE IF NOT EXISTS id_mappings (
    user_id         uuid PRIMARY KEY,
    whmcs_client_id bigint UNIQUE,
    sf_account_id   varchar(18) UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT id_mappings_sf_account_id_form CHECK (sf_account_id ~ '^[A-Za-z0-9]{18}$')
)
"""

# pg_catalog rather than information_schema: a unique *index* (what Prisma's @unique creates)
# is not a constraint, so information_schema does not show it. Unique means a valid unique
# index on exactly this column, with no predicate: a partial or multi-column one does not stop
# two rows from sharing a WHMCS client id.
_COLUMNS = """
SELECT a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type,
       EXISTS (
           SELECT 1 FROM pg_index i
           WHERE i.indrelid = a.attrelid AND i.indisunique AND i.indisvalid
             AND i.indpred IS NULL AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum
       ) AS unique
FROM pg_attribute a
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
"""


async def create_portal_tables(connection: asyncpg.Connection) -> None:
    """Dev and test only: create the portal's tables where they do not exist yet."""
    await connection.execute(_ID_MAPPINGS_DDL)


async def portal_table_problem(connection: asyncpg.Connection) -> str | None:
    """None when the portal's tables have the shape the engine reads, else one line saying why.

    The line names every difference at once, so one fix and one rerun are enough.
    """
    if await connection.fetchval("SELECT to_regclass($1)", ID_MAPPINGS) is None:
        return (
            f"table {ID_MAPPINGS} does not exist: it belongs to the portal, so apply the portal's "
            "migrations to this database first (only a dev or test database may have the "
            "engine create it, with create_portal_tables)"
        )
    found = {row["name"]: row for row in await connection.fetch(_COLUMNS, ID_MAPPINGS)}
    problems: list[str] = []
    for column in ID_MAPPINGS_COLUMNS:
        row = found.get(column.name)
        if row is None:
            problems.append(f"{column.name} is missing")
            continue
        if row["type"] != column.type:
            problems.append(f"{column.name} is {row['type']}, expected {column.type}")
        if column.unique and not row["unique"]:
            problems.append(f"{column.name} is not unique")
    if not problems:
        return None
    return f"table {ID_MAPPINGS} (the portal's) differs from what the engine reads: " + "; ".join(
        problems
    )
