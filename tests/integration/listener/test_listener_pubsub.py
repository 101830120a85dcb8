"""What only the Pub/Sub API gives the listener: keepalives that keep a quiet channel's cursor
fresh, a watchdog on keepalives that stop, and flow control over a backlog."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.fixtures.engine import Engine
from tests.integration.listener.test_listener import (
    _subscribed,
    cursor,
    fulfilled,
    listener_settings,
    listening,
    until,
)
from tests.support.database import fetch_value

pytestmark = pytest.mark.usefixtures("worker")
ORDERS = "/data/OrderChangeEvent"


def pubsub(engine: Engine, **overrides: Any) -> Any:
    return listener_settings(engine, cdc_transport="pubsub", **overrides)


async def _last_event_at(engine: Engine, channel: str) -> datetime | None:
    value: datetime | None = await fetch_value(
        engine.settings.database_url,
        "SELECT last_event_at FROM cdc_replay_cursors WHERE transport = 'pubsub' AND channel = $1",
        channel,
    )
    return value


async def test_a_quiet_channels_cursor_follows_the_keepalives(engine: Engine) -> None:
    keepalive = 0.3
    engine.sf.control("POST", "config", {"pubsub_keepalive_seconds": keepalive})
    engine.settings = pubsub(engine)
    async with listening(engine.settings):
        order_id = engine.activate("internet")
        await fulfilled(engine, order_id)
        # Nothing happens on the channel any more: only keepalives arrive. Each moves the
        # cursor to Salesforce's newest replay id, dated when it came.
        moved = await cursor(engine, ORDERS)
        assert moved is not None
        await until(lambda: _past(engine, moved + 3), within=10)
        for _ in range(5):
            await asyncio.sleep(keepalive)
            seen = await _last_event_at(engine, ORDERS)
            assert seen is not None
            age = (datetime.now(UTC) - seen).total_seconds()
            assert age < 3 * keepalive, f"cursor {age:.2f} s old with keepalives every {keepalive}"
        gauge = REGISTRY.get_sample_value("fulfillment_cdc_cursor_age_seconds", {"channel": ORDERS})
        assert gauge is not None and gauge < 3 * keepalive


async def _past(engine: Engine, position: int) -> bool:
    value = await cursor(engine, ORDERS)
    return value is not None and value >= position


def _reconnects(reason: str) -> float:
    value = REGISTRY.get_sample_value("fulfillment_cdc_reconnects_total", {"reason": reason})
    return value or 0.0


async def test_a_stream_that_falls_silent_is_restarted_by_the_watchdog(engine: Engine) -> None:
    engine.sf.control("POST", "config", {"pubsub_keepalive_seconds": 0.2})
    engine.settings = pubsub(engine)
    before = _reconnects("watchdog")
    settings = listener_settings(engine, cdc_watchdog_seconds=1.0, cdc_reconnect_max_seconds=1)
    async with listening(settings):
        await until(lambda: _subscribed(engine))
        # The connection stays open but Salesforce sends nothing: no events, no keepalives.
        engine.sf.control("POST", "config", {"pubsub_keepalives": False})
        await until(lambda: _watchdog_fired(before), within=10)
        engine.sf.control("POST", "config", {"pubsub_keepalives": True})
        order_id = engine.activate("internet")
        await fulfilled(engine, order_id, within=30)


async def _watchdog_fired(before: float) -> bool:
    return _reconnects("watchdog") > before


async def test_a_backlog_past_the_batch_is_all_handled_with_at_most_a_batch_outstanding(
    engine: Engine,
) -> None:
    # 250 changes wait on the channel before the listener starts; it may ask for 40 at a time.
    order_id = engine.demo["orders"]["internet"]
    for n in range(250):
        engine.sf.control(
            "POST",
            "events/change",
            {
                "entity": "Order",
                "changeType": "UPDATE",
                "recordIds": [order_id],
                "fields": {"Description": f"change {n}"},
                "changedFields": ["Description", "LastModifiedDate"],
            },
        )
    engine.settings = pubsub(engine)
    settings = listener_settings(engine, cdc_pubsub_batch=40, cdc_concurrency=4)
    seen: list[int] = []

    async def handled_all() -> bool:
        streams = engine.sf.control("GET", "pubsub/subscriptions")["subscriptions"]
        seen.extend(s["max_outstanding"] for s in streams if s["topic"] == ORDERS)
        return await _past(engine, 250)

    async with listening(settings):
        await until(handled_all, within=60)
    assert seen, "the orders stream was seen open"
    assert max(seen) <= 40, f"{max(seen)} events outstanding with a batch of 40"
