"""The listener's cursors in a real Postgres: only ever written forward."""

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
        await store.advance(CHANNEL, 20, at)
        # A replica that lost the lease, or a session ending late, writes an older id: ignored.
        await store.advance(CHANNEL, 12, None)
        assert (await store.cursors([CHANNEL]))[CHANNEL].replay_id == 20
        await store.advance(CHANNEL, 31, None)
        cursor = (await store.cursors([CHANNEL]))[CHANNEL]
        assert (cursor.replay_id, cursor.last_event_at) == (31, at)
        # Out of Salesforce's retention: forgotten first, then any id is the new start.
        await store.forget(CHANNEL)
        await store.advance(CHANNEL, 5, None)
        assert (await store.cursors([CHANNEL]))[CHANNEL].replay_id == 5
    finally:
        await store.forget(CHANNEL)
        await pool.close()
