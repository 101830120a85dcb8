"""Fault injection: the rule set (`FaultInjector`) and the ASGI middleware that applies it.

Rules, added through `POST /__emulator__/faults` (see `control.py`) or directly in tests:

    injector.add({"kind": "fail", "count": 2, "status": 503})             # the next 2 calls fail
    injector.add({"kind": "fail", "rate": 0.3, "status": 500,
                  "body": {"result": "error", "message": "boom"}})        # 30 % of calls fail
    injector.add({"kind": "fail", "count": 1, "action": "AddOrder"})      # match a form action
    injector.add({"kind": "latency", "ms": 500, "path": "/emptool/"})     # slow every matching call

`path` matches as a prefix of the request path; `action` matches the form/query `action` field.
A "fail" rule with both `count` and `rate` fails a fraction of calls until it has failed `count`
times. Fractions draw from a `random.Random` seeded by `reset(seed)`, so a seeded run is
repeatable. `FaultMiddleware` skips `/__emulator__/*`, so the control API always answers.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from emulators.common.asgi import is_control_path, resolve_action

_KINDS = ("fail", "latency")


@dataclass
class FaultRule:
    """One fault rule; `remaining` counts down for "fail the next N" rules."""

    id: int
    kind: str
    status: int = 503
    body: Any = None
    count: int | None = None
    remaining: int | None = None
    rate: float | None = None
    ms: int = 0
    path: str | None = None
    action: str | None = None

    def matches(self, path: str, action: str | None) -> bool:
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


class FaultInjector:
    """Holds the active fault rules and decides, per request, the latency and any failure."""

    def __init__(self, seed: int | None = None) -> None:
        self._rules: list[FaultRule] = []
        self._next_id = 1
        self._random = random.Random(seed)

    def reset(self, seed: int | None = None) -> None:
        """Drop every rule and reseed the random source used by fractional rules."""
        self._rules.clear()
        self._next_id = 1
        self._random = random.Random(seed)

    def add(self, spec: dict[str, Any]) -> FaultRule:
        """Validate a rule as the control API receives it and activate it; raises ValueError."""
        kind = spec.get("kind", "fail")
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}")
        unknown = set(spec) - {"kind", "count", "rate", "status", "body", "path", "action", "ms"}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        path = _optional_str(spec, "path")
        action = _optional_str(spec, "action")
        if kind == "latency":
            ms = spec.get("ms")
            if not isinstance(ms, int) or isinstance(ms, bool) or ms < 0:
                raise ValueError("latency needs a non-negative integer 'ms'")
            rule = FaultRule(id=self._next_id, kind=kind, ms=ms, path=path, action=action)
        else:
            count = spec.get("count")
            rate = spec.get("rate")
            if count is None and rate is None:
                raise ValueError("a fail rule needs 'count' or 'rate'")
            if count is not None and (
                not isinstance(count, int) or isinstance(count, bool) or count < 1
            ):
                raise ValueError("'count' must be a positive integer")
            if rate is not None and (not isinstance(rate, int | float) or not 0 <= rate <= 1):
                raise ValueError("'rate' must be a number between 0 and 1")
            status = spec.get("status", 503)
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise ValueError("'status' must be an HTTP status code")
            rule = FaultRule(
                id=self._next_id,
                kind=kind,
                status=status,
                body=spec.get("body"),
                count=count,
                remaining=count,
                rate=None if rate is None else float(rate),
                path=path,
                action=action,
            )
        self._next_id += 1
        self._rules.append(rule)
        return rule

    def rules(self) -> list[FaultRule]:
        return list(self._rules)

    def clear(self) -> None:
        self._rules.clear()

    def decide(self, path: str, action: str | None) -> tuple[int, Failure | None]:
        """Return the latency in ms to add and the failure to send, if any, for one request."""
        latency = 0
        failure: Failure | None = None
        for rule in list(self._rules):
            if not rule.matches(path, action):
                continue
            if rule.kind == "latency":
                latency += rule.ms
                continue
            if failure is not None:
                continue
            if rule.rate is not None and self._random.random() >= rule.rate:
                continue
            failure = Failure(rule.status, rule.body)
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.remove(rule)
        return latency, failure


class FaultMiddleware:
    """ASGI middleware applying a `FaultInjector` to every HTTP request outside the control API."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_control_path(scope):
            await self.app(scope, receive, send)
            return
        action, receive = await resolve_action(scope, receive)
        latency, failure = self.injector.decide(scope["path"], action)
        if latency:
            await asyncio.sleep(latency / 1000)
        if failure is None:
            await self.app(scope, receive, send)
            return
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


def _optional_str(spec: dict[str, Any], key: str) -> str | None:
    value = spec.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string")
    return value
