"""A bounded log of the requests an emulator handled, so tests can count round trips.

`RequestLogMiddleware` records every HTTP request outside `/__emulator__/*` (including ones an
injected fault answered) as a `RequestRecord`; `GET /__emulator__/requests?path=…&action=…` lists
them and `DELETE /__emulator__/requests` clears the log. Only the newest `maxlen` are kept.

A request is recorded when it finishes, but only into the log it started in: one still in
flight when the log is cleared (a slow call whose client already timed out, say) would otherwise
land in the next test's count. A client that disconnects before its request body arrived is
recorded with status 499 (nginx's "client closed request") instead of raising in the server.

A request applied under a "lose_reply" fault is recorded with the status the emulator answered
it with (what took effect), not what reached the client, and `lost_reply` naming the fault's
mode ("status", "reset" or "hang"); every other record has `lost_reply` null.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulators.common.asgi import (
    APPLIED_STATUS_KEY,
    LOST_REPLY_KEY,
    is_control_path,
    resolve_action,
)

_CLIENT_CLOSED_REQUEST = 499


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    action: str | None
    status: int
    time: float
    duration_ms: float
    lost_reply: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    """The newest `maxlen` handled requests, oldest first."""

    def __init__(self, maxlen: int = 2000) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=maxlen)
        self.generation = 0

    def record(self, record: RequestRecord, *, generation: int | None = None) -> None:
        """Append `record`, unless it began under an earlier `generation` (before a clear)."""
        if generation is None or generation == self.generation:
            self._records.append(record)

    def entries(self, *, path: str | None = None, action: str | None = None) -> list[RequestRecord]:
        """Records whose path starts with `path` and whose action equals `action`, when given."""
        return [
            r
            for r in self._records
            if (path is None or r.path.startswith(path)) and (action is None or r.action == action)
        ]

    def clear(self) -> None:
        self._records.clear()
        self.generation += 1


class RequestLogMiddleware:
    """ASGI middleware appending one `RequestRecord` per HTTP request to a `RequestLog`."""

    def __init__(self, app: ASGIApp, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_control_path(scope):
            await self.app(scope, receive, send)
            return
        generation = self.log.generation
        started = time.monotonic()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        action: str | None = None
        try:
            action, receive = await resolve_action(scope, receive)
            await self.app(scope, receive, send_and_note)
        except ClientDisconnect:
            status = _CLIENT_CLOSED_REQUEST
        finally:
            self.log.record(
                RequestRecord(
                    method=scope["method"],
                    path=scope["path"],
                    action=action,
                    status=scope.get(APPLIED_STATUS_KEY, status),
                    time=time.time(),
                    duration_ms=round((time.monotonic() - started) * 1000, 3),
                    lost_reply=scope.get(LOST_REPLY_KEY),
                ),
                generation=generation,
            )
