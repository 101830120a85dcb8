"""Concurrent handling, in-order cursors.

Events are handled concurrently (bounded: a full pipeline stops taking messages, so a slow start
never piles up memory), and each channel's cursor advances only past events whose handling
finished, in the order they arrived: a crash never skips an event, and a slow event holds only
the cursor, never the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class _Slot:
    replay_id: str
    position: int
    event_at: datetime | None
    done: bool = False
    taken_at: float = field(default_factory=time.monotonic)


# (channel, replay id, its position in the listener's order, when the event was committed)
Advance = Callable[[str, str, int, datetime | None], Awaitable[None]]


class Pipeline:
    def __init__(self, advance: Advance, *, concurrency: int = 32) -> None:
        self._advance = advance
        self._room = asyncio.Semaphore(concurrency)
        self._slots: dict[str, deque[_Slot]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    async def submit(
        self,
        channel: str,
        replay_id: str,
        position: int,
        event_at: datetime | None,
        work: Awaitable[None],
    ) -> None:
        """Queue `work` for the event; waits while the pipeline is full. `work` must finish
        only when the event is handled (it retries internally)."""
        if self._failure is not None:
            raise self._failure
        await self._room.acquire()
        slot = _Slot(replay_id, position, event_at)
        self._slots.setdefault(channel, deque()).append(slot)
        task = asyncio.create_task(self._run(channel, slot, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, channel: str, slot: _Slot, work: Awaitable[None]) -> None:
        try:
            await work
            slot.done = True
            await self._move(channel)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # the cursor store failed: the session must restart
            self._failure = error
        finally:
            self._room.release()

    async def _move(self, channel: str) -> None:
        lock = self._locks.setdefault(channel, asyncio.Lock())
        async with lock:
            slots = self._slots[channel]
            last: _Slot | None = None
            while slots and slots[0].done:
                last = slots.popleft()
            if last is not None:
                await self._advance(channel, last.replay_id, last.position, last.event_at)

    async def drain(self, within: float) -> bool:
        """Wait for events in hand to finish (before a reconnect); False if time ran out."""
        if not self._tasks:
            return True
        _done, pending = await asyncio.wait(set(self._tasks), timeout=within)
        return not pending

    async def close(self) -> None:
        """Drop what is in hand: those events come again from the stored cursor."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def oldest_in_hand(self) -> float:
        """Seconds since the oldest event still being handled was taken (0 when none is): an
        event that keeps failing holds its channel's cursor, and this keeps growing."""
        taken = [slot.taken_at for slots in self._slots.values() for slot in slots if not slot.done]
        return time.monotonic() - min(taken) if taken else 0.0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def failure(self) -> BaseException | None:
        return self._failure
