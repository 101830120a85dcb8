"""Bearer tokens: `API_SERVICE_TOKEN` for the portal's reads, `API_OPS_TOKEN` for operators.

Each scope accepts its own token only (a portal token cannot retry or cancel). Tokens are
compared in constant time; a missing or unknown token is 401, a valid token of the other scope
403. Operators also say who they are (`X-Requested-By`), recorded with every action.

Each scope is declared to OpenAPI as an HTTP bearer scheme (`ServiceToken`, `OpsToken`), so the
schema lists it on every operation it guards and the docs page offers to send it. The schemes
only describe: `_check` reads the header and decides, as it did before they were declared.
"""

from __future__ import annotations

import hmac
import re
from typing import Annotated, Literal

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.services import ApiServices, services

Scope = Literal["service", "ops"]
# Postgres refuses NUL in text, and no name or reason needs a control character.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}

# `auto_error=False`: the scheme never answers a request itself (FastAPI's own 401 body is not
# `{code, message}`); it is in the dependencies for the schema's sake.
service_token = HTTPBearer(
    auto_error=False,
    scheme_name="ServiceToken",
    description="API_SERVICE_TOKEN: the customer portal's reads (`/api/orders/…`, "
    "`/api/accounts/…`).",
)
ops_token = HTTPBearer(
    auto_error=False,
    scheme_name="OpsToken",
    description="API_OPS_TOKEN: operator actions and reads (`/api/ops/…`); actions also name "
    "who asks in `X-Requested-By`.",
)
Declared = HTTPAuthorizationCredentials | None


def _matches(given: str, expected: tuple[str, ...]) -> bool:
    # Every token of the list is compared, the time of the check telling nothing of which.
    found = [hmac.compare_digest(given.encode(), token.encode()) for token in expected]
    return any(found)


def _check(request: Request, api: ApiServices, scope: Scope) -> None:
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.casefold() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "a bearer token is required", headers=_CHALLENGE)
    service = _matches(token, api.service_tokens)
    ops = _matches(token, api.ops_tokens)
    if (scope == "service" and service) or (scope == "ops" and ops):
        return
    if service or ops:
        raise ApiError(403, "forbidden", f"this token does not grant the {scope} scope")
    raise ApiError(401, "unauthorized", "unknown token", headers=_CHALLENGE)


# `async def`: a plain `def` dependency would run in the thread pool (api/services.py).
async def service_scope(
    request: Request,
    api: Annotated[ApiServices, Depends(services)],
    _declared: Annotated[Declared, Depends(service_token)] = None,
) -> None:
    _check(request, api, "service")


# `_declared` has a default: the codec (api/routes/codec.py) calls this with two arguments.
def ops_scope(
    request: Request,
    api: Annotated[ApiServices, Depends(services)],
    _declared: Annotated[Declared, Depends(ops_token)] = None,
) -> None:
    _check(request, api, "ops")


def operator(
    x_requested_by: Annotated[
        str | None,
        Header(max_length=200, description="who asks: an operator's email or a tool's name"),
    ] = None,
) -> str:
    if not x_requested_by or not x_requested_by.strip():
        raise ApiError(422, "invalid_request", "X-Requested-By names who asks for the action")
    if _CONTROL.search(x_requested_by):
        raise ApiError(422, "invalid_request", "X-Requested-By: no control characters")
    return x_requested_by.strip()
