"""The Freebit MVNO API client: cached auth key, SIM activation requests, account state reads.

Every call is a POST to `<base>/<path>/` with one form field `json` holding the request as a
JSON string; every call after `authOem/` carries the `authKey` inside that JSON. A reply's
`resultCode` "100" (or 100) means success. Public documentation of Freebit is thin (see
protocols.md), so everything beyond those facts is kept in the mapping table and the models
below, in one place, to be corrected as the real API is learnt.

Activations are asynchronous and are never retried here: the activity polls `get_account`
(a read, retried on transient failures) until the line is active or failed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal, Self

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from clients.errors import (
    BusinessError,
    ClientError,
    ConfigurationError,
    ErrorCode,
    System,
    TransientError,
)
from clients.http import DEFAULT_TIMEOUT, FormApiClient, retry_after_seconds, transient_status
from clients.metrics import observe
from clients.retry import RetryPolicy
from config.logging import get_logger
from config.settings import Settings

log = get_logger(__name__)

SUCCESS = "100"
# The line's phone number. ASCII digits only: `\d` would also let full-width and other Unicode
# digits through, which Freebit does not read as a number.
ACCOUNT_PATTERN = r"^[0-9]{11,14}$"

# ---------------------------------------------------------------------------------------------
# Error mapping: the one table from Freebit replies to the taxonomy.

FreebitDisposition = Literal["auth", "transient"]

# Keyed by `status.statusCode` (Freebit mirrors HTTP status semantics there). Any other failure
# is a refusal of the request itself: SIM_PROVISIONING_FAILED carrying the resultCode.
FREEBIT_STATUS_TABLE: Mapping[str, FreebitDisposition] = {
    "401": "auth",
    "403": "auth",
    "408": "transient",
    "429": "transient",
    "500": "transient",
    "502": "transient",
    "503": "transient",
    "504": "transient",
}


def classify_freebit_reply(operation: str, http_status: int, body: object) -> ClientError | None:
    """None for success, else the taxonomy error; a refused auth key is a `FreebitAuthError`."""
    if isinstance(body, dict) and str(body.get("resultCode")) == SUCCESS and http_status < 300:
        return None
    status = body.get("status") if isinstance(body, dict) else None
    status_code = str(status.get("statusCode", "")) if isinstance(status, dict) else ""
    message = str(status.get("message", "")) if isinstance(status, dict) else ""
    result_code = str(body.get("resultCode", "")) if isinstance(body, dict) else ""
    detail = ": ".join(
        p for p in (f"resultCode {result_code}" if result_code else "", message) if p
    )
    if http_status in (401, 403) or FREEBIT_STATUS_TABLE.get(status_code) == "auth":
        return FreebitAuthError(operation, detail or f"HTTP {http_status}")
    if transient_status(http_status) or FREEBIT_STATUS_TABLE.get(status_code) == "transient":
        return TransientError(System.FREEBIT, f"{operation} failed", detail=detail or None)
    if not isinstance(body, dict) or not result_code:
        return TransientError(System.FREEBIT, f"{operation} returned an unexpected reply")
    return BusinessError(
        System.FREEBIT, ErrorCode.SIM_PROVISIONING_FAILED, f"{operation} refused", detail=detail
    )


class FreebitAuthError(ConfigurationError):
    """Freebit refused our OEM credentials or, after one refresh, the auth key."""

    def __init__(self, operation: str, detail: str) -> None:
        super().__init__(System.FREEBIT, f"{operation}: authentication refused", detail=detail)


# ---------------------------------------------------------------------------------------------
# Typed requests and replies.


class FreebitModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class MnpReservation(FreebitModel):
    """A number-portability reservation to carry a number over from another carrier."""

    reserve_number: str = Field(alias="reserveNumber")
    reserve_expire_date: date | None = Field(default=None, alias="reserveExpireDate")

    def to_json(self) -> dict[str, str]:
        data = {"reserveNumber": self.reserve_number}
        if self.reserve_expire_date is not None:
            data["reserveExpireDate"] = self.reserve_expire_date.strftime("%Y%m%d")
        return data


class EsimActivation(FreebitModel):
    """`mvno/esim/addAcnt/`: register a line on an eSIM profile (asynchronous)."""

    account: str = Field(pattern=ACCOUNT_PATTERN)
    eid: str = Field(pattern=r"^[0-9]{32}$")
    plan_code: str
    # N = new number, M = number portability (needs `mnp`), R = re-issue.
    add_kind: Literal["N", "M", "R"] = "N"
    sim_kind: str = "E"
    mnp: MnpReservation | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "account": self.account,
            "eid": self.eid,
            "simKind": self.sim_kind,
            "addKind": self.add_kind,
            "planCode": self.plan_code,
        }
        if self.mnp is not None:
            data["mnp"] = self.mnp.to_json()
        return data


class PhysicalSimActivation(FreebitModel):
    """`master/addAcnt/`: register a line on a physical SIM card (asynchronous)."""

    account: str = Field(pattern=ACCOUNT_PATTERN)
    plan_code: str
    add_kind: Literal["N", "M", "R"] = "N"
    mnp: MnpReservation | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "account": self.account,
            "addKind": self.add_kind,
            "planCode": self.plan_code,
        }
        if self.mnp is not None:
            data["mnp"] = self.mnp.to_json()
        return data


class ActivationAccepted(FreebitModel):
    """Freebit accepted the request; the line becomes active later (poll `get_account`)."""

    account: str
    process_no: str | None = Field(default=None, alias="processNo")


class FreebitAccount(FreebitModel):
    """A line as the account detail read returns it."""

    account: str
    state: str
    sim_type: str | None = Field(default=None, alias="simType")
    eid: str | None = None
    plan_code: str | None = Field(default=None, alias="planCode")
    fail_reason: str | None = Field(default=None, alias="failReason")

    @property
    def phase(self) -> Literal["active", "failed", "pending"]:
        """Where an activation stands; any state but active or failed is still in progress."""
        state = self.state.casefold()
        if state == "active":
            return "active"
        if state == "failed":
            return "failed"
        return "pending"


# ---------------------------------------------------------------------------------------------
# The client.


class FreebitClient(FormApiClient):
    """Talks to the Freebit API; one instance per process, closed with `aclose()`."""

    def __init__(
        self,
        base_url: str,
        oem_id: str,
        oem_key: SecretStr,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        auth_key_max_age: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._oem_id = oem_id
        self._oem_key = oem_key
        # How long a key lives is not public; without a max age it is renewed only on refusal.
        self._auth_key_max_age = auth_key_max_age
        self._retry = retry or RetryPolicy()
        super().__init__(System.FREEBIT, timeout)
        self._auth_key: SecretStr | None = None
        self._auth_key_at = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        if (
            not settings.freebit_base_url
            or not settings.freebit_oem_id
            or not settings.freebit_oem_key
        ):
            raise ValueError("FREEBIT_BASE_URL, FREEBIT_OEM_ID and FREEBIT_OEM_KEY must be set")
        return cls(settings.freebit_base_url, settings.freebit_oem_id, settings.freebit_oem_key)

    def __repr__(self) -> str:
        return f"FreebitClient(base_url={self._base_url!r}, oem_id={self._oem_id!r})"

    # -- operations ----------------------------------------------------------------------------

    async def activate_esim(self, request: EsimActivation) -> ActivationAccepted:
        reply = await self._call("esim_add_account", "mvno/esim/addAcnt/", request.to_json())
        log.info("freebit.esim_requested", account=request.account, add_kind=request.add_kind)
        return _accepted(request.account, reply)

    async def activate_physical_sim(self, request: PhysicalSimActivation) -> ActivationAccepted:
        reply = await self._call("add_account", "master/addAcnt/", request.to_json())
        log.info("freebit.sim_requested", account=request.account, add_kind=request.add_kind)
        return _accepted(request.account, reply)

    async def get_account(self, account: str, *, kind: str = "MVNO") -> FreebitAccount:
        """The line's current state, for polling an activation (retried on transient errors)."""
        payload = {"requestDatas": [{"kind": kind, "account": account}]}
        reply = await self._retry.run(lambda: self._call("get_account", "master/getAcnt/", payload))
        return _account_from_reply(account, reply)

    # -- plumbing ------------------------------------------------------------------------------

    async def _call(self, operation: str, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        key = await self._key()
        try:
            return await self._post(operation, path, {**payload, "authKey": key.get_secret_value()})
        except _AuthRejectedError:
            pass
        # The key was refused (expired or revoked): the request was not executed, so one repeat
        # with a fresh key is safe even for an activation.
        log.info("freebit.auth_key_refused", operation=operation)
        key = await self._key(stale=key)
        try:
            return await self._post(operation, path, {**payload, "authKey": key.get_secret_value()})
        except _AuthRejectedError as exc:
            raise TransientError(
                System.FREEBIT, f"{operation}: auth key refused after refresh", detail=exc.detail
            ) from None

    async def _key(self, *, stale: SecretStr | None = None) -> SecretStr:
        async with self._lock:
            current = self._auth_key
            expired = (
                self._auth_key_max_age is not None
                and time.monotonic() - self._auth_key_at > self._auth_key_max_age
            )
            if current is not None and current is not stale and not expired:
                return current
            self._auth_key = await self._retry.run(self._authenticate)
            self._auth_key_at = time.monotonic()
            return self._auth_key

    async def _authenticate(self) -> SecretStr:
        payload = {"oemId": self._oem_id, "oemKey": self._oem_key.get_secret_value()}
        try:
            reply = await self._post("auth", "authOem/", payload)
        except _AuthRejectedError as exc:
            raise FreebitAuthError("authOem", exc.detail or "") from None
        auth_key = reply.get("authKey")
        if not isinstance(auth_key, str) or not auth_key:
            raise TransientError(System.FREEBIT, "authOem reply has no authKey")
        return SecretStr(auth_key)

    async def _post(self, operation: str, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        async with observe(System.FREEBIT, operation):
            form = {"json": json.dumps(payload)}
            response, body = await self._post_form(self._base_url + path, form)
            error = classify_freebit_reply(operation, response.status_code, body)
            if isinstance(error, FreebitAuthError):
                raise _AuthRejectedError(error.detail or "")
            if isinstance(error, TransientError):
                error.retry_after = retry_after_seconds(response)
            if error is not None:
                raise error
            assert isinstance(body, dict)
            return body


class _AuthRejectedError(TransientError):
    """Internal: the auth key was refused; `_call` refreshes it once and repeats."""

    def __init__(self, detail: str) -> None:
        super().__init__(System.FREEBIT, "auth key refused", detail=detail)


def _accepted(account: str, reply: Mapping[str, Any]) -> ActivationAccepted:
    process_no = reply.get("processNo")
    return ActivationAccepted(
        account=account, processNo=str(process_no) if process_no is not None else None
    )


def _account_from_reply(account: str, reply: Mapping[str, Any]) -> FreebitAccount:
    rows = reply.get("responseDatas")
    row = rows[0] if isinstance(rows, list) and rows else None
    if not isinstance(row, dict) or not row.get("state"):
        raise TransientError(System.FREEBIT, "get_account reply has no account state")
    try:
        return FreebitAccount.model_validate({"account": account, **row})
    except ValidationError:
        raise TransientError(System.FREEBIT, "get_account reply has an unexpected shape") from None
