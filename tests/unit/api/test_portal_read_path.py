"""The portal's reads stay off the thread pool: FastAPI runs a plain `def` dependency (or
endpoint) in a worker thread, and on the cached read that hand-off cost more than the Redis GET
(bench/README.md, api_read)."""

from __future__ import annotations

import inspect

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.routes import orders


def _calls(dependant: Dependant) -> list[object]:
    found: list[object] = []
    for sub in dependant.dependencies:
        found.append(sub.call)
        found += _calls(sub)
    return found


def _awaited(call: object) -> bool:
    """Whether FastAPI awaits `call` rather than handing it to a thread: a coroutine function,
    or an object whose `__call__` is one (the OpenAPI bearer schemes, `HTTPBearer`)."""
    if inspect.iscoroutinefunction(call):
        return True
    return inspect.iscoroutinefunction(type(call).__call__)


def test_every_dependency_and_endpoint_of_a_portal_read_is_a_coroutine_function() -> None:
    routes = [r for r in orders.router.routes if isinstance(r, APIRoute)]
    assert {r.path for r in routes} == {
        "/api/orders/{sfOrderId}/fulfillment",
        "/api/accounts/{sfAccountId}/orders",
    }
    for route in routes:
        calls = [route.dependant.call, *_calls(route.dependant)]
        # The router's own dependencies (the bearer check, no-store) are among them.
        assert len(calls) > 4
        blocking = [getattr(c, "__name__", repr(c)) for c in calls if not _awaited(c)]
        assert blocking == [], f"{route.path}: {blocking} would run in the thread pool"
