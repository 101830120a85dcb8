"""The one error taxonomy every client maps its upstream failures to.

Activities decide "retry" or "stop and park" from the exception's type alone:

- `TransientError`: the call may succeed if repeated (timeouts, connection errors, HTTP 5xx,
  429 and Salesforce `REQUEST_LIMIT_EXCEEDED`, a session that stayed invalid after one refresh).
  Temporal retries the activity; when the retry budget is spent the workflow parks with
  `UPSTREAM_UNAVAILABLE`.
- `BusinessError`: repeating the same call cannot help until someone changes data upstream. It
  carries a stable `code` from DESIGN.md's table, the `system` that refused, and `detail` (the
  upstream's own words or code, e.g. a WHMCS message or a Freebit resultCode).
- `ConfigurationError` is a `BusinessError` with code `UPSTREAM_UNAVAILABLE`: the outside system
  refused *us* (WHMCS "Authentication Failed" / "Invalid IP", a Salesforce token request with bad
  credentials, a missing field permission). Retrying on a schedule would not fix credentials and
  WHMCS locks out addresses that keep failing to authenticate, so it is not transient; it parks
  the workflow at once, and an operator retries after fixing the configuration.

Messages never contain secrets: clients build them from upstream error text and ids only.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """The closed list of error codes written to `Activation_Error_Code__c`."""

    ORDER_NOT_FOUND = "ORDER_NOT_FOUND"
    INVALID_ORDER = "INVALID_ORDER"
    BILLING_CLIENT_NOT_LINKED = "BILLING_CLIENT_NOT_LINKED"
    PAYMENT_METHOD_MISSING = "PAYMENT_METHOD_MISSING"
    PRODUCT_NOT_MAPPED = "PRODUCT_NOT_MAPPED"
    BILLING_ORDER_REJECTED = "BILLING_ORDER_REJECTED"
    SIM_PROVISIONING_FAILED = "SIM_PROVISIONING_FAILED"
    SIM_PROVISIONING_TIMEOUT = "SIM_PROVISIONING_TIMEOUT"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"


class System(StrEnum):
    """The outside systems, as used in error fields and metric labels."""

    SALESFORCE = "salesforce"
    WHMCS = "whmcs"
    FREEBIT = "freebit"
    REDIS = "redis"


class ClientError(Exception):
    """Base of every error a client raises; `str()` is safe to log and to show an operator."""

    code: ErrorCode

    def __init__(self, system: System, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.system = system
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        suffix = f" ({self.detail})" if self.detail else ""
        return f"{self.system}: {self.message}{suffix}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.value!r}, system={self.system.value!r}, "
            f"message={self.message!r}, detail={self.detail!r})"
        )


class TransientError(ClientError):
    """A failure that may go away on its own; safe to retry the same call later."""

    code = ErrorCode.UPSTREAM_UNAVAILABLE

    def __init__(
        self,
        system: System,
        message: str,
        *,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(system, message, detail=detail)
        self.retry_after = retry_after


class BusinessError(ClientError):
    """A permanent refusal; `code` says which, `detail` carries the upstream's words."""

    def __init__(
        self, system: System, code: ErrorCode, message: str, *, detail: str | None = None
    ) -> None:
        super().__init__(system, message, detail=detail)
        self.code = code


class ConfigurationError(BusinessError):
    """The upstream refused our credentials or address: park at once, fix configuration, retry."""

    def __init__(self, system: System, message: str, *, detail: str | None = None) -> None:
        super().__init__(system, ErrorCode.UPSTREAM_UNAVAILABLE, message, detail=detail)
