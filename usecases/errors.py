"""What a use case refuses with: a stable code for programs and a sentence for people.

The callers decide what a refusal means to theirs: the API maps each class to an HTTP status in
one place (`api.errors`), the CLI prints the code and exits 1. Nothing here knows either.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import ClassVar, TypeVar

import asyncpg

from clients.errors import TransientError

T = TypeVar("T")


class UseCaseError(Exception):
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(UseCaseError):
    """Nothing by that id: no fulfillment of the order, no such dead letter."""

    code = "not_found"


class ConflictError(UseCaseError):
    """Refused in the state things are in: the workflow refused the action, or a request id was
    used for another request."""

    code = "conflict"


class InvalidRequestError(UseCaseError):
    """The request cannot be used as it is (a reserved request id, a cursor not ours)."""

    code = "invalid_request"


class UnavailableError(UseCaseError):
    """A system the use case needs (Postgres, Redis, Temporal, Salesforce) did not answer;
    nothing was decided, or a repeat learns what was."""

    code = "unavailable"


async def or_unavailable(awaitable: Awaitable[T]) -> T:
    """`awaitable`, with Postgres (or another upstream) away answered as `UnavailableError`."""
    try:
        return await awaitable
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
        raise UnavailableError(f"Postgres unavailable ({type(exc).__name__})") from None
    except TransientError as exc:
        raise UnavailableError(str(exc)) from None
