"""Concurrent handling, in-order cursors: a slow event holds the cursor, never the stream."""

from __future__ import annotations

import asyncio
from datetime import datetime

from cdc_listener.pipeline import Pipeline


class Cursors:
    def __init__(self) -> None:
        self.moves: list[tuple[str, int]] = []

    async def advance(
        self, channel: str, replay_id: str, position: int, _at: datetime | None
    ) -> None:
        assert replay_id == f"r{position}"
        self.moves.append((channel, position))


async def test_the_cursor_moves_only_past_events_handled_in_arrival_order() -> None:
    cursors = Cursors()
    pipeline = Pipeline(cursors.advance, concurrency=8)
    slow_done = asyncio.Event()
    handled: list[int] = []

    async def work(replay_id: int, gate: asyncio.Event | None = None) -> None:
        if gate is not None:
            await gate.wait()
        handled.append(replay_id)

    await pipeline.submit("/data/OrderChangeEvent", "r1", 1, None, work(1, slow_done))
    await pipeline.submit("/data/OrderChangeEvent", "r2", 2, None, work(2))
    await pipeline.submit("/data/OrderChangeEvent", "r3", 3, None, work(3))
    await asyncio.sleep(0.05)
    # 2 and 3 are done, but 1 is not: a crash now must replay 1, so nothing moved.
    assert handled == [2, 3] and cursors.moves == []
    slow_done.set()
    assert await pipeline.drain(within=1)
    assert cursors.moves == [("/data/OrderChangeEvent", 3)]


async def test_channels_move_independently() -> None:
    cursors = Cursors()
    pipeline = Pipeline(cursors.advance, concurrency=8)
    gate = asyncio.Event()

    async def blocked() -> None:
        await gate.wait()

    async def quick() -> None:
        return None

    await pipeline.submit("/data/OrderChangeEvent", "r10", 10, None, blocked())
    await pipeline.submit("/data/Product2ChangeEvent", "r20", 20, None, quick())
    await asyncio.sleep(0.05)
    assert cursors.moves == [("/data/Product2ChangeEvent", 20)]
    gate.set()
    await pipeline.drain(within=1)
    assert ("/data/OrderChangeEvent", 10) in cursors.moves


async def test_a_full_pipeline_holds_the_stream_back() -> None:
    cursors = Cursors()
    pipeline = Pipeline(cursors.advance, concurrency=2)
    gate = asyncio.Event()

    async def blocked() -> None:
        await gate.wait()

    await pipeline.submit("c", "r1", 1, None, blocked())
    await pipeline.submit("c", "r2", 2, None, blocked())
    third = asyncio.create_task(pipeline.submit("c", "r3", 3, None, blocked()))
    await asyncio.sleep(0.05)
    assert not third.done()  # no third event is taken while two are in hand
    gate.set()
    await third
    await pipeline.drain(within=1)
    assert cursors.moves[-1] == ("c", 3)


async def test_closing_drops_unfinished_events_without_moving_past_them() -> None:
    cursors = Cursors()
    pipeline = Pipeline(cursors.advance, concurrency=4)
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    await pipeline.submit("c", "r5", 5, None, stuck())
    await asyncio.sleep(0)  # the event is in hand
    await pipeline.close()
    assert cursors.moves == [] and pipeline.in_flight == 0


async def test_the_age_of_the_oldest_event_in_hand_grows_until_it_is_handled() -> None:
    pipeline = Pipeline(Cursors().advance, concurrency=8)
    gate = asyncio.Event()

    async def stuck() -> None:
        await gate.wait()

    async def quick() -> None:
        return None

    assert pipeline.oldest_in_hand() == 0.0
    await pipeline.submit("/data/OrderChangeEvent", "r1", 1, None, stuck())
    await pipeline.submit("/data/OrderChangeEvent", "r2", 2, None, quick())
    await asyncio.sleep(0.2)
    # The later event is done; the stuck one alone is counted, and its age keeps growing.
    first = pipeline.oldest_in_hand()
    await asyncio.sleep(0.1)
    assert 0.2 <= first < pipeline.oldest_in_hand()
    gate.set()
    assert await pipeline.drain(within=1)
    assert pipeline.oldest_in_hand() == 0.0
