"""What the portal and operator routes share: Salesforce ids checked before anything uses
them, the documented error responses, and `Cache-Control: private, no-store`.

The schema advertises an id's shape (15 or 18 letters and digits); the dependency also checks
the checksum and the object's key prefix, and answers 422 otherwise. Routes receive the
canonical 18-character id, which is how the read model stores them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query, Response

from api.errors import NO_STORE, ApiError, ErrorBody
from clients.salesforce_ids import ACCOUNT, ORDER, InvalidSalesforceId, validate_sf_id
from domain.order import SF_ID_PATTERN

_SAID = {
    400: "a body that is not JSON",
    401: "no bearer token, or an unknown one",
    403: "a valid token of the other scope",
    404: "nothing by that id",
    409: "the fulfillment is not in a state that allows this, or the key was used before",
    413: "a body over the size limit",
    422: "an invalid id, parameter, header or body",
    503: "a dependency is down; nothing was decided",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses: every one is `ErrorBody`."""
    return {status: {"model": ErrorBody, "description": _SAID[status]} for status in statuses}


# Dependencies are `async def`: a plain `def` one runs in the thread pool (api/services.py).
async def no_store(response: Response) -> None:
    response.headers.update(NO_STORE)


def checked(value: str, *, key_prefix: str, name: str) -> str:
    try:
        return validate_sf_id(value, key_prefix=key_prefix)
    except InvalidSalesforceId as invalid:
        # The message names the parameter, never echoes the value (it may be hostile).
        raise ApiError(422, "invalid_request", f"{name}: {invalid}", headers=NO_STORE) from None


async def _order_id(
    sf_order_id: Annotated[
        str,
        Path(
            alias="sfOrderId",
            pattern=SF_ID_PATTERN,
            description="Salesforce Order id (15 or 18 characters, key prefix 801)",
            examples=["801000000000001AAA"],
        ),
    ],
) -> str:
    return checked(sf_order_id, key_prefix=ORDER, name="sfOrderId")


async def _account_id(
    sf_account_id: Annotated[
        str,
        Path(
            alias="sfAccountId",
            pattern=SF_ID_PATTERN,
            description="Salesforce Account id (15 or 18 characters, key prefix 001)",
            examples=["001000000000001AAA"],
        ),
    ],
) -> str:
    return checked(sf_account_id, key_prefix=ACCOUNT, name="sfAccountId")


async def _account_filter(
    account: Annotated[
        str | None,
        Query(
            pattern=SF_ID_PATTERN,
            description="only this Salesforce Account's fulfillments (key prefix 001)",
        ),
    ] = None,
) -> str | None:
    return None if account is None else checked(account, key_prefix=ACCOUNT, name="account")


OrderId = Annotated[str, Depends(_order_id)]
AccountId = Annotated[str, Depends(_account_id)]
AccountFilter = Annotated[str | None, Depends(_account_filter)]


# A text field any control character (NUL above all: Postgres refuses it) makes invalid, as a
# pydantic pattern; tab and line breaks are allowed.
NO_CONTROL_CHARACTERS = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
