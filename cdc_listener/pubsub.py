"""The Pub/Sub API transport: one flow-controlled `Subscribe` stream per channel.

Each stream asks for at most `CDC_PUBSUB_BATCH` (≤ 100) events and asks again only as the
listener takes them, and the listener takes an event only when its pipeline has room: a slow
start holds events at Salesforce, not in memory. A keepalive (no events, something still owed)
says nothing newer exists than its `latest_replay_id`, so the channel's cursor moves there once
everything received before is handled: a quiet channel's cursor never ages out of retention.

Pub/Sub replay ids are opaque, so order is the listener's: each event and keepalive gets the next
`position` after the stored cursor's, in order of receipt (migration 0013). A refused CUSTOM
replay id (outside retention) restarts that channel from EARLIEST, never LATEST.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from cdc_listener.store import Cursor
from cdc_listener.transport import Keepalive, Message, OnStale, Received
from clients.salesforce_pubsub import PubSubClient, ReplayStart, StaleReplayId, Subscription
from config.settings import Settings

_INITIAL = {-1: ReplayStart("LATEST"), -2: ReplayStart("EARLIEST")}


class PubsubTransport:
    def __init__(self, settings: Settings, client: PubSubClient) -> None:
        self._settings = settings
        self._client = client

    def session(self, cursors: dict[str, Cursor], on_stale: OnStale) -> PubsubSession:
        return PubsubSession(self._settings, self._client, cursors, on_stale)


class PubsubSession:
    def __init__(
        self,
        settings: Settings,
        client: PubSubClient,
        cursors: dict[str, Cursor],
        on_stale: OnStale,
    ) -> None:
        self._client = client
        self._batch = settings.cdc_pubsub_batch
        self._initial = _INITIAL[settings.cdc_initial_replay]
        self._channels = settings.cdc_channel_list
        self._cursors = cursors
        self._on_stale = on_stale
        # Every stream puts into one queue, so events of a channel stay in order; a stream
        # that fails puts its error, which ends the session.
        self._queue: asyncio.Queue[tuple[Received, Subscription | None] | BaseException] = (
            asyncio.Queue()
        )
        self._streams: list[asyncio.Task[None]] = []
        self._subscriptions: dict[str, Subscription] = {}
        self._alive = time.monotonic()

    async def open(self) -> None:
        for channel in self._channels:
            # Refuses an unknown topic or one we may not read before any stream starts.
            info = await self._client.topic(channel)
            if not info.can_subscribe:
                raise PermissionError(f"the integration user may not subscribe to {channel}")
        self._alive = time.monotonic()
        for channel in self._channels:
            self._streams.append(asyncio.create_task(self._stream(channel)))

    async def _stream(self, channel: str) -> None:
        cursor = self._cursors.get(channel)
        start = ReplayStart.after(cursor.replay_id) if cursor is not None else self._initial
        position = cursor.position if cursor is not None else 0
        try:
            while True:
                subscription = self._client.subscribe(channel, start, batch=self._batch)
                self._subscriptions[channel] = subscription
                try:
                    async for batch in subscription:
                        self._alive = time.monotonic()
                        for event in batch.events:
                            position += 1
                            await self._queue.put((Message(event, position), subscription))
                        if batch.is_keepalive and batch.pending > 0 and batch.latest_replay_id:
                            position += 1
                            keepalive = Keepalive(channel, batch.latest_replay_id, position)
                            await self._queue.put((keepalive, None))
                except StaleReplayId:
                    if start.preset != "CUSTOM":
                        raise
                    await self._on_stale(channel)
                    start, position = ReplayStart("EARLIEST"), 0
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            await self._queue.put(error)

    async def receive(self) -> Received:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        received, subscription = item
        if subscription is not None:
            subscription.taken()
        return received

    def last_alive(self) -> float:
        return self._alive

    def moved(self, channel: str, replay_id: str) -> None:
        return None  # a new session resumes from the stored cursor

    async def close(self) -> None:
        for subscription in self._subscriptions.values():
            subscription.close()
        for stream in self._streams:
            stream.cancel()
            with contextlib.suppress(BaseException):
                await stream
