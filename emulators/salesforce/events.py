"""The emulated org's event bus: the retained log of change data capture and platform events.

Every event is published on each channel it belongs to: a CDC event on `/data/<Entity>ChangeEvent`
(`/data/<Name>__ChangeEvent` for custom objects) and on `/data/ChangeEvents`, a platform event on
`/event/<Name>__e`. Replay ids are per channel, as on the real Streaming API: each channel numbers
its own events (opaque, increasing, deliberately not contiguous), so one change event carries one
replay id on its object's channel and another on `/data/ChangeEvents`, and a resume point means
something only on the channel that gave it. The log keeps events for the retention window
(72 hours) up to a count, then forgets the oldest; a subscriber asking to resume from before what
a channel still keeps is refused. Listeners (the streaming server) hear of each event as it is
published. Nothing here speaks HTTP: `streaming.py` serves the log over Bayeux.

Change event headers carry what the CometD wire carries: no `nulledFields` or `diffFields` (those
are Pub/Sub API only); a nulled field is in the body as null. Compound fields (`BillingAddress`)
arrive here already nested by the caller; a CREATE drops their empty components as it drops
empty fields.
"""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
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
    """One retained event: its replay id on each channel it is on, and the envelope's `data`.

    `data["event"]` holds no replay id: `message(channel)` adds the one of that channel.
    """

    replay_ids: Mapping[str, int]
    data: dict[str, Any]
    published_at: float

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.replay_ids)

    def replay_id(self, channel: str) -> int:
        return self.replay_ids[channel]

    def message(self, channel: str) -> dict[str, Any]:
        """The Bayeux message a subscriber of `channel` receives."""
        event = {**self.data["event"], "replayId": self.replay_ids[channel]}
        return {"channel": channel, "data": {**self.data, "event": event}}

    def to_state(self) -> dict[str, Any]:
        return {
            "replayIds": dict(self.replay_ids),
            "data": self.data,
            "publishedAt": self.published_at,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StreamEvent:
        if "replayIds" in state:
            replay_ids = {str(k): int(v) for k, v in state["replayIds"].items()}
        else:
            # A state file written before replay ids were per channel: one id on every channel.
            replay_ids = {str(c): int(state["replayId"]) for c in state["channels"]}
        data = dict(state["data"])
        data["event"] = {k: v for k, v in data.get("event", {}).items() if k != "replayId"}
        return cls(replay_ids=replay_ids, data=data, published_at=float(state["publishedAt"]))


@dataclass
class _Sequence:
    """One channel's numbering: its newest replay id, and the newest one it has forgotten."""

    last: int
    floor: int


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
        self._sequences: dict[str, _Sequence] = {}
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
    ) -> StreamEvent:
        """Publish the change event of one transaction's change.

        The body follows the platform's rules whatever the caller passes: CREATE and UNDELETE
        carry the non-empty fields (and the non-empty components of a nested compound field),
        UPDATE the changed ones with nulls as null, DELETE none; only UPDATE lists
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
            body = _non_empty(fields)
        return self._publish_cdc(
            entity=entity,
            header={
                "changeType": change_type,
                "recordIds": list(record_ids),
                "changedFields": list(changed_fields) if change_type == "UPDATE" else [],
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
    ) -> StreamEvent:
        """Publish a gap event (header only: the subscriber must re-read the records)."""
        if change_type not in GAP_CHANGE_TYPES:
            raise ValueError(
                f"changeType must be one of {sorted(GAP_CHANGE_TYPES)}: {change_type!r}"
            )
        if not record_ids:
            raise ValueError("a gap event names at least one record id")
        return self._publish_platform_change(entity, change_type, list(record_ids), commit_user)

    def inject_overflow(self, *, entity: str, commit_user: str = PLATFORM_USER_ID) -> StreamEvent:
        """Publish the overflow event a transaction of over 100,000 changes leaves for `entity`."""
        return self._publish_platform_change(entity, GAP_OVERFLOW, [], commit_user)

    def publish_platform_event(
        self, *, name: str, fields: dict[str, Any], created_by: str
    ) -> StreamEvent:
        """Publish a platform event on `/event/<name>`; its payload carries the EventUuid."""
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
            data = {
                "schema": _schema_id(name),
                "payload": payload,
                "event": {"EventUuid": event_uuid},
            }
            return self._append((platform_event_channel(name),), data, now)

    def new_transaction_key(self) -> str:
        """A fresh transaction key in the platform's form (a UUID), drawn from the bus's rng."""
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _publish_platform_change(
        self, entity: str, change_type: str, record_ids: list[str], commit_user: str
    ) -> StreamEvent:
        transaction_key = self.new_transaction_key()
        return self._publish_cdc(
            entity=entity,
            header={
                "changeType": change_type,
                "recordIds": record_ids,
                "changedFields": [],
                "changeOrigin": PLATFORM_CHANGE_ORIGIN,
                "transactionKey": transaction_key,
                "sequenceNumber": 1,
                "commitUser": commit_user,
            },
            body={},
        )

    def _publish_cdc(
        self, *, entity: str, header: dict[str, Any], body: dict[str, Any]
    ) -> StreamEvent:
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
            data = {
                "schema": _schema_id(entity),
                "payload": {"ChangeEventHeader": full_header, **body},
                "event": {},
            }
            return self._append((change_event_channel(entity), ALL_CHANGE_EVENTS), data, now)

    def _append(self, channels: tuple[str, ...], data: dict[str, Any], now: float) -> StreamEvent:
        replay_ids = {}
        for channel in channels:
            sequence = self._sequence(channel)
            sequence.last += self._rng.randint(*_REPLAY_STEP)
            replay_ids[channel] = sequence.last
        event = StreamEvent(replay_ids, data, now)
        self._events.append(event)
        self._prune(now)
        # Listeners are told under the lock so that they hear events in replay id order.
        for listener in list(self._listeners):
            listener(event)
        return event

    def _sequence(self, channel: str) -> _Sequence:
        sequence = self._sequences.get(channel)
        if sequence is None:
            start = self._rng.randint(*_FIRST_REPLAY_ID)
            sequence = self._sequences[channel] = _Sequence(start, start)
        return sequence

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
            return channel in self._sequences

    def latest_replay_id(self, channel: str) -> int:
        """The replay id of the newest event `channel` has numbered (its start if none yet,
        0 for a channel the org does not have)."""
        with self._lock:
            sequence = self._sequences.get(channel)
            return sequence.last if sequence is not None else 0

    def latest_replay_ids(self) -> dict[str, int]:
        """Every channel's latest replay id."""
        with self._lock:
            return {channel: s.last for channel, s in sorted(self._sequences.items())}

    def is_valid_resume_point(self, channel: str, replay_id: int) -> bool:
        """Whether resuming `channel` after `replay_id` misses nothing: no later event of that
        channel was forgotten, and the id is not ahead of the channel's numbering."""
        with self._lock:
            self._prune(self._clock())
            sequence = self._sequences.get(channel)
            return sequence is not None and sequence.floor <= replay_id <= sequence.last

    def snapshot(self, channel: str, after: int | None) -> tuple[list[StreamEvent], int]:
        """The retained events on `channel` after its replay id `after` (all if None), and the
        channel's latest replay id.

        Both are read together so that a subscriber can tell which later events it still needs.
        """
        with self._lock:
            self._prune(self._clock())
            events = [
                event
                for event in self._events
                if channel in event.replay_ids
                and (after is None or event.replay_ids[channel] > after)
            ]
            return events, self.latest_replay_id(channel)

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
            forgotten = self._events.popleft()
            for channel, replay_id in forgotten.replay_ids.items():
                self._sequence(channel).floor = replay_id

    # ---- state --------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "channels": {
                    channel: {"lastReplayId": s.last, "floor": s.floor}
                    for channel, s in sorted(self._sequences.items())
                },
                "commitNumber": self._commit_number,
                "events": [event.to_state() for event in self._events],
            }

    def load_state(self, state: dict[str, Any]) -> None:
        with self._lock:
            self._events = deque(StreamEvent.from_state(item) for item in state.get("events", []))
            if "channels" in state:
                self._sequences = {
                    str(channel): _Sequence(int(s["lastReplayId"]), int(s["floor"]))
                    for channel, s in state["channels"].items()
                }
            else:
                # Written before replay ids were per channel: every channel goes on from the
                # one shared sequence, so no resume point the old file gave out changes meaning.
                last, floor = int(state["lastReplayId"]), int(state["floor"])
                channels = set(self._declared).union(*(e.replay_ids for e in self._events))
                self._sequences = {channel: _Sequence(last, floor) for channel in channels}
            for channel in self._declared:
                self._sequence(channel)
            self._commit_number = int(state["commitNumber"])
            self._last_transaction = None
            self._prune(self._clock())

    def reset(self, seed: int | None = None) -> None:
        """Forget every event. With a seed, numbering restarts as it would from that seed;
        without one it goes on, so a resume point from before the reset is refused."""
        with self._lock:
            self._events.clear()
            self._last_transaction = None
            if seed is not None:
                self._rng.seed(seed)
                self._start_numbering()
            else:
                for sequence in self._sequences.values():
                    sequence.floor = sequence.last

    def _start_numbering(self) -> None:
        # Declared channels start in a fixed order, so the numbering depends only on the seed.
        self._sequences = {}
        for channel in sorted(self._declared):
            self._sequence(channel)
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


def _non_empty(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` without empty values; a nested compound keeps its non-empty components."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None} or None
        if value is not None:
            out[name] = value
    return out
