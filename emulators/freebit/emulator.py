"""State of the Freebit emulator and its operations, with the result codes it answers.

Every reply is `{"resultCode": …, "status": {"message", "statusCode"}, …}`. Public knowledge of
Freebit's codes is thin; besides "100" (success) and "400-356" (eSIM addKind not allowed) the
codes below are this emulator's own, stable so tests and clients can rely on them:

    200  malformed request (no `json` field, not JSON)        statusCode 400
    201  authOem refused: wrong oemId / oemKey                statusCode 401
    202  authKey unknown or expired (re-authenticate)          statusCode 401
    210  missing or invalid parameter (the message names it)   statusCode 400
    211  account not found                                     statusCode 404
    212  account already registered                            statusCode 409
    220  unknown planCode / optionCode                         statusCode 400
    230  invalid EID (32 digits)                               statusCode 400
    400-356  eSIM addKind not allowed                          statusCode 400

212 is our assumption: Freebit's code for registering a line that exists is not published.
It is kept apart from every refusal of the request itself so that a client repeating a
registration whose reply it lost can recognise "already done" (and confirm it by a read).

Registration (`master/addAcnt/` physical SIM, `mvno/esim/addAcnt/` eSIM) requirements, from a
third-party translation of the spec:
- `createType` is required on both (any non-empty string: its values are not public);
- `addKind` is N (new number), M (number ported in) or R (re-issue of an existing line's SIM);
- a number port-in (addKind M, or any request carrying an `mnp` object) needs in `mnp`:
  `reserveNumber`, `reserveExpireDate` (YYYYMMDD), `lastnameKanji`, `firstnameKanji`,
  `lastnameZenKana`, `firstnameZenKana`, `gender` (M, F or C) and `birthday` (YYYYMMDD);
  a missing or malformed one is refused with 210 naming it, on both operations;
- eSIM only: with `aladinOperated` "10" (the request comes from the ALADIN sales system) only
  addKind N is allowed, else 400-356; `aladinOperated` is "10" or "20" when sent; `simKind` is
  required.

Activation is asynchronous: the request is accepted with the line in state "processing"; once
`activation_delay` seconds have passed on the emulator's clock it reads "active", or "failed"
when its EID / account is configured to fail. Transitions are computed whenever state is read,
so no background task runs. A line seeded with any other `state` (e.g. "suspended") keeps it and
is reported verbatim: states beyond these three exist at Freebit but are not documented, so a
client must not take an unknown one for "still processing".

Choices where that translation is silent: `status.statusCode` mirrors HTTP semantics (401 for any
auth refusal, so a client knows to call authOem again); `resultCode` and `statusCode` are sent as
strings; account detail (`master/getAcnt/`, `requestDatas[{kind, account}]`) answers
`responseDatas[{kind, account, state, simType, eid, planCode, planName, failReason,
talkOptions, pendingPlan}]` for the first entry of `requestDatas` only (as Freebit does; the
others are ignored); an accepted activation answers `{account, processNo}`.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any

from emulators.common.emulator import ConfigurableEmulator
from emulators.freebit import demo

OK = "100"
JST_OFFSET = 9 * 3600

DEFAULT_SETTINGS: dict[str, Any] = {
    "oem_id": "emulator-oem",
    "oem_key": "emulator-oem-key",
    "auth_key_lifetime": 3600.0,
    "activation_delay": 5.0,
    "failing_eids": [demo.FAILING_EID],
    "failing_accounts": [demo.FAILING_ACCOUNT],
    "plans": dict(demo.PLANS),
    "talk_options": list(demo.TALK_OPTIONS),
}

_ACCOUNT = re.compile(r"^[0-9]{11,14}$")
_EID = re.compile(r"^[0-9]{32}$")
_DATE = re.compile(r"^[0-9]{8}$")
ADD_KINDS = ("N", "M", "R")
MNP_FIELDS = (
    "reserveNumber",
    "reserveExpireDate",
    "lastnameKanji",
    "firstnameKanji",
    "lastnameZenKana",
    "firstnameZenKana",
    "gender",
    "birthday",
)
_MNP_DATES = ("reserveExpireDate", "birthday")
_GENDERS = ("M", "F", "C")
ALADIN_ON, ALADIN_OFF = "10", "20"


class FreebitError(Exception):
    """A synchronous refusal, sent as its result code with HTTP 200."""

    def __init__(self, code: str, message: str, status_code: str = "400") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status_code = status_code

    def reply(self) -> dict[str, Any]:
        return {
            "resultCode": self.code,
            "status": {"message": self.message, "statusCode": self.status_code},
        }


class FreebitEmulator(ConfigurableEmulator):
    name = "freebit"
    DEFAULT_SETTINGS = DEFAULT_SETTINGS

    # -- Emulator contract -------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> None:
        self.config = self.start_settings()
        self.accounts: dict[str, dict[str, Any]] = {}
        self.auth_keys: dict[str, float] = {}
        self.orders: list[dict[str, Any]] = []
        self.random = random.Random(seed)

    def to_state(self) -> dict[str, Any]:
        self._advance()
        return {
            "settings": dict(self.config),
            "accounts": {key: dict(value) for key, value in self.accounts.items()},
            "auth_keys": dict(self.auth_keys),
            "orders": list(self.orders),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.config = {**self.start_settings(), **state.get("settings", {})}
        self.accounts = dict(state.get("accounts", {}))
        self.auth_keys = dict(state.get("auth_keys", {}))
        self.orders = list(state.get("orders", []))

    def is_empty(self) -> bool:
        return not self.accounts and not self.orders

    def expire_tokens(self) -> int:
        count = len(self.auth_keys)
        self.auth_keys.clear()
        return count

    def seed(self, payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("dataset") == "demo":
            specs = demo.ACCOUNTS
        elif isinstance(payload.get("records"), dict):
            specs = list(payload["records"].get("accounts", []))
        else:
            raise ValueError('seed needs {"dataset": "demo"} or {"records": {"accounts": [...]}}')
        created = []
        for spec in specs:
            account = str(spec["account"])
            if not _ACCOUNT.match(account) or account in self.accounts:
                raise ValueError(f"account {account!r} is invalid or exists")
            self.accounts[account] = self._account_record(
                account,
                sim_type=str(spec.get("simType", "physical")),
                plan=str(spec.get("planCode", next(iter(self.config["plans"])))),
                eid=str(spec.get("eid", "")),
                add_kind=str(spec.get("addKind", "N")),
                state=str(spec.get("state", "active")),
            )
            created.append(account)
        return {"accounts": created}

    # -- Dispatch ----------------------------------------------------------------------------

    def call(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        """Run the operation at `path` (relative to /emptool/api/) and return the reply."""
        operation = self._operations().get(path.strip("/"))
        if operation is None:
            raise FreebitError("210", f"unknown operation {path}", "404")
        self._advance()
        if operation != self.auth_oem:
            self._check_auth_key(request.get("authKey"))
        return {
            "resultCode": OK,
            "status": {"message": "OK", "statusCode": "200"},
            **operation(request),
        }

    def _operations(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "authOem": self.auth_oem,
            "master/addAcnt": self.add_account,
            "master/getAcnt": self.get_account,
            "mvno/esim/addAcnt": self.add_esim_account,
            "mvno/getTrafficInfo": self.get_traffic_info,
            "mvno/changePlan": self.change_plan,
            "mvno/talkoption/addOrder": self.add_talk_option,
        }

    # -- Auth --------------------------------------------------------------------------------

    def auth_oem(self, request: dict[str, Any]) -> dict[str, Any]:
        if (
            request.get("oemId") != self.config["oem_id"]
            or request.get("oemKey") != self.config["oem_key"]
        ):
            raise FreebitError("201", "authentication failed", "401")
        key = f"{self.random.getrandbits(128):032x}"
        self.auth_keys[key] = self.now() + float(self.config["auth_key_lifetime"])
        # Expired keys are forgotten here so the table stays bounded.
        now = self.now()
        self.auth_keys = {k: t for k, t in self.auth_keys.items() if t > now}
        return {"authKey": key}

    def _check_auth_key(self, key: Any) -> None:
        expires = self.auth_keys.get(key) if isinstance(key, str) else None
        if expires is None or self.now() >= expires:
            raise FreebitError("202", "invalid authKey", "401")

    # -- Lines -------------------------------------------------------------------------------

    def add_account(self, request: dict[str, Any]) -> dict[str, Any]:
        account = _account(request)
        _create_type(request)
        add_kind = request.get("addKind", "N")
        if add_kind not in ADD_KINDS:
            raise FreebitError("210", "addKind must be N, M or R", "400")
        _aladin_operated(request)
        existing = self.accounts.get(account)
        if add_kind == "R" and existing is None:
            raise FreebitError("211", "account not found", "404")
        if add_kind == "R" and existing is not None and existing["simType"] != "physical":
            raise FreebitError("210", "addKind R re-issues a physical SIM line only", "400")
        self._check_new_line(account, add_kind)
        _mnp(request, add_kind)
        plan = self._plan(request)
        self.accounts[account] = self._activation(account, "physical", plan, "", add_kind)
        return {"account": account, "processNo": self._process_no()}

    def add_esim_account(self, request: dict[str, Any]) -> dict[str, Any]:
        account = _account(request)
        eid = str(request.get("eid", ""))
        if not _EID.match(eid):
            raise FreebitError("230", "invalid EID", "400")
        _create_type(request)
        add_kind = request.get("addKind")
        if add_kind not in ADD_KINDS:
            raise FreebitError("400-356", "addKind not allowed", "400")
        if _aladin_operated(request) == ALADIN_ON and add_kind != "N":
            raise FreebitError(
                "400-356", "addKind not allowed: only N when aladinOperated is 10", "400"
            )
        existing = self.accounts.get(account)
        # N (new) and M (number port-in) make a new line; R (reissue) re-provisions an existing one.
        if add_kind == "R" and (existing is None or existing["simType"] != "esim"):
            raise FreebitError("400-356", "addKind not allowed", "400")
        self._check_new_line(account, add_kind)
        _mnp(request, add_kind)
        if request.get("simKind") in (None, ""):
            raise FreebitError("210", "simKind is required", "400")
        plan = self._plan(request)
        self.accounts[account] = self._activation(account, "esim", plan, eid, add_kind)
        return {"account": account, "processNo": self._process_no()}

    def _check_new_line(self, account: str, add_kind: str) -> None:
        if add_kind != "R" and account in self.accounts:
            raise FreebitError("212", "account already registered", "409")

    def _activation(
        self, account: str, sim_type: str, plan: str, eid: str, add_kind: str
    ) -> dict[str, Any]:
        record = self._account_record(account, sim_type, plan, eid, add_kind, "processing")
        fails = eid in self.config["failing_eids"] or account in self.config["failing_accounts"]
        record["dueAt"] = self.now() + float(self.config["activation_delay"])
        record["outcome"] = "failed" if fails else "active"
        return record

    def _account_record(
        self, account: str, sim_type: str, plan: str, eid: str, add_kind: str, state: str
    ) -> dict[str, Any]:
        return {
            "account": account,
            "simType": sim_type,
            "eid": eid,
            "addKind": add_kind,
            "planCode": plan,
            "state": state,
            "requestedAt": self.now(),
            "dueAt": self.now(),
            "outcome": state,
            "failReason": "",
            "talkOptions": [],
            "pendingPlan": None,
            # Fixed per line so traffic figures are repeatable under a seed.
            "trafficSeed": self.random.getrandbits(32),
        }

    def _advance(self) -> None:
        now = self.now()
        today = _jst_date(now)
        for record in self.accounts.values():
            if record["state"] == "processing" and now >= record["dueAt"]:
                record["state"] = record["outcome"]
                if record["state"] == "failed":
                    record["failReason"] = "activation rejected by the network"
            pending = record.get("pendingPlan")
            if pending and record["state"] == "active" and today >= pending["runTime"]:
                record["planCode"] = pending["planCode"]
                record["pendingPlan"] = None

    def _process_no(self) -> str:
        return f"{self.random.randrange(10**11, 10**12)}"

    def _plan(self, request: dict[str, Any]) -> str:
        plan = request.get("planCode")
        if plan not in self.config["plans"]:
            raise FreebitError("220", f"unknown planCode {plan}", "400")
        return str(plan)

    def _line(self, account: str) -> dict[str, Any]:
        record = self.accounts.get(account)
        if record is None:
            raise FreebitError("211", "account not found", "404")
        return record

    def get_account(self, request: dict[str, Any]) -> dict[str, Any]:
        wanted = request.get("requestDatas")
        if not isinstance(wanted, list) or not wanted:
            raise FreebitError("210", "requestDatas is required", "400")
        # Freebit answers the first requested account only; the rest of the list is ignored.
        item = wanted[0]
        if not isinstance(item, dict):
            raise FreebitError("210", "requestDatas items must be objects", "400")
        record = self._line(str(item.get("account", "")))
        detail = {
            "kind": item.get("kind", "MVNO"),
            "account": record["account"],
            "state": record["state"],
            "simType": record["simType"],
            "eid": record["eid"],
            "planCode": record["planCode"],
            "planName": self.config["plans"].get(record["planCode"], ""),
            "failReason": record["failReason"],
            "talkOptions": list(record["talkOptions"]),
            "pendingPlan": record["pendingPlan"],
        }
        return {"responseDatas": [detail]}

    def get_traffic_info(self, request: dict[str, Any]) -> dict[str, Any]:
        record = self._line(_account(request))
        if record["state"] != "active":
            return {"account": record["account"], "traffic": {"today": "0", "thisMonth": "0"}}
        usage = random.Random(record["trafficSeed"])
        return {
            "account": record["account"],
            "traffic": {
                "today": str(usage.randrange(0, 500)),
                "thisMonth": str(usage.randrange(500, 5000)),
                "unit": "MB",
            },
        }

    def change_plan(self, request: dict[str, Any]) -> dict[str, Any]:
        record = self._line(_account(request))
        plan = self._plan(request)
        run_time = str(request.get("runTime", ""))
        if not _DATE.match(run_time):
            raise FreebitError("210", "runTime must be YYYYMMDD", "400")
        if record["state"] != "active":
            raise FreebitError("210", "line is not active", "400")
        record["pendingPlan"] = {"planCode": plan, "runTime": run_time}
        self._advance()
        return {"account": record["account"]}

    def add_talk_option(self, request: dict[str, Any]) -> dict[str, Any]:
        record = self._line(_account(request))
        option = request.get("optionCode")
        if option not in self.config["talk_options"]:
            raise FreebitError("220", f"unknown optionCode {option}", "400")
        if option not in record["talkOptions"]:
            record["talkOptions"].append(option)
        order_no = f"{len(self.orders) + 1:08d}"
        self.orders.append(
            {"orderNo": order_no, "account": record["account"], "optionCode": option}
        )
        # Bounded: only the newest orders are kept.
        del self.orders[:-1000]
        return {"account": record["account"], "orderNo": order_no}


def _account(request: dict[str, Any]) -> str:
    account = str(request.get("account", ""))
    if not _ACCOUNT.match(account):
        raise FreebitError("210", "account must be 11 to 14 digits", "400")
    return account


def _create_type(request: dict[str, Any]) -> str:
    create_type = request.get("createType")
    if not isinstance(create_type, str) or not create_type.strip():
        raise FreebitError("210", "createType is required", "400")
    return create_type


def _aladin_operated(request: dict[str, Any]) -> str:
    flag = request.get("aladinOperated", ALADIN_OFF)
    if flag not in (ALADIN_ON, ALADIN_OFF):
        raise FreebitError("210", "aladinOperated must be 10 or 20", "400")
    return str(flag)


def _mnp(request: dict[str, Any], add_kind: str) -> dict[str, str] | None:
    """The port-in block, checked: every person field present, dates and gender well formed."""
    mnp = request.get("mnp")
    if mnp is None and add_kind != "M":
        return None
    if not isinstance(mnp, dict):
        raise FreebitError("210", "mnp is required for addKind M", "400")
    missing = [name for name in MNP_FIELDS if not str(mnp.get(name) or "").strip()]
    if missing:
        names = ", ".join(f"mnp.{name}" for name in missing)
        raise FreebitError("210", f"missing MNP fields: {names}", "400")
    for name in _MNP_DATES:
        if not _DATE.match(str(mnp[name])):
            raise FreebitError("210", f"mnp.{name} must be YYYYMMDD", "400")
    if mnp["gender"] not in _GENDERS:
        raise FreebitError("210", "mnp.gender must be M, F or C", "400")
    return {name: str(mnp[name]) for name in MNP_FIELDS}


def _jst_date(now: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(now + JST_OFFSET))
