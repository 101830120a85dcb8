"""The app shell shared by all emulators: protocol routes + control API + faults + log + state file.

    emulator = WhmcsEmulator(seed=seed)
    app = create_emulator_app(emulator, whmcs_routes(emulator), state_file=StateFile(p), demo=True)

Middleware order, outermost first: request log (so injected failures are counted too), faults,
change tracking (calls `emulator.changed()` after every non-GET request, which makes the state
file save). The state file is loaded here, before the first request, and flushed at shutdown.
`app.state.on_server_shutdown` lists what `server.py` calls as a stop begins (the release of
replies held by a "hang" fault).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from emulators.common.control import control_routes
from emulators.common.emulator import Emulator, StateFile
from emulators.common.faults import FaultMiddleware
from emulators.common.requestlog import RequestLogMiddleware

_READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def create_emulator_app(
    emulator: Emulator,
    routes: Sequence[BaseRoute],
    *,
    state_file: StateFile | None = None,
    demo: bool = False,
) -> Starlette:
    """A Starlette app serving `routes` for `emulator` with the shared machinery around them.

    With `demo`, the demo dataset is seeded when the state (after loading the file) is empty.
    """
    if state_file is not None:
        state_file.load(emulator)
        state_file.attach(emulator)
    if demo and emulator.is_empty():
        emulator.seed({"dataset": "demo"})
        emulator.changed()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if state_file is not None:
            state_file.flush()

    app = Starlette(
        routes=[*control_routes(emulator), *routes],
        middleware=[
            Middleware(RequestLogMiddleware, log=emulator.requests),
            Middleware(FaultMiddleware, injector=emulator.faults),
            Middleware(ChangeTrackingMiddleware, emulator=emulator),
        ],
        lifespan=lifespan,
    )
    app.state.emulator = emulator
    app.state.on_server_shutdown = [emulator.faults.release_held_replies]
    return app


class ChangeTrackingMiddleware:
    """Calls `emulator.changed()` after each request that may have changed state."""

    def __init__(self, app: ASGIApp, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http" and scope["method"] not in _READ_ONLY_METHODS:
                self.emulator.changed()
