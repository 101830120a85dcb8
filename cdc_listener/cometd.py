"""The Streaming API (CometD) transport, through aiosfstream-ng.

aiocometd-ng cannot retry a lost transport on Python 3.10+, so every library or
transport error ends the session: the listener backs off, authenticates again and subscribes
again from the cursors in Postgres. The session counts as alive while connect replies come
(Salesforce answers an idle long poll within 110 s). A cursor Salesforce no longer retains falls
back to every retained event (-2), never to new events only.
"""

from __future__ import annotations

import time
from typing import Any

from aiosfstream_ng.client import Client, ReplayMarkerStoragePolicy
from aiosfstream_ng.replay import ReplayMarker, ReplayMarkerStorage, ReplayOption

from cdc_listener.store import Cursor
from cdc_listener.transport import Message, OnStale, Received
from clients.http import tls_context
from clients.salesforce_auth import SalesforceAuth
from config.settings import Settings

_STALE_REPLAY = ("replayid", "invalid")


class CursorStorage(ReplayMarkerStorage):
    """Gives aiosfstream the replay ids to subscribe from (ours, from Postgres) and notes every
    successful connect reply for the watchdog. It never stores markers itself: the listener
    moves the cursors once events are handled."""

    def __init__(self, replay_ids: dict[str, int]) -> None:
        super().__init__()
        self.replay_ids = replay_ids
        self.last_connect = time.monotonic()

    async def incoming(self, payload: Any, headers: Any = None) -> None:
        for message in payload:
            if message.get("channel") == "/meta/connect" and message.get("successful"):
                self.last_connect = time.monotonic()

    async def get_replay_marker(self, subscription: str) -> ReplayMarker | None:
        replay_id = self.replay_ids.get(subscription)
        return ReplayMarker(date="", replay_id=replay_id) if replay_id is not None else None

    async def set_replay_marker(self, subscription: str, replay_marker: ReplayMarker) -> None:
        return None


class CometdTransport:
    def __init__(self, settings: Settings, auth: SalesforceAuth) -> None:
        self._settings = settings
        self._auth = auth

    def session(self, cursors: dict[str, Cursor], on_stale: OnStale) -> CometdSession:
        return CometdSession(self._settings, self._auth, cursors, on_stale)


class CometdSession:
    def __init__(
        self,
        settings: Settings,
        auth: SalesforceAuth,
        cursors: dict[str, Cursor],
        on_stale: OnStale,
    ) -> None:
        self._channels = settings.cdc_channel_list
        self._on_stale = on_stale
        self.storage = CursorStorage(
            {
                channel: int(cursors[channel].replay_id)
                if channel in cursors
                else settings.cdc_initial_replay
                for channel in self._channels
            }
        )
        self._client = Client(
            auth.streaming_authenticator(),
            replay=self.storage,
            replay_storage_policy=ReplayMarkerStoragePolicy.MANUAL,
        )
        # aiocometd-ng passes `Client.ssl` to every request; aiosfstream-ng has no parameter
        # for it. Verification stays on; SF_CA_FILE adds a private CA (the emulator's).
        self._client.ssl = tls_context(settings.sf_ca_file)

    async def open(self) -> None:
        await self._client.open()
        for channel in self._channels:
            await self._subscribe(channel)

    async def _subscribe(self, channel: str) -> None:
        try:
            await self._client.subscribe(channel)
            return
        except Exception as error:
            text = str(getattr(error, "error", None) or error).casefold()
            if not all(word in text for word in _STALE_REPLAY):
                raise
        await self._on_stale(channel)
        self.storage.replay_ids[channel] = int(ReplayOption.ALL_EVENTS)
        await self._client.subscribe(channel)

    async def receive(self) -> Received:
        message = await self._client.receive()
        return Message(message, _position(message))

    def last_alive(self) -> float:
        return self.storage.last_connect

    def moved(self, channel: str, replay_id: str) -> None:
        # A resubscribe inside this session (after a re-handshake) resumes from here too.
        self.storage.replay_ids[channel] = int(replay_id)

    async def close(self) -> None:
        await self._client.close()


def _position(message: Any) -> int | None:
    """CometD replay ids increase within a channel: the id is its own position."""
    data = message.get("data") if isinstance(message, dict) else None
    event = data.get("event") if isinstance(data, dict) else None
    value = event.get("replayId") if isinstance(event, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
