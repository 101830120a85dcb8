"""Errors as JSON `{code, message}`: a stable code for programs, a sentence for people; never a
stack trace or a secret.

A use case's refusal (`usecases.errors`) is mapped to its HTTP status here, in one place, for
every route: the routes call the use cases and let their refusals through.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from config.logging import get_logger
from usecases.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    UseCaseError,
)

log = get_logger(__name__)

# Answers about one customer's orders, or an operator's action: no browser or proxy keeps them.
NO_STORE = {"Cache-Control": "private, no-store"}

# What each refusal of a use case is in HTTP.
_USE_CASE_STATUSES: dict[type[UseCaseError], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    InvalidRequestError: 422,
    UnavailableError: 503,
}


class ErrorBody(BaseModel):
    code: str
    message: str


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


# The codes a status means when nothing more specific was said.
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        ErrorBody(code=code, message=message).model_dump(), status_code=status, headers=headers
    )


def use_case_status(error: UseCaseError) -> int:
    """The HTTP status of a use case's refusal (500 for one this table does not know)."""
    for kind in type(error).__mro__:
        if kind in _USE_CASE_STATUSES:
            return _USE_CASE_STATUSES[kind]
    return 500


def install(app: FastAPI) -> None:
    @app.exception_handler(UseCaseError)
    async def refused(_request: Request, error: UseCaseError) -> JSONResponse:
        # Every use case answers about an order or an operator's action: never kept (NO_STORE).
        return error_response(use_case_status(error), error.code, error.message, NO_STORE)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(error.status_code, "error")
        message = str(error.detail) if error.detail else code.replace("_", " ")
        headers = dict(error.headers) if error.headers else None
        return error_response(error.status_code, code, message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(_problem(e) for e in error.errors()[:5])
        return error_response(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, _error: ClientDisconnect) -> Response:
        # The client went away mid-body: nothing to answer, and nothing wrong with us.
        log.info("api.client_disconnected", path=request.url.path)
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # The trace goes to the log (redacted there), never to the caller.
        log.error(
            "api.unhandled", path=request.url.path, error=type(error).__name__, exc_info=error
        )
        return error_response(500, "internal_error", "internal error")


def _problem(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg"))
