"""Event messages -> `domain.events` models; anything else is a `MalformedEvent`.

Both transports hand over the Streaming API's shape, `{"channel", "data": {"event": {"replayId"},
"payload"}}`: CometD as it arrives (an integer replay id), the Pub/Sub API as its client decodes
it (`clients.salesforce_pubsub`: the hex of the opaque replay id, the Avro body as JSON, bitmaps
turned into field names). Dead letters keep this shape, so a redrive reads them the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from domain.events import ChangeEvent, ChangeType, Event, PlatformEvent


class MalformedEvent(Exception):
    """A message the listener cannot read; `replay_id` when it could at least find that."""

    def __init__(self, reason: str, *, channel: str | None, replay_id: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.channel = channel
        self.replay_id = replay_id


def parse_message(message: Any) -> Event:
    channel = message.get("channel") if isinstance(message, dict) else None
    data = message.get("data") if isinstance(message, dict) else None
    replay_id = _replay_id(data)
    if not isinstance(channel, str) or not isinstance(data, dict) or replay_id is None:
        raise MalformedEvent(
            "not an event message (channel, data.event.replayId)",
            channel=channel if isinstance(channel, str) else None,
            replay_id=replay_id,
        )
    if isinstance(data.get("decodeError"), str):
        reason = f"payload could not be decoded: {data['decodeError']}"
        raise MalformedEvent(reason, channel=channel, replay_id=replay_id)
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise MalformedEvent("event has no payload", channel=channel, replay_id=replay_id)
    try:
        if channel.startswith("/data/"):
            return _change_event(channel, replay_id, payload)
        if channel.startswith("/event/"):
            return _platform_event(channel, replay_id, payload)
    except (ValidationError, ValueError, TypeError, KeyError) as error:
        raise MalformedEvent(_reason(error), channel=channel, replay_id=replay_id) from None
    raise MalformedEvent(f"unknown channel kind {channel}", channel=channel, replay_id=replay_id)


def _replay_id(data: Any) -> str | None:
    event = data.get("event") if isinstance(data, dict) else None
    value = event.get("replayId") if isinstance(event, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= 256:
        return value
    return None


def _change_event(channel: str, replay_id: str, payload: dict[str, Any]) -> ChangeEvent:
    header = payload["ChangeEventHeader"]
    if not isinstance(header, dict):
        raise ValueError("ChangeEventHeader is not an object")
    fields = {key: value for key, value in payload.items() if key != "ChangeEventHeader"}
    timestamp = header["commitTimestamp"]
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise ValueError("commitTimestamp is not epoch milliseconds")
    return ChangeEvent(
        channel=channel,
        replay_id=replay_id,
        entity=header["entityName"],
        change_type=ChangeType(header["changeType"]),
        record_ids=tuple(header.get("recordIds") or ()),
        changed_fields=tuple(header.get("changedFields") or ()),
        change_origin=str(header.get("changeOrigin") or ""),
        commit_timestamp=datetime.fromtimestamp(timestamp / 1000, tz=UTC),
        transaction_key=header.get("transactionKey"),
        fields=fields,
    )


def _platform_event(channel: str, replay_id: str, payload: dict[str, Any]) -> PlatformEvent:
    created = payload.get("CreatedDate")
    return PlatformEvent(
        channel=channel,
        replay_id=replay_id,
        event_name=channel.removeprefix("/event/"),
        created_date=created,
        fields={key: value for key, value in payload.items()},
    )


def _reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        fields = sorted({".".join(map(str, e["loc"])) for e in error.errors()})
        return f"unexpected field values: {', '.join(fields)}"
    if isinstance(error, KeyError):
        return f"missing {error.args[0]!s}"
    return str(error)
