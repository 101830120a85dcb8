"""Heartbeats: how Temporal learns within seconds that the worker running an activity died.

Without them a dead worker's activity is found only by its start-to-close timeout, which must
outlast the slowest legitimate call (minutes). With them, an attempt whose worker stops
heartbeating is retried after the short heartbeat timeout the workflow sets.

`heartbeating()` keeps a heartbeat going while an activity runs (every third of its heartbeat
timeout; nothing for local activities or activities without one, and nothing at all for an
activity that ends before the first beat). `remember(key, value)` adds a detail that the next
attempt reads back with `remembered(key)`: the server keeps the latest heartbeat's details with
the activity, apart from our database, so a fact such as "AddOrder may have been sent" survives a
restored Postgres. Every beat repeats every detail remembered so far (the server keeps only the
latest beat), starting with those of the previous attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

from temporalio import activity

_details: ContextVar[dict[str, Any] | None] = ContextVar("heartbeat_details", default=None)


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Beat until the block ends, carrying the details remembered by this attempt and the last."""
    if not activity.in_activity():
        yield
        return
    info = activity.info()
    details = dict(_previous_details(info.heartbeat_details))
    token = _details.set(details)
    ticker = None
    if not info.is_local and info.heartbeat_timeout:
        interval = info.heartbeat_timeout.total_seconds() / 3
        ticker = asyncio.create_task(_beat(details, interval))
    try:
        yield
    finally:
        _details.reset(token)
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker


def remember(key: str, value: Any) -> None:
    """Record `key` in the heartbeat details now (sent at once unless a beat just went out)."""
    details = _details.get()
    if details is None:
        return
    details[key] = value
    if not activity.info().is_local:
        activity.heartbeat(dict(details))


def remembered(key: str) -> Any:
    """What this attempt or an earlier one remembered under `key`, or None."""
    details = _details.get()
    return None if details is None else details.get(key)


def _previous_details(recorded: Any) -> dict[str, Any]:
    for detail in recorded or ():
        if isinstance(detail, dict):
            return detail
    return {}


async def _beat(details: dict[str, Any], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        activity.heartbeat(dict(details))
