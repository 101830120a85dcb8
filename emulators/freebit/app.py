"""HTTP door of the Freebit emulator: `POST /emptool/api/<operation>/` with one `json` form field.

    app = create_app(seed=1, settings={"activation_delay": 0.2})

The field may come url-encoded or multipart. Every reply, success or refusal, is HTTP 200 with a
`resultCode` (see `emulator.py`), as Freebit does; an unknown operation is code 210.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulators.common.app import create_emulator_app
from emulators.common.emulator import StateFile
from emulators.freebit.emulator import FreebitEmulator, FreebitError

API_PREFIX = "/emptool/api/"


def create_app(
    *,
    seed: int | None = None,
    state_file: str | None = None,
    demo: bool = False,
    settings: dict[str, Any] | None = None,
) -> Starlette:
    """The Freebit emulator app; `settings` are the start values `reset` returns to."""
    emulator = FreebitEmulator(seed=seed, settings=settings)
    return create_emulator_app(
        emulator,
        freebit_routes(emulator),
        state_file=StateFile(state_file) if state_file else None,
        demo=demo,
    )


def freebit_routes(emulator: FreebitEmulator) -> list[BaseRoute]:
    async def api(request: Request) -> Response:
        operation = request.path_params["operation"]
        try:
            payload = await _payload(request)
            reply = emulator.call(operation, payload)
        except FreebitError as exc:
            reply = exc.reply()
        return JSONResponse(reply)

    return [Route(API_PREFIX + "{operation:path}", api, methods=["POST"])]


async def _payload(request: Request) -> dict[str, Any]:
    form = await request.form()
    raw = form.get("json")
    if not isinstance(raw, str):
        raise FreebitError("200", "the json form field is required", "400")
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FreebitError("200", "the json form field is not valid JSON", "400") from exc
    if not isinstance(payload, dict):
        raise FreebitError("200", "the json form field must hold an object", "400")
    return payload
