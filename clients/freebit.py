"""The Freebit MVNO API client: cached auth key, SIM activation requests, account state reads.

Every call is a POST to `<base>/<path>/` with one form field `json` holding the request as a
JSON string; every call after `authOem/` carries the `authKey` inside that JSON. A reply's
`resultCode` "100" (or 100) means success. Public documentation of Freebit is thin, so everything
beyond those facts is kept in the mapping table and the models below, in one place, to be corrected
as the real API is learnt.

Registrations are asynchronous and never retried here. `register_line` answers
`WriteOutcome.ALREADY_DONE` when Freebit says the line exists (a repeat after a lost reply);
a lost reply raises `OutcomeUnknownError`, after which `find_line` tells whether the line was
made. The activity then polls `find_line` until the line is active or failed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any, Self

import httpx
from pydantic import SecretStr

from clients.errors import (
    BusinessError,
    ClientError,
    ConfigurationError,
    ErrorCode,
    OutcomeUnknownError,
    System,
    TransientError,
    UnrecognisedError,
)
from clients.http import DEFAULT_TIMEOUT, FormApiClient, retry_after_seconds, transient_status
from clients.metrics import alert, observe
from clients.retry import RetryPolicy
from config.logging import get_logger
from config.settings import Settings
from domain.errors import WriteOutcome
from domain.rules import existing_line
from domain.sim import ExistingLine, MnpTransfer, SimActivation, SimPhase, SimRequest, SimType

log = get_logger(__name__)

SUCCESS = "100"
# Flags are the strings "10" (on) and "20" (off).
FLAG_OFF = "20"
# `createType` of a registration: a new line (the spec's value for a normal application).
CREATE_TYPE_NEW = "new"
# Line states as the account detail reports them. Anything else is `SimPhase.UNKNOWN`: the
# engine alerts and keeps polling instead of reading it as "still in progress".
LINE_STATES: Mapping[str, SimPhase] = {
    "processing": SimPhase.IN_PROGRESS,
    "active": SimPhase.ACTIVE,
    "failed": SimPhase.FAILED,
}
REGISTRATIONS = frozenset({"esim_add_account", "add_account"})

# ---------------------------------------------------------------------------------------------
# Error mapping: per operation, by `status.statusCode` (Freebit mirrors HTTP semantics there).


class FreebitAuthError(ConfigurationError):
    """Freebit refused our OEM credentials."""

    def __init__(self, operation: str, detail: str) -> None:
        super().__init__(System.FREEBIT, f"{operation}: authentication refused", detail=detail)


class _AuthKeyRefusedError(TransientError):
    """Internal: the auth key was refused (expired); `_call` refreshes it once and repeats."""


class _AlreadyRegisteredError(BusinessError):
    """Internal: a registration met a line that exists; the client reads it to confirm."""


class _LineNotFoundError(BusinessError):
    """Internal: the account detail read met an unknown line."""


def classify_freebit_reply(
    operation: str, http_status: int, body: object, *, write: bool
) -> ClientError | None:
    """None for success, else the taxonomy error for `operation`'s reply."""
    if isinstance(body, dict) and str(body.get("resultCode")) == SUCCESS and http_status < 300:
        return None
    status = body.get("status") if isinstance(body, dict) else None
    status_code = str(status.get("statusCode", "")) if isinstance(status, dict) else ""
    message = str(status.get("message", "")) if isinstance(status, dict) else ""
    result_code = str(body.get("resultCode", "")) if isinstance(body, dict) else ""
    detail = (
        "; ".join(p for p in (f"resultCode {result_code}" if result_code else "", message) if p)
        or f"HTTP {http_status}"
    )
    if http_status in (401, 403) or status_code in ("401", "403"):
        if operation == "auth":
            return FreebitAuthError("authOem", detail)
        return _AuthKeyRefusedError(System.FREEBIT, "auth key refused", detail=detail)
    transient = transient_status(http_status) or (
        status_code.isdigit() and transient_status(int(status_code))
    )
    if transient:
        if write and "429" not in (str(http_status), status_code):
            return OutcomeUnknownError(System.FREEBIT, f"{operation} failed", detail=detail)
        return TransientError(System.FREEBIT, f"{operation} failed", detail=detail)
    if not isinstance(body, dict) or not result_code:
        text = f"{operation} returned an unexpected reply"
        if write:
            return OutcomeUnknownError(System.FREEBIT, text, detail=detail)
        return UnrecognisedError(System.FREEBIT, text, detail=detail)
    if operation in REGISTRATIONS and status_code == "409":
        return _AlreadyRegisteredError(
            System.FREEBIT, ErrorCode.SIM_PROVISIONING_FAILED, "line exists", detail=detail
        )
    if operation in REGISTRATIONS and status_code == "400":
        # Freebit refused the request itself (a field, the plan, the EID, addKind).
        return BusinessError(
            System.FREEBIT, ErrorCode.SIM_PROVISIONING_FAILED, f"{operation} refused", detail=detail
        )
    if operation == "get_account" and status_code == "404":
        return _LineNotFoundError(
            System.FREEBIT, ErrorCode.SIM_PROVISIONING_FAILED, "line not found", detail=detail
        )
    return UnrecognisedError(
        System.FREEBIT, f"{operation} failed with an unrecognised error", detail=detail
    )


