"""What the listener needs of a transport (`CDC_TRANSPORT`), and what a transport hands it.

Parsing, decisions, dispatch, cursors, lease, dead letters and metrics are the listener's
(`cdc_listener.session`); a transport only opens a session from the stored cursors, hands over
messages in the order Salesforce gave them, and says when it last heard from Salesforce.
Implementations: `cdc_listener.cometd` (Streaming API) and `cdc_listener.pubsub` (Pub/Sub API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cdc_listener.store import Cursor


@dataclass(frozen=True)
class Message:
    """An event message (Streaming API shape) and its place in the listener's order: `position`
    is None when the message does not even carry a replay id."""

    message: Any
    position: int | None


@dataclass(frozen=True)
class Keepalive:
    """Salesforce has nothing on `channel` after `replay_id`: a cursor may be stored there, once
    every event received before it is handled (Pub/Sub API only)."""

    channel: str
    replay_id: str
    position: int


Received = Message | Keepalive
# Called when a channel's cursor is outside Salesforce's retention, before the transport takes
# every retained event of that channel instead.
OnStale = Callable[[str], Awaitable[None]]


class Session(Protocol):
    async def open(self) -> None:
        """Connect and subscribe to every channel; raises when that fails."""

    async def receive(self) -> Received:
        """The next message or keepalive; raises when the session is over."""

    def last_alive(self) -> float:
        """`time.monotonic()` when Salesforce last showed the session is alive."""

    def moved(self, channel: str, replay_id: str) -> None:
        """The channel's cursor was stored at `replay_id` (a resubscribe resumes there)."""

    async def close(self) -> None: ...


class Transport(Protocol):
    def session(self, cursors: dict[str, Cursor], on_stale: OnStale) -> Session:
        """A session on the listener's channels, each resuming after its cursor (a channel
        without one starts where `CDC_INITIAL_REPLAY` says)."""
