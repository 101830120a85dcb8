"""Fault injection: the rule set (`FaultInjector`) and the ASGI middleware that applies it.

Rules, added through `POST /__emulator__/faults` (see `control.py`) or directly in tests:

    injector.add({"kind": "fail", "count": 2, "status": 503})             # the next 2 calls fail
    injector.add({"kind": "fail", "rate": 0.3, "status": 500,
                  "body": {"result": "error", "message": "boom"}})        # 30 % of calls fail
    injector.add({"kind": "fail", "count": 1, "action": "AddOrder"})      # match a form action
    injector.add({"kind": "latency", "ms": 500, "path": "/emptool/"})     # slow every matching call
    injector.add({"kind": "lose_reply", "mode": "reset", "count": 1,
                  "action": "AddOrder"})                                  # applied, reply lost
    injector.add({"kind": "late_commit", "ms": 40000, "count": 1,
                  "action": "AddOrder"})                                  # applied 40 s later

Matching: `path` is a prefix of the request path, `action` equals the form/query `action` field,
`method` equals the HTTP method (case-insensitive; Salesforce REST reads and writes share paths).
A rule without a field matches any value of it.

"fail" answers instead of the emulator: nothing is applied. "lose_reply" lets the emulator apply
the request in full (its state change commits and the state file is told), then the client does
not get the reply, which is what a timeout or reset after the upstream committed looks like:

    mode "status" (default)  the reply is replaced by `status` (default 502) and optional `body`
    mode "reset"             a status line and a Content-Length go out, then the connection
                             closes before the body: httpx raises RemoteProtocolError, requests
                             ChunkedEncodingError. The status line is the emulator's own, or
                             200 where that status may carry no body (204): a complete 204 would
                             be a delivered reply
    mode "hang"              nothing is sent for `ms` milliseconds (default 60000, at most
                             600000), then the connection is dropped as in "reset"; a client with
                             a shorter read timeout times out. The hold ends early, without a
                             word, when the client goes away, and at server shutdown (see
                             `release_held_replies`), so it never blocks a test's teardown

"late_commit" is a write that takes effect after its caller gave up (a slow WHMCS hook, a long
Salesforce trigger): no reply is sent; the request (its whole body read at once) is applied `ms`
milliseconds (1 to 600000) after it was received, whether or not the client is still connected;
then the connection is closed (a client still waiting sees it close before a complete reply, as
with "reset"). A reset of the emulator or a server stop drops the pending commits unapplied, as
a restart of the upstream ends the requests it was running.

"fail", "lose_reply" and "late_commit" rules need `count` (the next N matching calls) and/or
`rate` (that fraction of them); with both, a fraction of calls until `count` have been hit.
When several rules match one call, latency adds up and the first other rule in order decides.
Fractions draw from a `random.Random` seeded by `reset(seed)`, so a seeded run is repeatable.
`FaultMiddleware` skips `/__emulator__/*`, so the control API always answers. A request whose
reply was lost is logged (see `requestlog.py`) with the status the emulator applied it with and
`lost_reply` naming the mode ("late_commit" for a late commit, logged once it was applied).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import random
import re
import threading
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulators.common.asgi import (
    APPLIED_STATUS_KEY,
    LOST_REPLY_KEY,
    buffer_body,
    is_control_path,
    resolve_action,
)

_KINDS = ("fail", "latency", "lose_reply", "late_commit")
LOST_REPLY_MODES = ("status", "reset", "hang")
DEFAULT_LOST_REPLY_STATUS = 502
DEFAULT_HANG_MS = 60_000
MAX_HANG_MS = 600_000
_FIELDS = frozenset(
    {"kind", "count", "rate", "status", "body", "path", "action", "method", "ms", "mode"}
)
_METHOD = re.compile(r"^[A-Za-z]+$")
# Statuses whose response ends with its headers: sending one of them would deliver the reply.
_BODILESS = frozenset({204, 304})


@dataclass
class FaultRule:
    """One fault rule; `remaining` counts down for "the next N" rules."""

    id: int
    kind: str
    status: int | None = 503
    body: Any = None
    count: int | None = None
    remaining: int | None = None
    rate: float | None = None
    ms: int | None = None
    path: str | None = None
    action: str | None = None
    method: str | None = None
    mode: str | None = None

    def matches(self, method: str, path: str, action: str | None) -> bool:
        if self.method is not None and self.method != method.upper():
            return False
        if self.path is not None and not path.startswith(self.path):
            return False
        return self.action is None or self.action == action

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class Failure:
    """The response an injected failure sends instead of the real one."""

    status: int
    body: Any

    def encode(self) -> tuple[bytes, bytes]:
        """Return (content type, body bytes)."""
        if self.body is None:
            phrase = (
                HTTPStatus(self.status).phrase
                if self.status in HTTPStatus._value2member_map_
                else ""
            )
            return b"text/plain; charset=utf-8", phrase.encode()
        if isinstance(self.body, str):
            return b"text/plain; charset=utf-8", self.body.encode()
        return b"application/json", json.dumps(self.body).encode()


@dataclass(frozen=True)
class LostReply:
    """How the reply of a request that the emulator applies is lost."""

    mode: str
    failure: Failure | None = None
    hang_ms: int = 0


@dataclass(frozen=True)
class Verdict:
    """What the faults make of one request: added latency, then a failure or a lost reply."""

    latency_ms: int = 0
    failure: Failure | None = None
    lost_reply: LostReply | None = None
    late_commit_ms: int | None = None


@dataclass
class HeldReplies:
    """The futures that hanging replies wait on, so shutdown or reset can end them at once."""

    waiters: set[asyncio.Future[None]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self.lock:
            self.waiters.add(waiter)
        return waiter

    def discard(self, waiter: asyncio.Future[None]) -> None:
        with self.lock:
            self.waiters.discard(waiter)

    def release(self) -> int:
        with self.lock:
            waiters, self.waiters = self.waiters, set()
        for waiter in waiters:
            # The caller may be another thread (a test's control call, the server's shutdown).
            waiter.get_loop().call_soon_threadsafe(_resolve, waiter)
        return len(waiters)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class FaultInjector:
    """Holds the active fault rules and decides, per request, the latency and any failure."""

    def __init__(self, seed: int | None = None) -> None:
        self._rules: list[FaultRule] = []
        self._next_id = 1
        self._random = random.Random(seed)
        self.held = HeldReplies()

    def reset(self, seed: int | None = None) -> None:
        """Drop every rule, end held replies, and reseed the source of fractional rules."""
        self._rules.clear()
        self._next_id = 1
        self._random = random.Random(seed)
        self.release_held_replies()

    def add(self, spec: dict[str, Any]) -> FaultRule:
        """Validate a rule as the control API receives it and activate it; raises ValueError."""
        kind = spec.get("kind", "fail")
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}")
        unknown = set(spec) - _FIELDS
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        path, action, method = (
            _optional_str(spec, "path"),
            _optional_str(spec, "action"),
            _method(spec),
        )
        if kind != "lose_reply" and "mode" in spec:
            raise ValueError("'mode' applies only to kind 'lose_reply'")
        if kind == "late_commit":
            if "status" in spec or "body" in spec:
                raise ValueError("a late_commit sends no reply: 'status' and 'body' do not apply")
            ms = spec.get("ms")
            if not isinstance(ms, int) or isinstance(ms, bool) or not 1 <= ms <= MAX_HANG_MS:
                raise ValueError(f"late_commit needs an integer 'ms' from 1 to {MAX_HANG_MS}")
            rule = self._counted(spec, kind, status=None, ms=ms)
        elif kind == "latency":
            ms = spec.get("ms")
            if not isinstance(ms, int) or isinstance(ms, bool) or ms < 0:
                raise ValueError("latency needs a non-negative integer 'ms'")
            rule = FaultRule(self._next_id, kind, ms=ms)
        elif kind == "fail":
            rule = self._counted(spec, kind, status=_status(spec, 503), body=spec.get("body"))
        else:
            rule = self._lose_reply_rule(spec)
        rule.path, rule.action, rule.method = path, action, method
        self._next_id += 1
        self._rules.append(rule)
        return rule

    def _lose_reply_rule(self, spec: dict[str, Any]) -> FaultRule:
        mode = spec.get("mode", "status")
        if mode not in LOST_REPLY_MODES:
            raise ValueError(f"lose_reply 'mode' must be one of {', '.join(LOST_REPLY_MODES)}")
        if mode != "status" and ("status" in spec or "body" in spec):
            raise ValueError("'status' and 'body' apply only to lose_reply mode 'status'")
        if mode != "hang" and "ms" in spec:
            raise ValueError("'ms' applies only to lose_reply mode 'hang'")
        ms = spec.get("ms", DEFAULT_HANG_MS) if mode == "hang" else None
        if ms is not None and (not _is_int(ms) or not 1 <= ms <= MAX_HANG_MS):
            raise ValueError(f"'ms' must be an integer from 1 to {MAX_HANG_MS}")
        return self._counted(
            spec,
            "lose_reply",
            mode=mode,
            status=_status(spec, DEFAULT_LOST_REPLY_STATUS) if mode == "status" else None,
            body=spec.get("body"),
            ms=ms,
        )

    def _counted(self, spec: dict[str, Any], kind: str, **fields: Any) -> FaultRule:
        """A rule for the next `count` matching calls and/or a `rate` of them."""
        count, rate = _count_and_rate(spec, kind)
        return FaultRule(
            id=self._next_id, kind=kind, count=count, remaining=count, rate=rate, **fields
        )

    def rules(self) -> list[FaultRule]:
        return list(self._rules)

    def clear(self) -> None:
        self._rules.clear()

    def release_held_replies(self) -> int:
        """End every reply a "hang" rule is holding now (dropped at once); return how many."""
        return self.held.release()

    def decide(self, method: str, path: str, action: str | None) -> Verdict:
        """The latency to add and the failure or lost reply, if any, for one request."""
        latency = 0
        chosen: FaultRule | None = None
        for rule in list(self._rules):
            if not rule.matches(method, path, action):
                continue
            if rule.kind == "latency":
                latency += rule.ms or 0
                continue
            if chosen is not None:
                continue
            if rule.rate is not None and self._random.random() >= rule.rate:
                continue
            chosen = rule
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.remove(rule)
        if chosen is None:
            return Verdict(latency_ms=latency)
        if chosen.kind == "fail":
            return Verdict(latency, failure=Failure(chosen.status or 503, chosen.body))
        if chosen.kind == "late_commit":
            return Verdict(latency, late_commit_ms=chosen.ms)
        assert chosen.mode is not None
        failure = Failure(chosen.status, chosen.body) if chosen.status is not None else None
        return Verdict(latency, lost_reply=LostReply(chosen.mode, failure, chosen.ms or 0))


class FaultMiddleware:
    """ASGI middleware applying a `FaultInjector` to every HTTP request outside the control API."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector
        _install_log_filter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_control_path(scope):
            await self.app(scope, receive, send)
            return
        received = asyncio.get_running_loop().time()
        action, receive = await resolve_action(scope, receive)
        verdict = self.injector.decide(scope["method"], scope["path"], action)
        if verdict.latency_ms:
            await asyncio.sleep(verdict.latency_ms / 1000)
        if verdict.failure is not None:
            await _send_failure(send, verdict.failure)
        elif verdict.lost_reply is not None:
            await self._apply_and_lose_reply(verdict.lost_reply, scope, receive, send)
        elif verdict.late_commit_ms is not None:
            due = received + verdict.late_commit_ms / 1000
            await self._commit_late(due, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _apply_and_lose_reply(
        self, lost: LostReply, scope: Scope, receive: Receive, send: Send
    ) -> None:
        reply = _CapturedReply()
        await self.app(scope, receive, reply.send)
        scope[APPLIED_STATUS_KEY] = reply.status
        scope[LOST_REPLY_KEY] = lost.mode
        if lost.failure is not None:
            await _send_failure(send, lost.failure)
            return
        if lost.mode == "hang" and await self._hold(lost.hang_ms, receive):
            # The client left: there is nobody to drop the reply for, and uvicorn stays quiet
            # about a response never started on a connection that is gone.
            return
        await _drop(send, reply)

    async def _commit_late(self, due: float, scope: Scope, receive: Receive, send: Send) -> None:
        """Apply the request at `due` (loop time) whatever the client does meanwhile; no reply."""
        body, replay = await buffer_body(receive)
        left = asyncio.ensure_future(_client_disconnected(replay))
        released = self.injector.held.add()
        try:
            delay = max(0.0, due - asyncio.get_running_loop().time())
            done, _ = await asyncio.wait({released}, timeout=delay)
        finally:
            self.injector.held.discard(released)
            released.cancel()
        if released in done:
            # A reset or a stop: the upstream's restart ends the requests it was running.
            left.cancel()
            return
        reply = _CapturedReply()
        await self.app(scope, _body_only(body), reply.send)
        scope[APPLIED_STATUS_KEY] = reply.status
        scope[LOST_REPLY_KEY] = "late_commit"
        client_left = left.done()
        left.cancel()
        if not client_left:
            await _drop(send, reply)

    async def _hold(self, ms: int, receive: Receive) -> bool:
        """Wait `ms`, or less if released or the client goes away; True if the client left."""
        released = self.injector.held.add()
        left = asyncio.ensure_future(_client_disconnected(receive))
        try:
            done, _ = await asyncio.wait(
                {released, left}, timeout=ms / 1000, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self.injector.held.discard(released)
            released.cancel()
            left.cancel()
        return left in done


class _CapturedReply:
    """Collects what the app sends, so the reply can be withheld after the app has committed."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


async def _send_failure(send: Send, failure: Failure) -> None:
    content_type, body = failure.encode()
    await send(
        {
            "type": "http.response.start",
            "status": failure.status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _drop(send: Send, reply: _CapturedReply) -> None:
    """Send the head of the reply with a length its body never fills, then end the call.

    Returning from an ASGI call whose response is incomplete makes uvicorn close the connection;
    that is the only way an app has to cut one. The log line uvicorn writes about it is
    expected here and filtered out (see `_install_log_filter`).
    """
    status = reply.status if reply.status not in _BODILESS and reply.status >= 200 else 200
    framing = {b"content-length", b"transfer-encoding"}
    headers = [(k, v) for k, v in reply.headers if k.lower() not in framing]
    declared = max(len(reply.body), 1)
    headers.append((b"content-length", str(declared).encode()))
    _DROPPING_REPLY.set(True)
    await send({"type": "http.response.start", "status": status, "headers": headers})


def _body_only(body: bytes) -> Receive:
    """A receive that hands out `body`, then waits: the app runs after the client's own
    receive channel may have closed."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("never set")

    return receive


async def _client_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


_UVICORN_INCOMPLETE = "ASGI callable returned without completing response."
# Set in the task serving a request whose reply is dropped on purpose; uvicorn logs from the same
# task right after the app returns, so only that request's complaint is filtered.
_DROPPING_REPLY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "emulator_dropping_reply", default=False
)


class _DroppedReplyFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_DROPPING_REPLY.get() and record.getMessage() == _UVICORN_INCOMPLETE)


