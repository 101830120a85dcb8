"""Dead letters handled again, when an operator asks (`fulfillment dead-letters redrive`, the ops
API): the active listener reads each requested letter, as either shape it was stored in (the raw
streaming message a parse refused, or an event the listener had read), and hands it to the same
dispatch as a live event. Handling is idempotent, so a letter whose event was meanwhile replayed
or reconciled does nothing twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from cdc_listener.events import MalformedEvent, parse_message
from cdc_listener.store import ListenerStore
from config.logging import get_logger
from domain.events import ChangeEvent, Event, PlatformEvent

log = get_logger(__name__)


def read_dead_letter(message: Any) -> Event:
    """The event a dead letter holds; `MalformedEvent` when it still cannot be read."""
    if isinstance(message, dict) and "data" in message and "channel" in message:
        return parse_message(message)
    if not isinstance(message, dict):
        raise MalformedEvent("not an event", channel=None, replay_id=None)
    model: type[ChangeEvent] | type[PlatformEvent] = (
        ChangeEvent if "entity" in message else PlatformEvent
    )
    try:
        return model.model_validate(message)
    except ValidationError as error:
        fields = sorted({".".join(map(str, e["loc"])) for e in error.errors()})
        raise MalformedEvent(
            f"unexpected field values: {', '.join(fields)}",
            channel=message.get("channel"),
            replay_id=_text(message.get("replay_id")),
        ) from None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


async def redrive_requested(store: ListenerStore, handle: Callable[[Event], Awaitable[Any]]) -> int:
    """Handle every letter whose redrive was requested; how many were handled."""
    handled = 0
    for letter in await store.redrive_requests():
        try:
            event = read_dead_letter(letter.message)
        except MalformedEvent as still:
            await store.redrive_refused(letter.id, f"still unreadable: {still.reason}")
            log.warning("cdc.redrive_refused", dead_letter=letter.id, reason=still.reason)
            continue
        try:
            await handle(event)
        except Exception as error:
            # An outage (or a bug): the request stays; the next pass tries again.
            outcome = f"not yet: {type(error).__name__}: {error}"
            await store.redrive_delayed(letter.id, outcome)
            log.warning("cdc.redrive_delayed", dead_letter=letter.id, error=outcome)
            continue
        await store.redriven(letter.id, "handled")
        log.info(
            "cdc.redriven", dead_letter=letter.id, channel=event.channel, replay_id=event.replay_id
        )
        handled += 1
    return handled
