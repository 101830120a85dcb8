"""A use case's refusal is answered in one place: its status, its code, its message, no-store."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from api import errors
from usecases.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    UseCaseError,
)
from usecases.read_model import InvalidCursorError


@pytest.mark.parametrize(
    ("refusal", "status", "code"),
    [
        (NotFoundError("no fulfillment for order X"), 404, "not_found"),
        (ConflictError("cannot retry: the fulfillment is activated"), 409, "conflict"),
        (InvalidRequestError("a request id is required"), 422, "invalid_request"),
        (InvalidCursorError("cursor: not a cursor this API made"), 422, "invalid_request"),
        (UnavailableError("postgres: read fulfillment: Postgres unavailable"), 503, "unavailable"),
    ],
)
async def test_each_refusal_has_its_status(refusal: UseCaseError, status: int, code: str) -> None:
    app = FastAPI()
    errors.install(app)

    @app.get("/refuse")
    async def refuse() -> None:
        raise refusal

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        reply = await client.get("/refuse")
    assert reply.status_code == status
    assert reply.json() == {"code": code, "message": refusal.message}
    assert reply.headers["Cache-Control"] == "private, no-store"
