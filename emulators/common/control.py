"""The control API every emulator serves under `/__emulator__/`, for tests and the dev stack.

    GET    /__emulator__/state          whole state as JSON
    PUT    /__emulator__/state          replace the state with one taken from GET
    POST   /__emulator__/reset          {} or {"seed": n}: back to empty, faults and request log
                                        cleared (held replies dropped), settings back to their
                                        start values
    POST   /__emulator__/seed           {"dataset": "demo"} or emulator-specific {"records": …};
                                        returns what was created (ids)
    GET    /__emulator__/config         behaviour settings; POST changes some of them
    POST   /__emulator__/faults         add a rule (see `faults.py`); GET lists, DELETE clears:
                                        {"kind": "fail", "count"|"rate", "status", "body"}
                                        {"kind": "latency", "ms"}
                                        {"kind": "lose_reply", "mode": "status"|"reset"|"hang",
                                         "count"|"rate", "status", "body" (status), "ms" (hang)}
                                        {"kind": "late_commit", "ms", "count"|"rate"}: no
                                         reply; applied `ms` after receipt, caller or not
                                        each optionally matching "path" (prefix), "action",
                                        "method"
    POST   /__emulator__/tokens/expire  expire every token / session / auth key
    POST   /__emulator__/sessions/drop  drop every streaming session (no-op where none)
    GET    /__emulator__/requests       the request log (?path=&action= filter; a record's
                                        `lost_reply` names the fault that withheld its reply);
                                        DELETE clears

`control_routes(emulator)` returns these as Starlette routes; a bad payload answers 400
`{"error": "…"}`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulators.common.emulator import Emulator

Endpoint = Callable[[Request], Awaitable[Response]]


def control_routes(emulator: Emulator) -> list[BaseRoute]:
    """The `/__emulator__/*` routes operating on `emulator`."""

    async def get_state(request: Request) -> Response:
        return JSONResponse(emulator.to_state())

    async def put_state(request: Request) -> Response:
        emulator.load_state(await _json_object(request))
        return JSONResponse({"ok": True})

    async def reset(request: Request) -> Response:
        body = await _json_object(request)
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError("'seed' must be an integer")
        emulator.reset(seed)
        emulator.faults.reset(seed)
        emulator.requests.clear()
        return JSONResponse({"ok": True, "seed": seed})

    async def seed(request: Request) -> Response:
        return JSONResponse(emulator.seed(await _json_object(request)))

    async def get_config(request: Request) -> Response:
        return JSONResponse(emulator.settings())

    async def post_config(request: Request) -> Response:
        return JSONResponse(emulator.configure(await _json_object(request)))

    async def add_fault(request: Request) -> Response:
        rule = emulator.faults.add(await _json_object(request))
        return JSONResponse(rule.to_dict(), status_code=201)

    async def list_faults(request: Request) -> Response:
        return JSONResponse({"faults": [rule.to_dict() for rule in emulator.faults.rules()]})

    async def clear_faults(request: Request) -> Response:
        emulator.faults.clear()
        return JSONResponse({"ok": True})

    async def expire_tokens(request: Request) -> Response:
        return JSONResponse({"expired": emulator.expire_tokens()})

    async def drop_sessions(request: Request) -> Response:
        return JSONResponse({"dropped": emulator.drop_sessions()})

    async def list_requests(request: Request) -> Response:
        records = emulator.requests.entries(
            path=request.query_params.get("path"), action=request.query_params.get("action")
        )
        return JSONResponse({"count": len(records), "requests": [r.to_dict() for r in records]})

    async def clear_requests(request: Request) -> Response:
        emulator.requests.clear()
        return JSONResponse({"ok": True})

    def route(path: str, endpoint: Endpoint, method: str) -> Route:
        return Route(f"/__emulator__/{path}", _guarded(endpoint), methods=[method])

    return [
        route("state", get_state, "GET"),
        route("state", put_state, "PUT"),
        route("reset", reset, "POST"),
        route("seed", seed, "POST"),
        route("config", get_config, "GET"),
        route("config", post_config, "POST"),
        route("faults", add_fault, "POST"),
        route("faults", list_faults, "GET"),
        route("faults", clear_faults, "DELETE"),
        route("tokens/expire", expire_tokens, "POST"),
        route("sessions/drop", drop_sessions, "POST"),
        route("requests", list_requests, "GET"),
        route("requests", clear_requests, "DELETE"),
    ]


def _guarded(endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return guarded


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON: {exc.msg}") from exc
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body
