"""Driving an emulator's `/__emulator__/` control API from the client tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from clients.http import tls_context


class Control:
    def __init__(self, control_url: str, *, ca_file: str | None = None) -> None:
        self.url = control_url
        self.http = httpx.Client(verify=tls_context(ca_file))

    def close(self) -> None:
        self.http.close()

    def fail(self, count: int, status: int, body: Any = None, **match: str) -> None:
        spec: dict[str, Any] = {"kind": "fail", "count": count, "status": status, **match}
        if body is not None:
            spec["body"] = body
        self.http.post(f"{self.url}/faults", json=spec).raise_for_status()

    def lose_reply(self, count: int = 1, mode: str = "status", **match: Any) -> None:
        """The next `count` matching requests are applied, then their replies are lost."""
        spec: dict[str, Any] = {"kind": "lose_reply", "mode": mode, "count": count, **match}
        self.http.post(f"{self.url}/faults", json=spec).raise_for_status()

    def delay(self, ms: int, **match: str) -> None:
        spec = {"kind": "latency", "ms": ms, **match}
        self.http.post(f"{self.url}/faults", json=spec).raise_for_status()

    def clear_faults(self) -> None:
        self.http.delete(f"{self.url}/faults").raise_for_status()

    def expire_tokens(self) -> None:
        self.http.post(f"{self.url}/tokens/expire").raise_for_status()

    def configure(self, **settings: Any) -> None:
        self.http.post(f"{self.url}/config", json=settings).raise_for_status()

    def seed_demo(self) -> dict[str, Any]:
        reply = self.http.post(f"{self.url}/seed", json={"dataset": "demo"})
        reply.raise_for_status()
        created: dict[str, Any] = reply.json()
        return created

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.http.get(f"{self.url}/state").json()
        return state

    def requests(self, **match: str) -> list[dict[str, Any]]:
        reply = self.http.get(f"{self.url}/requests", params=match)
        records: list[dict[str, Any]] = reply.json()["requests"]
        return records

    def clear_requests(self) -> None:
        self.http.delete(f"{self.url}/requests").raise_for_status()


@contextmanager
def seeded_control(control_url: str) -> Iterator[Control]:
    """A `Control` on an emulator seeded with its demo dataset, with an empty request log."""
    control = Control(control_url)
    try:
        control.seed_demo()
        control.clear_requests()
        yield control
    finally:
        control.close()
