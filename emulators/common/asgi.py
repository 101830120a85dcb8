"""Low-level ASGI helpers the emulator middlewares share: body buffering and action extraction.

Form APIs such as WHMCS name their operation in an `action` field of the body, so a middleware that
wants to match or log by action must read the body first and then replay it to the app. The action
is cached in the ASGI scope under `ACTION_KEY`, so several middlewares read the body only once.
A request whose reply a fault withheld carries the status the emulator answered under
`APPLIED_STATUS_KEY` and the fault's mode under `LOST_REPLY_KEY`, for the request log.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.types import Message, Receive, Scope

ACTION_KEY = "emulator.action"
APPLIED_STATUS_KEY = "emulator.applied_status"
LOST_REPLY_KEY = "emulator.lost_reply"
CONTROL_PREFIX = "/__emulator__/"

# A form body larger than this is not parsed for its action; real API calls are far smaller.
_MAX_ACTION_BODY = 1 << 20


def is_control_path(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return path.startswith(CONTROL_PREFIX) or path == CONTROL_PREFIX.rstrip("/")


async def resolve_action(scope: Scope, receive: Receive) -> tuple[str | None, Receive]:
    """Return the request's `action` (query string or url-encoded body) and a replaying receive."""
    if ACTION_KEY in scope:
        return scope[ACTION_KEY], receive
    action = _first(parse_qs(scope.get("query_string", b"").decode("latin-1")), "action")
    headers = dict(scope.get("headers", []))
    content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
    if action is not None or not content_type.startswith("application/x-www-form-urlencoded"):
        scope[ACTION_KEY] = action
        return action, receive
    body, replay = await buffer_body(receive)
    if len(body) <= _MAX_ACTION_BODY:
        action = _first(parse_qs(body.decode("utf-8", "replace")), "action")
    scope[ACTION_KEY] = action
    return action, replay


async def buffer_body(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body and return it with a receive that hands it out again."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            # A disconnect before the body ended: let the app see it as it would have.
            return b"".join(chunks), _replaying(message)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _replaying(message: Message) -> Receive:
    async def receive() -> Message:
        return message

    return receive


def _first(values: dict[str, list[str]], key: str) -> str | None:
    found = values.get(key)
    return found[0] if found else None
