"""Driving an emulator's `/__emulator__/` control API from the client tests."""

from __future__ import annotations

from typing import Any

import httpx


class Control:
    def __init__(self, control_url: str) -> None:
        self.url = control_url

    def fail(self, count: int, status: int, body: Any = None, **match: str) -> None:
        spec: dict[str, Any] = {"kind": "fail", "count": count, "status": status, **match}
        if body is not None:
            spec["body"] = body
        httpx.post(f"{self.url}/faults", json=spec).raise_for_status()

    def delay(self, ms: int, **match: str) -> None:
        spec = {"kind": "latency", "ms": ms, **match}
        httpx.post(f"{self.url}/faults", json=spec).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.url}/faults").raise_for_status()

    def expire_tokens(self) -> None:
        httpx.post(f"{self.url}/tokens/expire").raise_for_status()

    def configure(self, **settings: Any) -> None:
        httpx.post(f"{self.url}/config", json=settings).raise_for_status()

    def seed_demo(self) -> dict[str, Any]:
        reply = httpx.post(f"{self.url}/seed", json={"dataset": "demo"})
        reply.raise_for_status()
        created: dict[str, Any] = reply.json()
        return created

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(f"{self.url}/state").json()
        return state

    def requests(self, **match: str) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.url}/requests", params=match)
        records: list[dict[str, Any]] = reply.json()["requests"]
        return records

    def clear_requests(self) -> None:
        httpx.delete(f"{self.url}/requests").raise_for_status()
