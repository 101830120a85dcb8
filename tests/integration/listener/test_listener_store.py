"""The listener's cursors in a real Postgres: only ever written forward, per transport."""

from __future__ import annotations

from datetime import UTC, datetime

from cdc_listener.store import ListenerStore
from clients.postgres import create_pool

CHANNEL = "/data/TestCursorChangeEvent"


async def test_a_cursor_is_only_ever_written_forward(migrated_database_url: str) -> None:
    pool = await create_pool(migrated_database_url, min_size=1, max_size=2)
    store = ListenerStore(pool)
    try:
        await store.forget(CHANNEL)
        at = datetime(2026, 12, 7, tzinfo=UTC)
        await store.advance(CHANNEL, "20", 20, at)
        # A replica that lost the lease, or a session ending late, writes an older id: ignored.
        await store.advance(CHANNEL, "12", 12, None)
        assert (await store.cursors([CHANNEL]))[CHANNEL].replay_id == "20"
        await store.advance(CHANNEL, "31", 31, None)
        cursor = (await store.cursors([CHANNEL]))[CHANNEL]
        assert (cursor.replay_id, cursor.position, cursor.last_event_at) == ("31", 31, at)
        # Out of Salesforce's retention: forgotten first, then any id is the new start.
        await store.forget(CHANNEL)
        await store.advance(CHANNEL, "5", 5, None)
        assert (await store.cursors([CHANNEL]))[CHANNEL].replay_id == "5"
    finally:
        await store.forget(CHANNEL)
        await pool.close()


async def test_opaque_replay_ids_are_ordered_by_position_and_kept_per_transport(
    migrated_database_url: str,
) -> None:
    pool = await create_pool(migrated_database_url, min_size=1, max_size=2)
    cometd, pubsub = ListenerStore(pool, "cometd"), ListenerStore(pool, "pubsub")
    try:
        for store in (cometd, pubsub):
            await store.forget(CHANNEL)
        await cometd.advance(CHANNEL, "9000100", 9000100, None)
        # Opaque ids compare as nothing: the position (order of receipt) decides.
        await pubsub.advance(CHANNEL, "ff00", 7, None)
        await pubsub.advance(CHANNEL, "00aa", 6, None)
        assert (await pubsub.cursors([CHANNEL]))[CHANNEL].replay_id == "ff00"
        await pubsub.advance(CHANNEL, "0001", 8, None)
        assert (await pubsub.cursors([CHANNEL]))[CHANNEL].replay_id == "0001"
        # Neither transport sees, or moves, the other's cursor.
        assert (await cometd.cursors([CHANNEL]))[CHANNEL].replay_id == "9000100"
        await cometd.forget(CHANNEL)
        assert CHANNEL in await pubsub.cursors([CHANNEL])
    finally:
        for store in (cometd, pubsub):
            await store.forget(CHANNEL)
        await pool.close()
