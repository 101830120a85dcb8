"""The emulated org's event bus: the retained log of change data capture and platform events.

Every event gets an opaque replay id (increasing, deliberately not contiguous, as on the real
Streaming API) and the envelope a CometD subscriber receives, and is published on each channel it
belongs to: a CDC event on `/data/<Entity>ChangeEvent` (`/data/<Name>__ChangeEvent` for custom
objects) and on `/data/ChangeEvents`, a platform event on `/event/<Name>__e`. The log keeps events
for the retention window (72 hours) up to a count, then forgets the oldest; a subscriber asking to
resume from before what is kept is refused. Listeners (the streaming server) hear of each event as
it is published. Nothing here speaks HTTP: `streaming.py` serves the log over Bayeux.
"""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emulators.salesforce import schema

ALL_CHANGE_EVENTS = "/data/ChangeEvents"
CHANGE_TYPES = frozenset({"CREATE", "UPDATE", "DELETE", "UNDELETE"})
GAP_CHANGE_TYPES = frozenset({"GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE"})
GAP_OVERFLOW = "GAP_OVERFLOW"
# Gap and overflow events are raised by the platform itself, not by a user's transaction.
PLATFORM_USER_ID = "005000000000001AAA"
PLATFORM_CHANGE_ORIGIN = ""

# Replay ids start somewhere in the millions and advance by a few per event, so a client that
# assumes they are small or contiguous fails here as it would against a real org.
_FIRST_REPLAY_ID = (1_000_000, 9_000_000)
_REPLAY_STEP = (1, 5)
_FIRST_COMMIT_NUMBER = (10_000_000_000, 99_000_000_000)

Listener = Callable[["StreamEvent"], None]


def change_event_channel(entity: str) -> str:
    """The CDC channel of one object: `OrderChangeEvent`, or `Foo__ChangeEvent` for `Foo__c`."""
    if entity.endswith("__c"):
        return f"/data/{entity[:-3]}__ChangeEvent"
    return f"/data/{entity}ChangeEvent"


def platform_event_channel(name: str) -> str:
    return f"/event/{name}"


