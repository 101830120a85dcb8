"""The listener's state in Postgres: replay cursors, dead letters, replica status, the lease.

Cursors are written only after an event was handled (at-least-once into idempotent handling),
so a crash between receiving and storing replays the event, and never skips one. Cursors and
dead letters are kept per transport (`CDC_TRANSPORT`): a replay id means something only to the
transport that gave it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from clients.errors import System, TransientError
from config.settings import CdcTransport

_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
# One advisory lock id for "the active listener": only its holder subscribes.
LEASE_KEY = 0x46554C46494C4C  # "FULFILL"


@dataclass(frozen=True)
class Cursor:
    channel: str
    replay_id: str
    # The listener's order of the ids (migration 0013): writes never move it back.
    position: int
    last_event_at: datetime | None
    moved_at: datetime


@dataclass(frozen=True)
class RedriveRequest:
    id: int
    message: Any


class ListenerStore:
    def __init__(self, pool: asyncpg.Pool, transport: CdcTransport = "cometd") -> None:
        self._pool = pool
        self.transport: CdcTransport = transport

    async def cursors(self, channels: Iterable[str]) -> dict[str, Cursor]:
        rows = await self._fetch(
            "SELECT channel, replay_id, position, last_event_at, updated_at"
            " FROM cdc_replay_cursors WHERE transport = $1 AND channel = ANY($2::text[])",
            self.transport,
            list(channels),
        )
        return {
            row["channel"]: Cursor(
                row["channel"],
                row["replay_id"],
                row["position"],
                row["last_event_at"],
                row["updated_at"],
            )
            for row in rows
        }

    async def advance(
        self, channel: str, replay_id: str, position: int, event_at: datetime | None
    ) -> None:
        """Move the channel's cursor to `replay_id` at `position`, never back: two replicas
        overlapping in a lease handover (or a late write of a session that ended) must not undo
        a newer cursor. A cursor Salesforce no longer retains is `forget`-ed first, then written
        afresh."""
        await self._execute(
            "INSERT INTO cdc_replay_cursors"
            " (transport, channel, replay_id, position, last_event_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (transport, channel) DO UPDATE SET"
            " replay_id = EXCLUDED.replay_id, position = EXCLUDED.position,"
            " last_event_at = COALESCE(EXCLUDED.last_event_at, cdc_replay_cursors.last_event_at),"
            " updated_at = now()"
            " WHERE cdc_replay_cursors.position <= EXCLUDED.position",
            self.transport,
            channel,
            replay_id,
            position,
            event_at,
        )

    async def forget(self, channel: str) -> None:
        """Drop a cursor Salesforce no longer knows (outside retention)."""
        await self._execute(
            "DELETE FROM cdc_replay_cursors WHERE transport = $1 AND channel = $2",
            self.transport,
            channel,
        )

    async def dead_letter(
        self, channel: str | None, replay_id: str | None, message: Any, reason: str
    ) -> None:
        await self._execute(
            "INSERT INTO cdc_dead_letters (transport, channel, replay_id, message, reason)"
            " VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT DO NOTHING",
            self.transport,
            channel,
            replay_id,
            # Through JSON once: whatever the message holds is stored as JSON the codec takes.
            json.loads(json.dumps(message, default=str)),
            reason[:1000],
        )

    async def report(
        self,
        instance: str,
        *,
        active: bool,
        connected: bool,
        last_connect_at: datetime | None = None,
        last_event_at: datetime | None = None,
        reconnects: int = 0,
    ) -> None:
        await self._execute(
            "INSERT INTO cdc_listener_status (instance, active, connected, last_connect_at,"
            " last_event_at, reconnects, updated_at) VALUES ($1, $2, $3, $4, $5, $6, now())"
            " ON CONFLICT (instance) DO UPDATE SET active = EXCLUDED.active,"
            " connected = EXCLUDED.connected,"
            " last_connect_at = COALESCE(EXCLUDED.last_connect_at,"
            "   cdc_listener_status.last_connect_at),"
            " last_event_at = COALESCE(EXCLUDED.last_event_at, cdc_listener_status.last_event_at),"
            " reconnects = EXCLUDED.reconnects, updated_at = now()",
            instance,
            active,
            connected,
            last_connect_at,
            last_event_at,
            reconnects,
        )

    async def redrive_requests(self, limit: int = 50) -> list[RedriveRequest]:
        """Dead letters an operator asked to handle again, oldest first."""
        rows = await self._fetch(
            "SELECT id, message FROM cdc_dead_letters"
            " WHERE redrive_requested_at IS NOT NULL AND redriven_at IS NULL ORDER BY id LIMIT $1",
            limit,
        )
        # Letters stored before 0011 hold their message as a JSON string inside the jsonb.
        return [
            RedriveRequest(
                row["id"],
                json.loads(row["message"]) if isinstance(row["message"], str) else row["message"],
            )
            for row in rows
        ]

    async def redriven(self, letter_id: int, outcome: str) -> None:
        await self._execute(
            "UPDATE cdc_dead_letters SET redriven_at = now(), redrive_outcome = $2 WHERE id = $1",
            letter_id,
            outcome[:1000],
        )

    async def redrive_refused(self, letter_id: int, outcome: str) -> None:
        """The letter still cannot be handled: the request ends, the reason is kept."""
        await self._execute(
            "UPDATE cdc_dead_letters SET redrive_requested_at = NULL, redrive_outcome = $2"
            " WHERE id = $1",
            letter_id,
            outcome[:1000],
        )

    async def redrive_delayed(self, letter_id: int, outcome: str) -> None:
        """Handling failed for now (an outage): the request stays, the next pass tries again."""
        await self._execute(
            "UPDATE cdc_dead_letters SET redrive_outcome = $2 WHERE id = $1",
            letter_id,
            outcome[:1000],
        )

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return list(await self._pool.fetch(query, *args))
        except _DOWN as error:
            raise TransientError(
                System.POSTGRES, "listener state unavailable", detail=type(error).__name__
            ) from None

    async def _execute(self, query: str, *args: Any) -> None:
        try:
            await self._pool.execute(query, *args)
        except _DOWN as error:
            raise TransientError(
                System.POSTGRES, "listener state unavailable", detail=type(error).__name__
            ) from None


class Lease:
    """Exactly one active listener: a Postgres session advisory lock on a connection of its own.

    A replica that dies drops its connection and with it the lock, so another takes over within
    its polling interval. `held()` checks the connection is still alive (a lock on a broken
    connection is already gone).
    """

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._connection: asyncpg.Connection | None = None

    async def try_acquire(self) -> bool:
        if self._connection is None or self._connection.is_closed():
            # The server must notice a replica whose host vanished without closing the
            # connection (else its lock lives until the default 2 h TCP keepalive): probe an
            # idle connection after 10 s, every 5 s, give up after 3 misses.
            self._connection = await asyncpg.connect(
                self._url,
                server_settings={
                    "tcp_keepalives_idle": "10",
                    "tcp_keepalives_interval": "5",
                    "tcp_keepalives_count": "3",
                },
            )
        acquired = await self._connection.fetchval("SELECT pg_try_advisory_lock($1)", LEASE_KEY)
        return bool(acquired)

    async def held(self) -> bool:
        if self._connection is None or self._connection.is_closed():
            return False
        try:
            await self._connection.fetchval("SELECT 1", timeout=5)
        except (*_DOWN, TimeoutError):
            return False
        return True

    async def release(self) -> None:
        if self._connection is not None and not self._connection.is_closed():
            try:
                await self._connection.execute("SELECT pg_advisory_unlock_all()")
            finally:
                await self._connection.close()
        self._connection = None
