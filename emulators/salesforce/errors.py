"""The REST API's error type: one `[{"message","errorCode"[,"fields"]}]` reply with its status.

DML errors name the offending fields (`fields`); query and session errors carry no `fields` key,
as Salesforce's own replies do not.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error Salesforce reports as a JSON list with one entry."""

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        fields: list[str] | None = None,
    ) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def entry(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            body["fields"] = self.fields
        return body

    def body(self) -> list[dict[str, Any]]:
        return [self.entry()]


def dml_error(error_code: str, message: str, fields: list[str] | None = None) -> ApiError:
    """A record-level error (create/update/delete), reported with status 400 and its fields."""
    return ApiError(400, error_code, message, fields if fields is not None else [])


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def invalid_session() -> ApiError:
    return ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