@dataclass(frozen=True)
class StreamEvent:
    """One retained event: its replay id, the channels it is on, and the envelope's `data`."""

    replay_id: int
    channels: tuple[str, ...]
    data: dict[str, Any]
    published_at: float

    def message(self, channel: str) -> dict[str, Any]:
        """The Bayeux message a subscriber of `channel` receives."""
        return {"channel": channel, "data": self.data}

    def to_state(self) -> dict[str, Any]:
        return {
            "replayId": self.replay_id,
            "channels": list(self.channels),
            "data": self.data,
            "publishedAt": self.published_at,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StreamEvent:
        return cls(
            replay_id=int(state["replayId"]),
            channels=tuple(state["channels"]),
            data=state["data"],
            published_at=float(state["publishedAt"]),
        )


class EventBus:
    """The retained, replayable event log of one emulated org."""

    def __init__(
        self,
        *,
        retention_seconds: float = 72 * 3600,
        max_events: int = 10_000,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        channels: Iterable[str] | None = None,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.retention_seconds = retention_seconds
        self.max_events = max_events
        self._clock = clock
        self._rng = rng or random.Random()
        self._declared = frozenset(_schema_channels() if channels is None else channels)
        # REST handlers may run on worker threads while the streaming server reads on the loop.
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._events: deque[StreamEvent] = deque()
        self._channels: set[str] = set(self._declared)
        self._last_replay_id = 0
        self._floor = 0
        self._commit_number = 0
        self._last_transaction: str | None = None
        self._start_numbering()

    # ---- publishing ---------------------------------------------------------------------------

    def publish_change(
        self,
        *,
        entity: str,
        change_type: str,
        record_ids: list[str],
        fields: dict[str, Any],
        changed_fields: list[str],
        commit_user: str,
        change_origin: str,
        transaction_key: str,
        sequence_number: int,
    ) -> int:
        """Publish the change event of one transaction's change; returns its replay id.

        The body follows the platform's rules whatever the caller passes: CREATE and UNDELETE
        carry the non-empty fields, UPDATE the changed ones, DELETE none; only UPDATE lists
        `changedFields`.
        """
        if change_type not in CHANGE_TYPES:
            raise ValueError(f"changeType must be one of {sorted(CHANGE_TYPES)}: {change_type!r}")
        if not record_ids:
            raise ValueError("a change event names at least one record id")
        if change_type == "DELETE":
            body: dict[str, Any] = {}
        elif change_type == "UPDATE":
            body = dict(fields)
        else:
            body = {name: value for name, value in fields.items() if value is not None}
        changed = list(changed_fields) if change_type == "UPDATE" else []
        nulled = [name for name in changed if name in fields and fields[name] is None]
        return self._publish_cdc(
            entity=entity,
            header={
                "changeType": change_type,
                "recordIds": list(record_ids),
                "changedFields": changed,
                "nulledFields": nulled,
                "diffFields": [],
                "changeOrigin": change_origin,
                "transactionKey": transaction_key,
                "sequenceNumber": sequence_number,
                "commitUser": commit_user,
            },
            body=body,
        )

    def inject_gap(
        self,
        *,
        entity: str,
        change_type: str,
        record_ids: list[str],
        commit_user: str = PLATFORM_USER_ID,
    ) -> int:
        """Publish a gap event (header only: the subscriber must re-read the records)."""
        if change_type not in GAP_CHANGE_TYPES:
            raise ValueError(
                f"changeType must be one of {sorted(GAP_CHANGE_TYPES)}: {change_type!r}"
            )
        if not record_ids:
            raise ValueError("a gap event names at least one record id")
        return self._publish_platform_change(entity, change_type, list(record_ids), commit_user)

    def inject_overflow(self, *, entity: str, commit_user: str = PLATFORM_USER_ID) -> int:
        """Publish the overflow event a transaction of over 100,000 changes leaves for `entity`."""
        return self._publish_platform_change(entity, GAP_OVERFLOW, [], commit_user)

    def publish_platform_event(self, *, name: str, fields: dict[str, Any], created_by: str) -> str:
        """Publish a platform event on `/event/<name>`; returns its EventUuid."""
        if not name.endswith("__e"):
            raise ValueError(f"a platform event's name ends in __e: {name!r}")
        with self._lock:
            event_uuid = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            now = self._clock()
            payload = {
                **fields,
                "CreatedDate": _iso_millis(now),
                "CreatedById": created_by,
                "EventUuid": event_uuid,
            }
            self._append(
                (platform_event_channel(name),),
                lambda replay_id: {
                    "schema": _schema_id(name),
                    "payload": payload,
                    "event": {"EventUuid": event_uuid, "replayId": replay_id},
                },
                now,
            )
        return event_uuid

    def new_transaction_key(self) -> str:
        """A fresh transaction key in the platform's form (a UUID), drawn from the bus's rng."""
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _publish_platform_change(
        self, entity: str, change_type: str, record_ids: list[str], commit_user: str
    ) -> int:
        transaction_key = self.new_transaction_key()
        return self._publish_cdc(
            entity=entity,
            header={
                "changeType": change_type,
                "recordIds": record_ids,
                "changedFields": [],
                "nulledFields": [],
                "diffFields": [],
                "changeOrigin": PLATFORM_CHANGE_ORIGIN,
                "transactionKey": transaction_key,
                "sequenceNumber": 1,
                "commitUser": commit_user,
            },
            body={},
        )

    def _publish_cdc(self, *, entity: str, header: dict[str, Any], body: dict[str, Any]) -> int:
        with self._lock:
            now = self._clock()
            # One commit number per transaction: the events of one transaction share it.
            if header["transactionKey"] != self._last_transaction:
                self._commit_number += self._rng.randint(1, 1000)
                self._last_transaction = header["transactionKey"]
            full_header = {
                "entityName": entity,
                **header,
                "commitTimestamp": int(now * 1000),
                "commitNumber": self._commit_number,
            }
            event = self._append(
                (change_event_channel(entity), ALL_CHANGE_EVENTS),
                lambda replay_id: {
                    "schema": _schema_id(entity),
                    "payload": {"ChangeEventHeader": full_header, **body},
                    "event": {"replayId": replay_id},
                },
                now,
            )
            return event.replay_id

    def _append(
        self,
        channels: tuple[str, ...],
        build: Callable[[int], dict[str, Any]],
        now: float,
    ) -> StreamEvent:
        self._last_replay_id += self._rng.randint(*_REPLAY_STEP)
        event = StreamEvent(self._last_replay_id, channels, build(self._last_replay_id), now)
        self._events.append(event)
        self._channels.update(channels)
        self._prune(now)
        # Listeners are told under the lock so that they hear events in replay id order.
        for listener in list(self._listeners):
            listener(event)
        return event

    # ---- reading ------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call `listener` with every event published from now on (under the bus's lock)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.remove(listener)

    def knows_channel(self, channel: str) -> bool:
        with self._lock:
            return channel in self._channels

    @property
    def latest_replay_id(self) -> int:
        with self._lock:
            return self._last_replay_id

    def is_valid_resume_point(self, replay_id: int) -> bool:
        """Whether resuming after `replay_id` misses nothing: no later event was forgotten."""
        with self._lock:
            self._prune(self._clock())
            return self._floor <= replay_id <= self._last_replay_id

    def snapshot(self, channel: str, after: int | None) -> tuple[list[StreamEvent], int]:
        """The retained events on `channel` after `after` (all if None), and the latest replay id.

        Both are read together so that a subscriber can tell which later events it still needs.
        """
        with self._lock:
            self._prune(self._clock())
            events = [
                event
                for event in self._events
                if channel in event.channels and (after is None or event.replay_id > after)
            ]
            return events, self._last_replay_id

    def events(self) -> list[StreamEvent]:
        """Every retained event, oldest first."""
        with self._lock:
            self._prune(self._clock())
            return list(self._events)

    def _prune(self, now: float) -> None:
        horizon = now - self.retention_seconds
        while self._events and (
            len(self._events) > self.max_events or self._events[0].published_at < horizon
        ):
            self._floor = self._events.popleft().replay_id

    # ---- state --------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "lastReplayId": self._last_replay_id,
                "floor": self._floor,
                "commitNumber": self._commit_number,
                "events": [event.to_state() for event in self._events],
            }

    def load_state(self, state: dict[str, Any]) -> None:
        with self._lock:
            self._events = deque(StreamEvent.from_state(item) for item in state.get("events", []))
            self._last_replay_id = int(state["lastReplayId"])
            self._floor = int(state["floor"])
            self._commit_number = int(state["commitNumber"])
            self._last_transaction = None
            self._channels = set(self._declared)
            for event in self._events:
                self._channels.update(event.channels)
            self._prune(self._clock())

    def reset(self, seed: int | None = None) -> None:
        """Forget every event. With a seed, numbering restarts as it would from that seed;
        without one it goes on, so a resume point from before the reset is refused."""
        with self._lock:
            self._events.clear()
            self._channels = set(self._declared)
            self._last_transaction = None
            if seed is not None:
                self._rng.seed(seed)
                self._start_numbering()
            else:
                self._floor = self._last_replay_id

    def _start_numbering(self) -> None:
        self._last_replay_id = self._rng.randint(*_FIRST_REPLAY_ID)
        self._floor = self._last_replay_id
        self._commit_number = self._rng.randint(*_FIRST_COMMIT_NUMBER)


def _schema_channels() -> set[str]:
    channels = {ALL_CHANGE_EVENTS}
    for sobject in schema.OBJECTS.values():
        if sobject.change_events:
            channels.add(change_event_channel(sobject.name))
        if sobject.platform_event:
            channels.add(platform_event_channel(sobject.name))
    return channels


def _schema_id(name: str) -> str:
    """A stable, opaque schema id per event type (the real ones are 22 base64url characters)."""
    digest = hashlib.sha256(name.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:22]


def _iso_millis(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
