"""Streaming API timing rules, driven through aiosfstream-ng against a streaming-only app whose
clocks the test moves: a client that stops polling loses its session, and a replay id whose
successors fell out of retention is refused with the real 400.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiosfstream_ng.exceptions import ServerError
from aiosfstream_ng.replay import ReplayMarker, ReplayOption
from starlette.applications import Starlette

from emulators.common.server import ThreadedServer
from emulators.salesforce.events import EventBus
from emulators.salesforce.streaming import StreamingServer, control_extra_routes
from tests.fixtures.salesforce_emulator import by_name
from tests.fixtures.salesforce_streaming import OpenClient, TokenSetAuthenticator

ORDER_CHANNEL = "/data/OrderChangeEvent"
ORDER_ID = "801000000000001AAA"


class MovableClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class StreamingApp:
    base_url: str
    tokens: set[str]
    session_clock: MovableClock
    bus_clock: MovableClock

    def authenticator(self) -> TokenSetAuthenticator:
        return TokenSetAuthenticator(self.tokens, self.base_url)

    def publish_order_update(self, status: str) -> int:
        response = httpx.post(
            f"{self.base_url}/__emulator__/events/change",
            json={
                "entity": "Order",
                "changeType": "UPDATE",
                "recordIds": [ORDER_ID],
                "fields": {"Status": status},
                "changedFields": ["Status", "LastModifiedDate"],
            },
        )
        response.raise_for_status()
        replay_id: int = response.json()["replayId"]
        return replay_id

    async def session_becomes(self, **wanted: Any) -> None:
        """Wait until the one live session shows `wanted` in the sessions view."""
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            async with asyncio.timeout(10):
                while True:
                    reply = await http.get("/__emulator__/streaming/sessions")
                    [session] = reply.json()["sessions"]
                    if all(session[key] == value for key, value in wanted.items()):
                        return
                    await asyncio.sleep(0.01)


@pytest.fixture
def streaming_app() -> Iterator[StreamingApp]:
    tokens: set[str] = set()
    session_clock = MovableClock(1000.0)
    bus_clock = MovableClock(1_700_000_000.0)
    bus = EventBus(retention_seconds=72 * 3600, clock=bus_clock, rng=random.Random(3))
    server = StreamingServer(
        bus,
        tokens.__contains__,
        connect_timeout_ms=2000,
        event_reconnect_ms=40_000,
        idle_reconnect_ms=110_000,
        clock=session_clock,
    )
    app = Starlette(routes=[*server.routes, *control_extra_routes(bus)])
    with ThreadedServer(app) as running:
        # By name: aiohttp keeps no cookie from an IP address, and the session cookie is required.
        yield StreamingApp(by_name(running.base_url), tokens, session_clock, bus_clock)


def replay_id_of(message: dict[str, Any]) -> int:
    replay_id: int = message["data"]["event"]["replayId"]
    return replay_id


async def test_a_client_that_stops_polling_loses_its_session_and_resumes_from_its_replay_id(
    streaming_app: StreamingApp, sf_stream_clients: OpenClient
) -> None:
    authenticator = streaming_app.authenticator()
    markers: dict[str, ReplayMarker] = {}
    # With room for one pending message the client stops polling until the test reads: a slow
    # consumer, as the server sees it.
    client = await sf_stream_clients(authenticator, replay=markers, max_pending_count=1)
    await client.subscribe(ORDER_CHANNEL)
    published = [streaming_app.publish_order_update(s) for s in ("Draft", "Activated")]
    # Both events went out and the client, holding one unread, has not polled since.
    await streaming_app.session_becomes(polling=False, queued=0)

    # Past the 40 s a client has to come back after a reply that carried events.
    streaming_app.session_clock.now += 41
    published.append(streaming_app.publish_order_update("Cancelled"))
    received = [await asyncio.wait_for(client.receive(), 10) for _ in range(3)]

    assert [replay_id_of(m) for m in received] == published
    assert [m["data"]["payload"]["Status"] for m in received] == ["Draft", "Activated", "Cancelled"]
    # The 403::Unknown client made the library re-authenticate before it handshook again.
    assert authenticator.authentications == 2
    assert markers[ORDER_CHANNEL].replay_id == published[-1]


async def test_a_client_that_keeps_polling_keeps_its_session(
    streaming_app: StreamingApp, sf_stream_clients: OpenClient
) -> None:
    authenticator = streaming_app.authenticator()
    client = await sf_stream_clients(authenticator, replay=ReplayOption.NEW_EVENTS)
    await client.subscribe(ORDER_CHANNEL)
    await streaming_app.session_becomes(polling=True)
    streaming_app.session_clock.now += 3600

    replay_id = streaming_app.publish_order_update("Activated")

    assert replay_id_of(await asyncio.wait_for(client.receive(), 5)) == replay_id
    assert authenticator.authentications == 1


async def test_a_replay_id_whose_successors_left_retention_is_refused_with_the_real_400(
    streaming_app: StreamingApp, sf_stream_clients: OpenClient
) -> None:
    first = streaming_app.publish_order_update("Draft")
    streaming_app.publish_order_update("Activated")
    streaming_app.bus_clock.now += 72 * 3600 + 1
    latest = streaming_app.publish_order_update("Cancelled")
    stored = {ORDER_CHANNEL: ReplayMarker(date="1700000000000", replay_id=first)}
    client = await sf_stream_clients(streaming_app.authenticator(), replay=stored)

    with pytest.raises(ServerError) as refused:
        await client.subscribe(ORDER_CHANNEL)

    assert refused.value.error_code == 400
    assert refused.value.response is not None
    assert refused.value.response["error"] == (
        f"400::The replayId {{{first}}} you provided was invalid.  Please provide a valid ID, "
        "-2 to replay all events, or -1 to replay only new events."
    )
    # With a fallback the library subscribes again asking for everything retained.
    fallback_client = await sf_stream_clients(
        streaming_app.authenticator(), replay=dict(stored), replay_fallback=ReplayOption.ALL_EVENTS
    )
    await fallback_client.subscribe(ORDER_CHANNEL)
    assert replay_id_of(await asyncio.wait_for(fallback_client.receive(), 5)) == latest
