"""The write contracts the schema gives the activities, tried against a real Postgres.

The statements below are the ones the migrations' comments prescribe (0005 for `fulfillments`,
0006 for `billing_order_intents`, 0007 for `operator_actions`); each test tries to break one:
a late or repeated write, writers racing, a retried POST, a reused WHMCS order id.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from typing import Any

import asyncpg
import pytest

from domain.errors import ErrorCode

# migrations/0005: create-or-advance; no row back means a newer (or this same) version is stored.
UPSERT_FULFILLMENT = """
INSERT INTO fulfillments AS f
    (sf_order_id, sf_account_id, workflow_id, status, step, error_code, error_message,
     whmcs_order_id, whmcs_invoice_id, whmcs_service_ids, attempts, version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (sf_order_id) DO UPDATE SET
    status = EXCLUDED.status, step = EXCLUDED.step,
    error_code = EXCLUDED.error_code, error_message = EXCLUDED.error_message,
    whmcs_order_id = EXCLUDED.whmcs_order_id, whmcs_invoice_id = EXCLUDED.whmcs_invoice_id,
    whmcs_service_ids = EXCLUDED.whmcs_service_ids, attempts = EXCLUDED.attempts,
    version = EXCLUDED.version, updated_at = now()
WHERE f.version < EXCLUDED.version
RETURNING version
"""

# migrations/0005: the same contract for a write to a row that exists.
ADVANCE_FULFILLMENT = """
UPDATE fulfillments SET status = $3, step = $4, version = $2, updated_at = now()
WHERE sf_order_id = $1 AND version < $2
"""

# migrations/0007: recorded once per request id; no row back means it was recorded before.
RECORD_OPERATOR_ACTION = """
INSERT INTO operator_actions (request_id, sf_order_id, action, reason, requested_by, outcome)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (request_id) DO NOTHING
RETURNING id
"""


def _order_id() -> str:
    return "801" + secrets.token_hex(8).upper()[:15]


async def _write(
    db: asyncpg.Connection | asyncpg.Pool,
    order_id: str,
    version: int,
    *,
    status: str = "activating",
    step: str | None = None,
    error_code: str | None = None,
) -> int | None:
    value: int | None = await db.fetchval(
        UPSERT_FULFILLMENT,
        order_id,
        "001000000000001AAA",
        f"order-fulfillment-{order_id}",
        status,
        step or f"step-{version}",
        error_code,
        None if error_code is None else "message",
        None,
        None,
        [],
        0,
        version,
    )
    return value


async def _row(db: asyncpg.Connection, order_id: str) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT status, step, error_code, version FROM fulfillments WHERE sf_order_id = $1",
        order_id,
    )
    assert row is not None
    return dict(row)


async def test_a_late_write_with_an_older_version_leaves_the_row_unchanged(
    db: asyncpg.Connection,
) -> None:
    order_id = _order_id()
    assert await _write(db, order_id, 1, step="load_order") == 1
    assert (
        await _write(
            db,
            order_id,
            3,
            status="failed",
            step="validate_payment_method",
            error_code="PAYMENT_METHOD_MISSING",
        )
        == 3
    )
    # The reply to version 2 was lost and its activity retried after version 3 landed.
    assert await _write(db, order_id, 2, step="resolve_billing_client") is None
    # A repeat of the write already stored is a no-op too, not an error.
    assert await _write(db, order_id, 3, status="activating", step="again") is None
    assert await _row(db, order_id) == {
        "status": "failed",
        "step": "validate_payment_method",
        "error_code": "PAYMENT_METHOD_MISSING",
        "version": 3,
    }

    assert await db.execute(ADVANCE_FULFILLMENT, order_id, 2, "activating", "stale") == "UPDATE 0"
    assert await db.execute(ADVANCE_FULFILLMENT, order_id, 4, "activating", "retry") == "UPDATE 1"
    assert (await _row(db, order_id))["step"] == "retry"


async def test_racing_writers_in_any_order_end_on_the_newest_version(
    migrated_database_url: str,
) -> None:
    order_id = _order_id()
    versions = list(range(1, 31))
    random.Random(8).shuffle(versions)
    pool = await asyncpg.create_pool(migrated_database_url, min_size=6, max_size=6)
    try:
        await asyncio.gather(*(_write(pool, order_id, version) for version in versions))
        async with pool.acquire() as connection:
            row = await _row(connection, order_id)
    finally:
        await pool.close()
    assert (row["version"], row["step"]) == (30, "step-30")


async def test_a_writer_that_skips_the_version_check_cannot_move_the_row_back(
    db: asyncpg.Connection,
) -> None:
    order_id = _order_id()
    await _write(db, order_id, 5)
    with pytest.raises(asyncpg.CheckViolationError, match="older than"):
        await db.execute(
            "UPDATE fulfillments SET status = 'pending', version = 4 WHERE sf_order_id = $1",
            order_id,
        )
    # Writes that leave the version alone (an operator's manual fix) are not blocked.
    await db.execute("UPDATE fulfillments SET step = 'manual' WHERE sf_order_id = $1", order_id)
    assert (await _row(db, order_id))["version"] == 5


@pytest.mark.parametrize("code", [None, *ErrorCode])
async def test_error_code_accepts_the_closed_list_and_null(
    db: asyncpg.Connection, code: str | None
) -> None:
    order_id = _order_id()
    await _write(db, order_id, 1, status="failed", error_code=code)
    assert (await _row(db, order_id))["error_code"] == code


@pytest.mark.parametrize("code", ["SOMETHING_ELSE", "payment_method_missing", "", " INVALID_ORDER"])
async def test_error_code_outside_the_closed_list_is_refused(
    db: asyncpg.Connection, code: str
) -> None:
    order_id = _order_id()
    with pytest.raises(asyncpg.CheckViolationError, match="fulfillments_error_code_known"):
        await _write(db, order_id, 1, status="failed", error_code=code)


async def test_one_whmcs_order_belongs_to_one_billing_intent(db: asyncpg.Connection) -> None:
    first, second, pending = _order_id(), _order_id(), _order_id()
    for order_id in (first, second, pending):
        await db.execute(
            "INSERT INTO fulfillments (sf_order_id, sf_account_id, workflow_id) "
            "VALUES ($1, $2, $3)",
            order_id,
            "001000000000001AAA",
            f"order-fulfillment-{order_id}",
        )
    insert = (
        "INSERT INTO billing_order_intents (sf_order_id, whmcs_client_id, whmcs_order_id) "
        "VALUES ($1, 7, $2)"
    )
    whmcs_order_id = random.Random().randrange(10**9, 10**10)
    await db.execute(insert, first, whmcs_order_id)
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(insert, second, whmcs_order_id)
    # Intents still waiting for AddOrder's reply have no WHMCS order id yet; many may wait.
    await db.execute(insert, second, None)
    await db.execute(insert, pending, None)


async def test_an_operator_action_is_recorded_once_per_request_id(
    migrated_database_url: str,
) -> None:
    order_id = _order_id()
    request_id = f"req-{secrets.token_hex(8)}"
    args = (request_id, order_id, "retry", "card added", "ops@example.com", "accepted")
    # A retried POST, and the same action arriving as update and as signal, all at once.
    connections = [await asyncpg.connect(migrated_database_url) for _ in range(4)]
    try:
        ids = await asyncio.gather(
            *(connection.fetchval(RECORD_OPERATOR_ACTION, *args) for connection in connections)
        )
        again = await connections[0].fetchval(RECORD_OPERATOR_ACTION, *args)
        rows = await connections[0].fetch(
            "SELECT request_id FROM operator_actions WHERE sf_order_id = $1", order_id
        )
    finally:
        for connection in connections:
            await connection.close()
    assert len([i for i in ids if i is not None]) == 1 and again is None
    assert [row["request_id"] for row in rows] == [request_id]


@pytest.mark.parametrize("request_id", [None, ""])
async def test_an_operator_action_needs_a_request_id(
    db: asyncpg.Connection, request_id: str | None
) -> None:
    with pytest.raises((asyncpg.NotNullViolationError, asyncpg.CheckViolationError)):
        await db.fetchval(
            RECORD_OPERATOR_ACTION, request_id, _order_id(), "cancel", "r", "ops", "accepted"
        )
