"""Error codes and error kinds: what went wrong, and whether repeating can help.

Every failure the engine meets is one of four kinds, decided by two questions: can a repeat
help, and did a write take effect?

- `BUSINESS`: a repeat cannot help until someone changes data at its source. It carries a code
  of the closed `ErrorCode` list, parks the fulfillment and is written to Salesforce.
- `NOT_SENT`: the request never reached the upstream (connection refused, DNS, a refused or
  expired session): repeating it is safe, also for a write.
- `OUTCOME_UNKNOWN`: a write was sent but its reply was lost (read timeout, connection reset,
  5xx or an unparsable reply): the write may have taken effect, so the caller reads the current
  state before repeating anything.
- `CONFIGURATION`: the upstream refused *us* (credentials, IP allow-list, permissions, TLS). It
  affects every order at once, so it is retried on a long backoff with an alert instead of
  parking every order in flight; it parks as `UPSTREAM_UNAVAILABLE` only when the budget is spent.

A write whose effect is already there (a repeat after a lost reply) is not an error at all:
it ends `WriteOutcome.ALREADY_DONE`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ErrorCode(StrEnum):
    """The closed list written to `Activation_Error_Code__c` (docs/design.md, "Error codes")."""

    ORDER_NOT_FOUND = "ORDER_NOT_FOUND"
    INVALID_ORDER = "INVALID_ORDER"
    BILLING_CLIENT_NOT_LINKED = "BILLING_CLIENT_NOT_LINKED"
    PAYMENT_METHOD_MISSING = "PAYMENT_METHOD_MISSING"
    PRODUCT_NOT_MAPPED = "PRODUCT_NOT_MAPPED"
    BILLING_ORDER_REJECTED = "BILLING_ORDER_REJECTED"
    SIM_PROVISIONING_FAILED = "SIM_PROVISIONING_FAILED"
    SIM_PROVISIONING_TIMEOUT = "SIM_PROVISIONING_TIMEOUT"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"


class ErrorKind(StrEnum):
    BUSINESS = "business"
    NOT_SENT = "not_sent"
    OUTCOME_UNKNOWN = "outcome_unknown"
    CONFIGURATION = "configuration"

    @property
    def parks(self) -> bool:
        """Whether the failure parks the fulfillment at once (only business errors do)."""
        return self is ErrorKind.BUSINESS


class WriteOutcome(StrEnum):
    """How a write ended: it took effect now, or its effect was already there."""

    APPLIED = "applied"
    ALREADY_DONE = "already_done"


class System(StrEnum):
    """The outside systems, as named in failures and metric labels."""

    SALESFORCE = "salesforce"
    WHMCS = "whmcs"
    FREEBIT = "freebit"
    POSTGRES = "postgres"
    REDIS = "redis"


class Failure(BaseModel):
    """A failure as the workflow records it and an operator reads it (no secrets, no PII)."""

    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    kind: ErrorKind
    message: str
    system: System | None = None
    detail: str | None = None
    # Why no retry of this run can get past the failure, whatever is fixed elsewhere, and what
    # to do instead (None: fix the cause, and a retry may help). The `retry` validator refuses
    # with it, from the workflow's own state.
    retry_cannot_help: str | None = None

    def summary(self) -> str:
        """One line for `Activation_Error_Message__c` and the Temporal UI."""
        where = f"{self.system}: " if self.system else ""
        suffix = f" ({self.detail})" if self.detail else ""
        return f"{where}{self.message}{suffix}"


class OrderRejected(Exception):
    """A business rule refused the order; `code` says which, `message` says why to an operator."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_failure(self) -> Failure:
        return Failure(code=self.code, kind=ErrorKind.BUSINESS, message=self.message)