_LOG_FILTER = _DroppedReplyFilter()


def _install_log_filter() -> None:
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if _LOG_FILTER not in uvicorn_errors.filters:
        uvicorn_errors.addFilter(_LOG_FILTER)


def _count_and_rate(spec: dict[str, Any], kind: str) -> tuple[int | None, float | None]:
    count = spec.get("count")
    rate = spec.get("rate")
    if count is None and rate is None:
        raise ValueError(f"a {kind} rule needs 'count' or 'rate'")
    if count is not None and (not _is_int(count) or count < 1):
        raise ValueError("'count' must be a positive integer")
    if rate is not None and (
        not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1
    ):
        raise ValueError("'rate' must be a number between 0 and 1")
    return count, None if rate is None else float(rate)


def _status(spec: dict[str, Any], default: int) -> int:
    status = spec.get("status", default)
    if not _is_int(status) or not 100 <= status <= 599:
        raise ValueError("'status' must be an HTTP status code")
    return int(status)


def _method(spec: dict[str, Any]) -> str | None:
    method = _optional_str(spec, "method")
    if method is not None and not _METHOD.match(method):
        raise ValueError("'method' must be an HTTP method such as GET, POST or PATCH")
    return None if method is None else method.upper()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_str(spec: dict[str, Any], key: str) -> str | None:
    value = spec.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string")
    return value
