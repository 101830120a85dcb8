"""The one error taxonomy every client maps its upstream failures to.

Activities decide what to do from the exception's type alone (the kinds are `domain.errors`'):

- `TransientError`: a repeat may succeed, and repeating is safe: the request never reached the
  upstream (connection refused, DNS, a refused session), or it was a read. Retried by Temporal;
  `retry_after` (seconds) asks for a longer wait, e.g. after Salesforce's API limit.
- `OutcomeUnknownError` (a `TransientError`): a *write* was sent but its reply was lost (read
  timeout, connection reset, 5xx, an unparsable reply). The write may have taken effect: read
  the current state before repeating anything.
- `UnrecognisedError` (a `TransientError`): an error reply no table knows. Never taken for a
  customer-visible code; counted by the alert metric so that someone adds it to the table.
- `BusinessError`: a repeat cannot help until data changes at its source; carries the `code`.
- `ConfigurationError`: the upstream refused *us* (credentials, allow-list, permissions, TLS).
  Not a business error: every order in flight would park at once. It is retried on a long
  backoff (`retry_after`) with an alert, and parks as `UPSTREAM_UNAVAILABLE` only when the retry
  budget is spent. Clients also stop calling for a while after one (WHMCS locks out addresses
  that keep failing to authenticate).

A repeated write whose effect is already there is not an error: it returns
`WriteOutcome.ALREADY_DONE`.

Messages never contain secrets: clients build them from upstream error text and ids only.
"""

from __future__ import annotations

from domain.errors import ErrorCode, ErrorKind, Failure, System

__all__ = [
    "BusinessError",
    "ClientError",
    "ConfigurationError",
    "ErrorCode",
    "ErrorKind",
    "OutcomeUnknownError",
    "System",
    "TransientError",
    "UnrecognisedError",
]

# How long a configuration error asks to wait before the next attempt: long enough not to
# hammer an upstream that refuses us (WHMCS bans addresses), short enough to recover soon after
# an operator fixes the setting.
CONFIGURATION_RETRY_AFTER = 300.0


class ClientError(Exception):
    """Base of every error a client raises; `str()` is safe to log and to show an operator."""

    code: ErrorCode = ErrorCode.UPSTREAM_UNAVAILABLE
    kind: ErrorKind = ErrorKind.NOT_SENT

    def __init__(
        self,
        system: System,
        message: str,
        *,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.system = system
        self.message = message
        self.detail = detail
        self.retry_after = retry_after

    def __str__(self) -> str:
        suffix = f" ({self.detail})" if self.detail else ""
        return f"{self.system}: {self.message}{suffix}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.value!r}, kind={self.kind.value!r}, "
            f"system={self.system.value!r}, message={self.message!r}, detail={self.detail!r})"
        )

    def to_failure(self) -> Failure:
        return Failure(
            code=self.code,
            kind=self.kind,
            message=self.message,
            system=self.system,
            detail=self.detail,
        )


class TransientError(ClientError):
    """May go away on its own; repeating the same call is safe."""


class OutcomeUnknownError(TransientError):
    """A write's reply was lost: it may have taken effect. Read before repeating."""

    kind = ErrorKind.OUTCOME_UNKNOWN


class UnrecognisedError(TransientError):
    """An error reply no table knows: transient, and counted by the alert metric."""


class BusinessError(ClientError):
    """A permanent refusal; `code` says which, `detail` carries the upstream's words, and
    `retry_cannot_help` why fixing things elsewhere would not let a retry of the fulfillment
    past it (None when it would)."""

    kind = ErrorKind.BUSINESS

    def __init__(
        self,
        system: System,
        code: ErrorCode,
        message: str,
        *,
        detail: str | None = None,
        retry_cannot_help: str | None = None,
    ) -> None:
        super().__init__(system, message, detail=detail)
        self.code = code
        self.retry_cannot_help = retry_cannot_help

    def to_failure(self) -> Failure:
        return super().to_failure().model_copy(update={"retry_cannot_help": self.retry_cannot_help})


class ConfigurationError(ClientError):
    """The upstream refused our credentials, address, permissions or TLS: fix configuration."""

    kind = ErrorKind.CONFIGURATION

    def __init__(
        self,
        system: System,
        message: str,
        *,
        detail: str | None = None,
        retry_after: float = CONFIGURATION_RETRY_AFTER,
    ) -> None:
        super().__init__(system, message, detail=detail, retry_after=retry_after)