# ---------------------------------------------------------------------------------------------
# The wire form of a registration.


def _mnp_json(mnp: MnpTransfer) -> dict[str, str]:
    return {
        "reserveNumber": mnp.reservation_number,
        "reserveExpireDate": mnp.expiry_date.strftime("%Y%m%d"),
        "lastnameKanji": mnp.last_name_kanji,
        "firstnameKanji": mnp.first_name_kanji,
        "lastnameZenKana": mnp.last_name_kana,
        "firstnameZenKana": mnp.first_name_kana,
        "gender": mnp.gender,
        "birthday": mnp.birthday.strftime("%Y%m%d"),
    }


def registration_json(
    request: SimRequest, *, reissue: bool = False
) -> tuple[str, str, dict[str, Any]]:
    """(operation, path, JSON) of the Freebit registration for `request`; `reissue` registers
    an existing line again (its activation failed)."""
    # N = a new number, M = a number ported in (needs the `mnp` block), R = a re-issue.
    add_kind = "R" if reissue else "M" if request.mnp is not None else "N"
    data: dict[str, Any] = {
        "account": request.phone_number,
        "planCode": request.plan_code,
        "createType": CREATE_TYPE_NEW,
        "addKind": add_kind,
        # We are not the ALADIN sales system; with "10" Freebit allows addKind N only.
        "aladinOperated": FLAG_OFF,
    }
    if request.mnp is not None and not reissue:
        data["mnp"] = _mnp_json(request.mnp)
    if request.sim_type == SimType.ESIM:
        return "esim_add_account", "mvno/esim/addAcnt/", data | {"eid": request.eid, "simKind": "E"}
    return "add_account", "master/addAcnt/", data


