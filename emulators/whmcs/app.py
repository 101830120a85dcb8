"""HTTP door of the WHMCS emulator: `POST /includes/api.php`, auth, IP allow-list, encoding.

    app = create_app(seed=1, state_file=".dev/whmcs.json", demo=True)

Checks run in WHMCS's order: the caller's address against `allowed_ips` (HTTP 403
"Invalid IP <ip>" unless the configured `accesskey` is sent), then `identifier`/`secret` (or
`username`/`password`, the password also as its MD5 digest) -> "Authentication Failed", then the
action. Replies are JSON with `responsetype=json`, else WHMCS's XML.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulators.common.app import create_emulator_app
from emulators.common.emulator import StateFile
from emulators.whmcs.emulator import Params, WhmcsEmulator, WhmcsError

API_PATH = "/includes/api.php"


def create_app(
    *,
    seed: int | None = None,
    state_file: str | None = None,
    demo: bool = False,
    settings: dict[str, Any] | None = None,
) -> Starlette:
    """The WHMCS emulator app; `settings` are the start values `reset` returns to."""
    emulator = WhmcsEmulator(seed=seed, settings=settings)
    return create_emulator_app(
        emulator,
        whmcs_routes(emulator),
        state_file=StateFile(state_file) if state_file else None,
        demo=demo,
    )


def whmcs_routes(emulator: WhmcsEmulator) -> list[BaseRoute]:
    async def api(request: Request) -> Response:
        items = list(request.query_params.multi_items())
        if request.method == "POST":
            form = await request.form()
            items += [(key, value) for key, value in form.multi_items() if isinstance(value, str)]
        params = Params(items)
        as_json = params.get("responsetype").lower() == "json"
        config = emulator.config
        caller = request.client.host if request.client else ""
        allowed = config["allowed_ips"]
        key_ok = bool(config["access_key"]) and params.get("accesskey") == config["access_key"]
        if allowed and caller not in allowed and not key_ok:
            return _reply({"result": "error", "message": f"Invalid IP {caller}"}, as_json, 403)
        identifier = params.get("identifier") or params.get("username")
        secret = params.get("secret") or params.get("password")
        if not emulator.credentials_valid(identifier, secret):
            return _reply({"result": "error", "message": "Authentication Failed"}, as_json)
        try:
            result = emulator.call(params.get("action"), params)
        except WhmcsError as exc:
            result = {"result": "error", "message": exc.message}
        return _reply(result, as_json)

    return [Route(API_PATH, api, methods=["GET", "POST"])]


def _reply(body: dict[str, Any], as_json: bool, status: int = 200) -> Response:
    if as_json:
        return JSONResponse(body, status_code=status)
    xml = '<?xml version="1.0" encoding="utf-8"?>\n<whmcsapi version="8.13.0">' + _xml(body)
    return Response(xml + "</whmcsapi>", status_code=status, media_type="text/xml")


def _xml(value: Any, tag: str = "") -> str:
    if isinstance(value, dict):
        inner = "".join(_xml(v, str(k)) for k, v in value.items())
    elif isinstance(value, list):
        # WHMCS repeats the parent's singular tag for each list element.
        return "".join(_xml(v, tag) for v in value)
    else:
        inner = escape("" if value is None else str(value))
    return f"<{tag}>{inner}</{tag}>" if tag else inner
