"""create_billing_order's lock and intent: attempts for one order take turns (and a lock held
too long is reported as such); many orders at once never starve the connection pool; the intent
remembers when AddOrder was last sent."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from clients.fulfillment_store import BillingIntent, BillingLockBusy, FulfillmentStore
from clients.postgres import create_pool
from domain.billing import BillingOrderResult


async def test_many_orders_billing_at_once_need_one_connection_each(
    migrated_database_url: str,
) -> None:
    pool = await create_pool(migrated_database_url, min_size=1, max_size=2)
    store = FulfillmentStore(pool)
    orders = [f"80100000000{n:04d}AAA" for n in range(6)]
    try:

        async def bill(index: int, order: str) -> None:
            async with store.billing_lock(order) as record:
                await record.intent(900 + index)
                await asyncio.sleep(0.05)  # the AddOrder call
                await record.result(BillingOrderResult(whmcs_order_id=70_000 + index))

        # Three times the pool: with a second connection per attempt this would wait forever.
        async with asyncio.timeout(20):
            await asyncio.gather(*(bill(i, order) for i, order in enumerate(orders)))
        rows = await pool.fetch(
            "SELECT sf_order_id, whmcs_order_id FROM billing_order_intents"
            " WHERE sf_order_id = ANY($1::text[])",
            orders,
        )
        assert len(rows) == len(orders) and all(row["whmcs_order_id"] for row in rows)
    finally:
        await pool.execute(
            "DELETE FROM billing_order_intents WHERE sf_order_id = ANY($1::text[])", orders
        )
        await pool.execute("DELETE FROM fulfillments WHERE sf_order_id = ANY($1::text[])", orders)
        await pool.close()


async def test_attempts_for_one_order_take_turns(migrated_database_url: str) -> None:
    pool = await create_pool(migrated_database_url, min_size=1, max_size=4)
    store = FulfillmentStore(pool)
    order = "801000000000999AAA"
    inside = 0
    most = 0

    async def attempt() -> None:
        nonlocal inside, most
        async with store.billing_lock(order):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.05)
            inside -= 1

    try:
        async with asyncio.timeout(20):
            await asyncio.gather(*(attempt() for _ in range(4)))
        assert most == 1
    finally:
        await pool.close()


async def test_the_intent_remembers_when_add_order_was_last_sent(
    migrated_database_url: str,
) -> None:
    pool = await create_pool(migrated_database_url, min_size=1, max_size=2)
    store = FulfillmentStore(pool)
    order = "801000000000998AAA"
    sent = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    try:
        async with store.billing_lock(order) as record:
            assert await record.intent(901) == BillingIntent(existed=False)
        async with store.billing_lock(order) as record:
            assert await record.intent(902) == BillingIntent(existed=True)
            await record.sending(sent)
        async with store.billing_lock(order) as record:
            assert await record.intent(902) == BillingIntent(existed=True, sent_at=sent)
            await record.result(BillingOrderResult(whmcs_order_id=70_998))
        row = await pool.fetchrow(
            "SELECT whmcs_client_id, whmcs_order_id FROM billing_order_intents"
            " WHERE sf_order_id = $1",
            order,
        )
        assert row is not None and (row["whmcs_client_id"], row["whmcs_order_id"]) == (
            902,
            70_998,
        )
        # A restore from a backup taken before the intent: nothing says an order was sent.
        await pool.execute("DELETE FROM billing_order_intents WHERE sf_order_id = $1", order)
        async with store.billing_lock(order) as record:
            assert await record.intent(902) == BillingIntent(existed=False)
    finally:
        await pool.execute("DELETE FROM billing_order_intents WHERE sf_order_id = $1", order)
        await pool.execute("DELETE FROM fulfillments WHERE sf_order_id = $1", order)
        await pool.close()


async def test_a_lock_held_too_long_is_reported_as_busy_not_as_postgres_down(
    migrated_database_url: str,
) -> None:
    pool = await create_pool(migrated_database_url, min_size=1, max_size=3)
    store = FulfillmentStore(pool)
    order = "801000000000997AAA"
    try:
        async with store.billing_lock(order):
            started = time.monotonic()
            with pytest.raises(BillingLockBusy) as busy:
                async with store.billing_lock(order, wait=0.5):
                    pytest.fail("two attempts held one order's lock")
            assert 0.5 <= time.monotonic() - started < 5
        assert "another attempt is still billing this order" in str(busy.value)
        # Released with the holder: the next attempt takes it at once.
        async with asyncio.timeout(2), store.billing_lock(order, wait=0.5):
            pass
    finally:
        await pool.close()
