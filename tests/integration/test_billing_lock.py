"""create_billing_order's lock: attempts for one order take turns; many orders at once never
starve the connection pool."""

from __future__ import annotations

import asyncio

from clients.fulfillment_store import FulfillmentStore
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


async def test_only_the_first_intent_proves_no_order_was_sent(migrated_database_url: str) -> None:
    """The first attempt may skip the lookup by marker; any later one (a retry, another run of
    the same order) must not, whether or not the earlier one got as far as a result."""
    pool = await create_pool(migrated_database_url, min_size=1, max_size=2)
    store = FulfillmentStore(pool)
    order = "801000000000998AAA"
    try:
        async with store.billing_lock(order) as record:
            assert await record.intent(901) is False
        async with store.billing_lock(order) as record:
            assert await record.intent(902) is True
            await record.result(BillingOrderResult(whmcs_order_id=70_998))
        async with store.billing_lock(order) as record:
            assert await record.intent(902) is True
        row = await pool.fetchrow(
            "SELECT whmcs_client_id, whmcs_order_id FROM billing_order_intents"
            " WHERE sf_order_id = $1",
            order,
        )
        assert row is not None and (row["whmcs_client_id"], row["whmcs_order_id"]) == (
            902,
            70_998,
        )
    finally:
        await pool.execute("DELETE FROM billing_order_intents WHERE sf_order_id = $1", order)
        await pool.execute("DELETE FROM fulfillments WHERE sf_order_id = $1", order)
        await pool.close()