def _activation(account: str, row: Mapping[str, Any]) -> SimActivation:
    state = str(row.get("state") or "")
    phase = LINE_STATES.get(state.casefold(), SimPhase.UNKNOWN)
    if phase is SimPhase.UNKNOWN:
        alert(System.FREEBIT, "get_account", "unrecognised")
        log.warning("freebit.unknown_line_state", state=state)
    sim_type = {"esim": SimType.ESIM, "physical": SimType.PHYSICAL}.get(
        str(row.get("simType") or "").casefold()
    )
    return SimActivation(
        phone_number=account,
        phase=phase,
        state=state,
        sim_type=sim_type,
        fail_reason=str(row.get("failReason") or "") or None,
        eid=str(row.get("eid") or "") or None,
    )


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
        return cls(
            settings.freebit_base_url,
            settings.freebit_oem_id,
            settings.freebit_oem_key,
            timeout=httpx.Timeout(settings.freebit_timeout_seconds, connect=5.0),
        )

    def __repr__(self) -> str:
        return f"FreebitClient(base_url={self._base_url!r}, oem_id={self._oem_id!r})"

    # -- operations ----------------------------------------------------------------------------

    async def register_line(self, request: SimRequest) -> WriteOutcome:
        """Ask Freebit to register the line (asynchronous: poll `find_line` afterwards).

        When the number is already registered, the line detail decides
        (`rules.existing_line`): the line an earlier attempt registered is `ALREADY_DONE` (its
        reply was lost); this request's line whose activation failed is registered again as a
        re-issue (`APPLIED`); another SIM's line is a business refusal saying what to check.
        """
        operation, path, data = registration_json(request)
        try:
            await self._call(operation, path, data, write=True)
        except _AlreadyRegisteredError as exc:
            line = await self.find_line(request.phone_number)
            decision = ExistingLine.OURS if line is None else existing_line(request, line)
            if line is None or decision is ExistingLine.CONFLICT:
                held = "" if line is None else f" ({_describe(line)})"
                raise BusinessError(
                    System.FREEBIT,
                    ErrorCode.SIM_PROVISIONING_FAILED,
                    f"the number is registered to another SIM{held}: release it at Freebit "
                    "or correct the number (or EID) in Salesforce, then retry",
                    detail=exc.detail,
                ) from None
            if decision is ExistingLine.OURS:
                log.info("freebit.already_registered", sf_order_id=request.sf_order_id)
                return WriteOutcome.ALREADY_DONE
            operation, path, data = registration_json(request, reissue=True)
            await self._call(operation, path, data, write=True)
            log.info(
                "freebit.line_reissued",
                sf_order_id=request.sf_order_id,
                phone_number=request.phone_number,
                failed=line.fail_reason or line.state,
            )
            return WriteOutcome.APPLIED
        log.info(
            "freebit.line_requested",
            sf_order_id=request.sf_order_id,
            phone_number=request.phone_number,
            sim_type=request.sim_type.value,
            mnp=request.mnp is not None,
        )
        return WriteOutcome.APPLIED

    async def find_line(self, phone_number: str, *, kind: str = "MVNO") -> SimActivation | None:
        """The line's current state, or None when Freebit does not know it (retried read)."""
        payload = {"requestDatas": [{"kind": kind, "account": phone_number}]}
        try:
            reply = await self._retry.run(
                lambda: self._call("get_account", "master/getAcnt/", payload, write=False)
            )
        except _LineNotFoundError:
            return None
        rows = reply.get("responseDatas")
        # Freebit answers the first entry of `requestDatas` only.
        row = rows[0] if isinstance(rows, list) and rows else None
        if not isinstance(row, dict) or str(row.get("account", phone_number)) != phone_number:
            raise UnrecognisedError(System.FREEBIT, "get_account reply has no matching line")
        return _activation(phone_number, row)

    # -- plumbing ------------------------------------------------------------------------------

    async def _call(
        self, operation: str, path: str, payload: Mapping[str, Any], *, write: bool
    ) -> dict[str, Any]:
        key = await self._key()
        try:
            return await self._post(
                operation, path, {**payload, "authKey": key.get_secret_value()}, write=write
            )
        except _AuthKeyRefusedError:
            pass
        # The key was refused (expired or revoked): the request was not executed, so one repeat
        # with a fresh key is safe even for a registration.
        log.info("freebit.auth_key_refused", operation=operation)
        key = await self._key(stale=key)
        try:
            return await self._post(
                operation, path, {**payload, "authKey": key.get_secret_value()}, write=write
            )
        except _AuthKeyRefusedError as exc:
            raise TransientError(
                System.FREEBIT, f"{operation}: auth key refused after refresh", detail=exc.detail
            ) from None

    async def _key(self, *, stale: SecretStr | None = None) -> SecretStr:
        """The shared auth key; concurrent callers that saw the same refusal share one refresh.

        Not retried here: the caller's own retry (reads) or Temporal's (writes) repeats the
        whole call, so a failing authOem is not multiplied by nested retries.
        """
        async with self._lock:
            current = self._auth_key
            expired = (
                self._auth_key_max_age is not None
                and time.monotonic() - self._auth_key_at > self._auth_key_max_age
            )
            if current is not None and current is not stale and not expired:
                return current
            self._auth_key = await self._authenticate()
            self._auth_key_at = time.monotonic()
            return self._auth_key

    async def _authenticate(self) -> SecretStr:
        payload = {"oemId": self._oem_id, "oemKey": self._oem_key.get_secret_value()}
        reply = await self._post("auth", "authOem/", payload, write=False)
        auth_key = reply.get("authKey")
        if not isinstance(auth_key, str) or not auth_key:
            raise UnrecognisedError(System.FREEBIT, "authOem reply has no authKey")
        return SecretStr(auth_key)

    async def _post(
        self, operation: str, path: str, payload: Mapping[str, Any], *, write: bool
    ) -> dict[str, Any]:
        async with observe(System.FREEBIT, operation):
            form = {"json": json.dumps(payload)}
            response, body = await self._post_form(self._base_url + path, form, write=write)
            error = classify_freebit_reply(operation, response.status_code, body, write=write)
            if error is None:
                assert isinstance(body, dict)
                return body
            if isinstance(error, TransientError) and error.retry_after is None:
                error.retry_after = retry_after_seconds(response)
            raise error


def _describe(line: SimActivation) -> str:
    kind = line.sim_type.value if line.sim_type else "unknown SIM type"
    eid = f", EID ending {line.eid[-4:]}" if line.eid else ""
    return f"{kind}{eid}, {line.state}"
