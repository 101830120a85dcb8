"""The Salesforce REST client: the order snapshot, the engine's write-backs, the catalog.

- simple-salesforce runs on a bounded, abortable thread pool (`clients.salesforce_http`), sized
  to the worker's activity concurrency; every call has one overall deadline, token refresh and
  repeat included.
- A rejected session (`INVALID_SESSION_ID`) is refreshed once through the shared
  `SalesforceAuth` and the call repeated once: a refused session never reached the data, so
  this is safe for writes too.
- Every write carries `Sforce-Call-Options: client=<SF_CLIENT_NAME>`, so the change events our
  own write-backs cause name us in `changeOrigin` and the listener can tell them apart.
- Writes answer a `WriteOutcome`: a write-back whose values are already there is
  `ALREADY_DONE`; a lost reply raises `OutcomeUnknownError`, and `activation_applied` tells
  whether it took effect.
- Errors are classified per operation; an error code no table knows for the operation is an
  `UnrecognisedError`, never a customer-visible code (a 404 on a catalog read is not
  `ORDER_NOT_FOUND`).
- Ids are validated (`clients.salesforce_ids`) and strings quoted (`clients.soql`) before they
  reach SOQL or a URL path. Records are mapped onto `domain` models here.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote as url_quote

import requests
from pydantic import BaseModel, ConfigDict, ValidationError
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError

from clients import salesforce_ids as ids
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
from clients.http import transient_status
from clients.metrics import SALESFORCE_API_USAGE, alert, observe
from clients.retry import RetryPolicy
from clients.salesforce_auth import SalesforceAuth, SalesforceToken
from clients.salesforce_http import abortable_session, requests_error, run_abortably
from clients.soql import datetime_literal, id_literal, quote
from config.logging import get_logger
from config.settings import Settings
from domain.catalog import CatalogEntry
from domain.errors import WriteOutcome
from domain.order import (
    Account,
    ActivationStatus,
    Address,
    MnpPerson,
    OrderItem,
    OrderSnapshot,
    OrderState,
    Product,
    SimDetails,
)
from domain.reconciliation import MAX_BATCH_SIZE, UnfinishedOrder

log = get_logger(__name__)

T = TypeVar("T")
# Composite sobjects takes at most 200 records per request.
COMPOSITE_LIMIT = 200
# Activation_Error_Message__c is a text field; longer values would be refused.
ERROR_MESSAGE_LIMIT = 255
# The org's API request limit is a rolling 24-hour count: a tight retry only burns more of it.
RATE_LIMIT_RETRY_AFTER = 600.0

# ---------------------------------------------------------------------------------------------
# Error mapping: per operation, from Salesforce errorCodes (then HTTP statuses) to the taxonomy.

Disposition = ErrorCode | Literal["transient", "configuration", "rate_limited"]

# errorCodes that mean the same whatever the operation.
SALESFORCE_COMMON_ERRORS: Mapping[str, Disposition] = {
    "INVALID_SESSION_ID": "transient",  # only reached after the one refresh failed
    "SERVER_UNAVAILABLE": "transient",
    "UNABLE_TO_LOCK_ROW": "transient",
    "QUERY_TIMEOUT": "transient",
    "REQUEST_RUNNING_TOO_LONG": "transient",
    "REQUEST_LIMIT_EXCEEDED": "rate_limited",
    # The org does not fit our configuration (a field, a picklist value, a permission, access).
    "MALFORMED_QUERY": "configuration",
    "INVALID_FIELD": "configuration",
    "INVALID_TYPE": "configuration",
    "INVALID_FIELD_FOR_INSERT_UPDATE": "configuration",
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": "configuration",
    "STRING_TOO_LONG": "configuration",
    "INSUFFICIENT_ACCESS": "configuration",
    "INSUFFICIENT_ACCESS_OR_READONLY": "configuration",
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY": "configuration",
    "API_DISABLED_FOR_ORG": "configuration",
    "API_CURRENTLY_DISABLED": "configuration",
    "FUNCTIONALITY_NOT_ENABLED": "configuration",
    "INVALID_AUTH_HEADER": "configuration",
}
_ORDER_WRITE_ERRORS: Mapping[str, ErrorCode] = {
    # The order is gone.
    "NOT_FOUND": ErrorCode.ORDER_NOT_FOUND,
    "ENTITY_IS_DELETED": ErrorCode.ORDER_NOT_FOUND,
    # The order's own data refuses the write (a validation rule, a required field).
    "FIELD_CUSTOM_VALIDATION_EXCEPTION": ErrorCode.INVALID_ORDER,
    "REQUIRED_FIELD_MISSING": ErrorCode.INVALID_ORDER,
    "FIELD_INTEGRITY_EXCEPTION": ErrorCode.INVALID_ORDER,
}
# Business meanings are known per operation only.
SALESFORCE_OPERATION_ERRORS: Mapping[str, Mapping[str, ErrorCode]] = {
    "read_order": {
        "NOT_FOUND": ErrorCode.ORDER_NOT_FOUND,
        "ENTITY_IS_DELETED": ErrorCode.ORDER_NOT_FOUND,
    },
    "update_order": _ORDER_WRITE_ERRORS,
    "update_order_items": _ORDER_WRITE_ERRORS,
}
# CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY wraps what a trigger or flow met; a lock or a timeout
# inside it passes on its own.
_WRAPPED_TRANSIENT = re.compile(r"UNABLE_TO_LOCK_ROW|time[ds]? ?out|timeout", re.IGNORECASE)


def classify_salesforce_error(
    operation: str,
    status: int,
    error_code: str | None,
    message: str | None = None,
    *,
    write: bool = False,
) -> ClientError:
    """The taxonomy error for a Salesforce REST failure of `operation`."""
    code = error_code or ""
    disposition: Disposition | None = SALESFORCE_OPERATION_ERRORS.get(operation, {}).get(
        code
    ) or SALESFORCE_COMMON_ERRORS.get(code)
    if (
        disposition is None
        and code == "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"
        and _WRAPPED_TRANSIENT.search(message or "")
    ):
        disposition = "transient"
    if disposition is None and not code:
        if status == 401 or transient_status(status):
            disposition = "transient"
        elif status == 403:
            disposition = "configuration"
    detail = ": ".join(part for part in (error_code, message) if part) or f"HTTP {status}"
    text = f"{operation} failed"
    if disposition == "rate_limited":
        alert(System.SALESFORCE, operation, "rate_limited")
        return TransientError(
            System.SALESFORCE, text, detail=detail, retry_after=RATE_LIMIT_RETRY_AFTER
        )
    if write and status >= 500 and disposition in (None, "transient"):
        # The server failed after taking the request: the write may have committed.
        return OutcomeUnknownError(System.SALESFORCE, text, detail=detail)
    if disposition == "transient":
        return TransientError(System.SALESFORCE, text, detail=detail)
    if disposition == "configuration":
        return ConfigurationError(System.SALESFORCE, text, detail=detail)
    if isinstance(disposition, ErrorCode):
        return BusinessError(System.SALESFORCE, disposition, text, detail=detail)
    return UnrecognisedError(System.SALESFORCE, text, detail=detail)


# ---------------------------------------------------------------------------------------------
# The engine's write-back.


class ActivationUpdate(BaseModel):
    """The engine's write-back to an order; error fields are always written (None clears)."""

    model_config = ConfigDict(frozen=True)

    status: ActivationStatus
    error_code: ErrorCode | None = None
    error_message: str | None = None
    attempted_at: datetime | None = None
    whmcs_order_id: str | None = None

    def order_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "Activation_Status__c": self.status.value,
            "Activation_Error_Code__c": self.error_code.value if self.error_code else None,
            "Activation_Error_Message__c": (
                self.error_message[:ERROR_MESSAGE_LIMIT] if self.error_message else None
            ),
        }
        if self.attempted_at is not None:
            stamp = self.attempted_at.astimezone(UTC).isoformat(timespec="milliseconds")
            fields["Activation_Last_Attempt_At__c"] = stamp.replace("+00:00", "Z")
        if self.whmcs_order_id is not None:
            fields["WHMCS_Order_ID__c"] = self.whmcs_order_id
        return fields


# ---------------------------------------------------------------------------------------------
# SOQL.

_PRODUCT_FIELDS = (
    "Id",
    "Name",
    "ProductCode",
    "IsActive",
    "WHMCS_Product_Id__c",
    "Product_Type__c",
    "Item_Class__c",
    "Billing_Cycle__c",
    "Freebit_Plan_Code__c",
)
_ORDER_FIELDS = (
    "Id, OrderNumber, AccountId, Pricebook2Id, Status, EffectiveDate, BillingStreet, BillingCity,"
    " BillingState, BillingPostalCode, BillingCountry, Activation_Status__c,"
    " Activation_Error_Code__c, Activation_Error_Message__c, Activation_Last_Attempt_At__c,"
    " WHMCS_Order_ID__c, SIM_Type__c, EID__c, SIM_Phone_Number__c, MNP_Reservation_Number__c,"
    " MNP_Expiry_Date__c, MNP_Last_Name_Kanji__c, MNP_First_Name_Kanji__c, MNP_Last_Name_Kana__c,"
    " MNP_First_Name_Kana__c, MNP_Gender__c, MNP_Birthday__c, Account.Id, Account.Name,"
    " Account.Customer_Number__c, Account.WH_Account__c, Account.Portal_Status__c"
)
_ITEM_FIELDS = (
    "Id, OrderId, Product2Id, PricebookEntryId, Quantity, UnitPrice, WHMCS_Service_ID__c, "
    + ", ".join(f"Product2.{name}" for name in _PRODUCT_FIELDS)
)
# One query for the whole snapshot: parent fields for the account, a child subquery for the
# items with their products' parent fields.
# S608: values enter these templates only through `clients.soql` (validated ids, quoted strings).
ORDER_SNAPSHOT_SOQL = (
    f"SELECT {_ORDER_FIELDS}, (SELECT {_ITEM_FIELDS} FROM OrderItems) FROM Order WHERE Id = {{id}}"  # noqa: S608
)
CATALOG_SOQL = (
    "SELECT Id, Pricebook2Id, Product2Id, UnitPrice, IsActive, "  # noqa: S608
    + ", ".join(f"Product2.{name}" for name in _PRODUCT_FIELDS)
    + " FROM PricebookEntry WHERE IsActive = true AND Product2.IsActive = true AND {pricebook}"
    " ORDER BY Product2.Name"
)
# Keyed on the auto-number: unique and never changed, and SOQL compares and sorts text alike, so
# no order is skipped or read twice; one re-activated or modified meanwhile keeps its place.
UNFINISHED_ORDERS_SOQL = (
    "SELECT Id, OrderNumber, AccountId, Activation_Status__c, ActivatedDate FROM Order"
    " WHERE Status = {status}"
    " AND (Activation_Status__c = null OR Activation_Status__c NOT IN ({final})){window}{after}"
    " ORDER BY OrderNumber LIMIT {limit}"
)
_NEXT_RECORDS_URL = re.compile(r"/services/data/v\d+\.\d/query/[A-Za-z0-9-]+")
_EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,38}__e")

# The person an MNP reservation names (Freebit needs them to port the number in); domain field
# -> Order field.
_MNP_PERSON_FIELDS: Mapping[str, str] = {
    "last_name_kanji": "MNP_Last_Name_Kanji__c",
    "first_name_kanji": "MNP_First_Name_Kanji__c",
    "last_name_kana": "MNP_Last_Name_Kana__c",
    "first_name_kana": "MNP_First_Name_Kana__c",
    "gender": "MNP_Gender__c",
    "birthday": "MNP_Birthday__c",
}
_ACTIVATION_SOQL = (
    "SELECT Id, Activation_Status__c, Activation_Error_Code__c, Activation_Error_Message__c,"
    " WHMCS_Order_ID__c, (SELECT Id, WHMCS_Service_ID__c FROM OrderItems) FROM Order"
    " WHERE Id = {id}"
)

# ---------------------------------------------------------------------------------------------
# Records -> domain.


def _text(value: Any) -> str | None:
    # Id-like custom fields may be defined as Number in some orgs; 1234.0 must read as "1234".
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return str(value)


def _int(value: Any) -> int | None:
    text = _text(value)
    if text is None:
        return None
    match = re.fullmatch(r"([0-9]+)(?:\.0+)?", text.strip())
    return int(match.group(1)) if match else None


def _product(row: Mapping[str, Any]) -> Product:
    return Product(
        sf_product_id=row["Id"],
        name=row.get("Name") or "",
        product_code=row.get("ProductCode"),
        is_active=bool(row.get("IsActive", True)),
        whmcs_product_id=_int(row.get("WHMCS_Product_Id__c")),
        product_type=row.get("Product_Type__c"),
        item_class=row.get("Item_Class__c"),
        billing_cycle=row.get("Billing_Cycle__c"),
        freebit_plan_code=_text(row.get("Freebit_Plan_Code__c")),
    )


def _item(row: Mapping[str, Any]) -> OrderItem:
    product = row.get("Product2") or {"Id": row.get("Product2Id") or "", "Name": ""}
    return OrderItem(
        sf_order_item_id=row["Id"],
        product=_product(product),
        quantity=Decimal(str(row.get("Quantity") or 0)),
        unit_price=None if row.get("UnitPrice") is None else Decimal(str(row["UnitPrice"])),
        pricebook_entry_id=row.get("PricebookEntryId"),
        whmcs_service_id=_int(row.get("WHMCS_Service_ID__c")),
    )


def _account(row: Mapping[str, Any] | None) -> Account | None:
    if not row:
        return None
    return Account(
        sf_account_id=row["Id"],
        name=row.get("Name") or "",
        customer_number=_text(row.get("Customer_Number__c")),
        whmcs_account_field=_text(row.get("WH_Account__c")),
        portal_status=row.get("Portal_Status__c"),
    )


def _order_snapshot(record: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> OrderSnapshot:
    status = record.get("Activation_Status__c")
    return OrderSnapshot(
        sf_order_id=record["Id"],
        order_number=_text(record.get("OrderNumber")),
        sf_account_id=record.get("AccountId"),
        pricebook_id=record.get("Pricebook2Id"),
        status=record["Status"],
        effective_date=record.get("EffectiveDate"),
        activation_status=status if status in tuple(ActivationStatus) else None,
        activation_error_code=record.get("Activation_Error_Code__c"),
        whmcs_order_id=_int(record.get("WHMCS_Order_ID__c")),
        billing_address=Address(
            street=record.get("BillingStreet"),
            city=record.get("BillingCity"),
            state=record.get("BillingState"),
            postal_code=record.get("BillingPostalCode"),
            country=record.get("BillingCountry"),
        ),
        sim=SimDetails(
            sim_type=record.get("SIM_Type__c"),
            eid=_text(record.get("EID__c")),
            phone_number=_text(record.get("SIM_Phone_Number__c")),
            mnp_reservation_number=_text(record.get("MNP_Reservation_Number__c")),
            mnp_expiry_date=record.get("MNP_Expiry_Date__c"),
            mnp_person=MnpPerson(
                **{
                    name: record.get(field)
                    for name, field in _MNP_PERSON_FIELDS.items()
                    if record.get(field) not in (None, "")
                }
            ),
        ),
        account=_account(record.get("Account")),
        items=tuple(_item(row) for row in items),
    )


def _unfinished_order(row: Mapping[str, Any]) -> UnfinishedOrder:
    activated = _text(row.get("ActivatedDate"))
    return UnfinishedOrder(
        sf_order_id=row["Id"],
        order_number=_text(row.get("OrderNumber")) or "",
        sf_account_id=_text(row.get("AccountId")),
        activation_status=_text(row.get("Activation_Status__c")),
        activated_at=_moment(activated) if activated else None,
    )


def _moment(text: str) -> datetime:
    """A Salesforce dateTime (`2026-12-07T07:11:10.000+0000`), always aware."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_FINAL_STATUSES = ", ".join(quote(status.value) for status in ActivationStatus if status.is_final)


def _activated_between(start: datetime | None, end: datetime | None) -> str:
    # SOQL dateTime literals have whole seconds: the end is rounded up so an order activated
    # within its last second is not left out (the start is rounded down by the literal).
    bounds = ""
    if start is not None:
        bounds += f" AND ActivatedDate >= {datetime_literal(start)}"
    if end is not None:
        whole = end.replace(microsecond=0)
        ceiling = whole if whole == end else whole + timedelta(seconds=1)
        bounds += f" AND ActivatedDate <= {datetime_literal(ceiling)}"
    return bounds


def _catalog_entry(row: Mapping[str, Any]) -> CatalogEntry:
    return CatalogEntry(
        sf_pricebook_entry_id=row["Id"],
        pricebook_id=row["Pricebook2Id"],
        product=_product(row["Product2"]),
        unit_price=Decimal(str(row["UnitPrice"])),
        is_active=bool(row.get("IsActive", True)),
    )


# ---------------------------------------------------------------------------------------------
# The order read and the Activating write in one Composite call.

# referenceIds of the two subrequests; the write names the order through the read's answer.
_READ_REF = "order"
_MARK_REF = "activating"


@dataclass(frozen=True)
class MarkedOrder:
    """The order as read, and what became of the write-back sent with the read: its outcome, or
    the business error that refused it (`refused`; the order was read all the same)."""

    order: OrderSnapshot
    outcome: WriteOutcome | None = None
    refused: BusinessError | None = None


def _subrequest_error(operation: str, reply: Mapping[str, Any], *, write: bool) -> ClientError:
    """The taxonomy error of one failed composite subrequest (its body is a REST error list)."""
    body = reply.get("body")
    first = body[0] if isinstance(body, list) and body else body
    code = first.get("errorCode") if isinstance(first, dict) else None
    message = first.get("message") if isinstance(first, dict) else None
    status = reply.get("httpStatusCode")
    return classify_salesforce_error(
        operation,
        status if isinstance(status, int) else 500,
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
        write=write,
    )


def _holds(record: Mapping[str, Any], update: ActivationUpdate) -> bool:
    """Whether a record read already carries what `update` writes (the attempt time aside)."""
    wanted = update.order_fields()
    wanted.pop("Activation_Last_Attempt_At__c", None)
    return all(_text(record.get(field)) == _text(value) for field, value in wanted.items())


# ---------------------------------------------------------------------------------------------
# The REST client.


class SalesforceClient:
    """Salesforce REST through simple-salesforce, on a bounded, abortable thread pool.

    `auth` may be shared (with the streaming listener): closing this client closes it only when
    the client made it itself (`from_settings` without an `auth`).
    """

    def __init__(
        self,
        auth: SalesforceAuth,
        *,
        api_version: str = "60.0",
        ca_file: Path | str | None = None,
        deadline: float = 30.0,
        pool_size: int = 4,
        client_name: str = "order-fulfillment",
        retry: RetryPolicy | None = None,
        owns_auth: bool = False,
        composite_limit: int = COMPOSITE_LIMIT,
    ) -> None:
        self.auth = auth
        self._composite_limit = composite_limit
        self._owns_auth = owns_auth
        self._api_version = api_version
        self._deadline = deadline
        self._read_options: dict[str, Any] = {
            # Never False: without a CA file the system trust store is used. Passed on every
            # request, since requests lets REQUESTS_CA_BUNDLE override a session-level `verify`.
            "verify": str(ca_file) if ca_file is not None else True,
            "timeout": (min(5.0, deadline), deadline),
        }
        self._write_options: dict[str, Any] = {
            **self._read_options,
            "headers": {"Sforce-Call-Options": f"client={client_name}"},
        }
        self._retry = retry or RetryPolicy()
        self._session = abortable_session(pool_size)
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="sf-rest")
        self._sf: tuple[SalesforceToken, Salesforce] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, auth: SalesforceAuth | None = None) -> Self:
        return cls(
            auth or SalesforceAuth.from_settings(settings),
            api_version=settings.sf_api_version,
            ca_file=settings.sf_ca_file,
            deadline=settings.sf_request_timeout_seconds,
            pool_size=settings.sf_rest_pool_size,
            client_name=settings.sf_client_name,
            owns_auth=auth is None,
        )

    def __repr__(self) -> str:
        return f"SalesforceClient(auth={self.auth!r}, api_version={self._api_version!r})"

    async def aclose(self) -> None:
        if self._owns_auth:
            await self.auth.aclose()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # -- reads (retried) -----------------------------------------------------------------------

    async def read_order(self, order_id: str) -> OrderSnapshot:
        """The order snapshot in one query (plus a token request when none is cached)."""
        order = _sf_id(order_id, ids.ORDER, ErrorCode.ORDER_NOT_FOUND)
        soql = ORDER_SNAPSHOT_SOQL.format(id=id_literal(order))
        reply = await self._read("read_order", lambda sf: sf.query(soql, **self._read_options))
        records = reply.get("records") or []
        if not records:
            raise BusinessError(
                System.SALESFORCE, ErrorCode.ORDER_NOT_FOUND, "order does not exist", detail=order
            )
        record = dict(records[0])
        items = await self._children("read_order", record.get("OrderItems"))
        return _mapped("read_order", lambda: _order_snapshot(record, items))

    async def read_order_and_mark(self, order_id: str, update: ActivationUpdate) -> MarkedOrder:
        """The order snapshot and the write of `update` (Activating) in one Composite call.

        One call against the org's daily API allowance where `read_order` then
        `update_activation` make two. The composite runs, in this order, the snapshot query and
        a PATCH of the order that names it through the query's answer
        (`@{order.records[0].Id}`): the write depends on the read, so an order that does not
        exist, or a read that fails, writes nothing. `allOrNone` is false on purpose: the PATCH
        is the only write, so there is nothing for all-or-none to keep together, and with it a
        refused PATCH would also discard the query's answer (every other subrequest reports
        PROCESSING_HALTED); without it the snapshot comes back whatever the write met.

        The PATCH carries `Sforce-Call-Options` in its own `httpHeaders` as well as on the
        composite itself, so the change event names our client whichever of the two Salesforce
        applies to a subrequest's changes.

        A refused write whose values are already there is `ALREADY_DONE`; one refused for a
        business reason is returned in `refused` with the snapshot; any other failure of either
        subrequest raises, as `read_order` and `update_activation` would (a lost reply of the
        whole call is `OutcomeUnknownError`: the write may have landed; repeating it is safe).
        Very large orders still page their items with `nextRecordsUrl` reads of their own.
        """
        order = _sf_id(order_id, ids.ORDER, ErrorCode.ORDER_NOT_FOUND)
        base = f"/services/data/v{self._api_version}"
        soql = ORDER_SNAPSHOT_SOQL.format(id=id_literal(order))
        payload = {
            "allOrNone": False,
            # In the order given: the write must follow the read it depends on.
            "collateSubrequests": False,
            "compositeRequest": [
                {
                    "method": "GET",
                    "url": f"{base}/query/?q={url_quote(soql, safe='')}",
                    "referenceId": _READ_REF,
                },
                {
                    "method": "PATCH",
                    "url": f"{base}/sobjects/Order/@{{{_READ_REF}.records[0].Id}}",
                    "referenceId": _MARK_REF,
                    "body": update.order_fields(),
                    "httpHeaders": dict(self._write_options["headers"]),
                },
            ],
        }
        reply = await self._write(
            "read_order_and_mark",
            lambda sf: sf.restful("composite", method="POST", json=payload, **self._write_options),
        )
        replies = reply.get("compositeResponse") if isinstance(reply, dict) else None
        by_ref = {r.get("referenceId"): r for r in replies or [] if isinstance(r, dict)}
        read, mark = by_ref.get(_READ_REF), by_ref.get(_MARK_REF)
        if read is None or mark is None:
            raise UnrecognisedError(System.SALESFORCE, "read_order_and_mark: unexpected reply")
        if read.get("httpStatusCode") != 200:
            # The PATCH depended on the read: it did not run.
            raise _subrequest_error("read_order", read, write=False)
        records = (read.get("body") or {}).get("records") or []
        if not records:
            raise BusinessError(
                System.SALESFORCE, ErrorCode.ORDER_NOT_FOUND, "order does not exist", detail=order
            )
        record = dict(records[0])
        items = await self._children("read_order", record.get("OrderItems"))
        snapshot = _mapped("read_order", lambda: _order_snapshot(record, items))
        status = mark.get("httpStatusCode")
        if isinstance(status, int) and status < 300:
            return MarkedOrder(order=snapshot, outcome=WriteOutcome.APPLIED)
        error = _subrequest_error("update_order", mark, write=True)
        if not isinstance(error, BusinessError):
            raise error
        if error.code is not ErrorCode.ORDER_NOT_FOUND and _holds(record, update):
            # The read ran just before the refused write, in the same call: the values were
            # there already (a repeat after a lost reply, say).
            log.info("salesforce.already_done", sf_order_id=order, operation="update_order")
            return MarkedOrder(order=snapshot, outcome=WriteOutcome.ALREADY_DONE)
        return MarkedOrder(order=snapshot, refused=error)

    async def read_catalog(self, pricebook_id: str | None = None) -> list[CatalogEntry]:
        """Active entries of a pricebook (default: the standard one) with their products."""
        if pricebook_id is None:
            where = "Pricebook2.IsStandard = true"
        else:
            pricebook = _sf_id(pricebook_id, ids.PRICEBOOK2, ErrorCode.INVALID_ORDER)
            where = f"Pricebook2Id = {id_literal(pricebook)}"
        soql = CATALOG_SOQL.format(pricebook=where)
        rows = await self._read("read_catalog", lambda sf: sf.query_all(soql, **self._read_options))
        return [
            _mapped("read_catalog", functools.partial(_catalog_entry, row))
            for row in rows.get("records") or []
        ]

    async def unfinished_orders(
        self,
        trigger_status: str,
        *,
        after: str | None = None,
        limit: int,
        activated_from: datetime | None = None,
        activated_until: datetime | None = None,
    ) -> list[UnfinishedOrder]:
        """Orders in `trigger_status` whose `Activation_Status__c` is not final, by order number.

        At most `limit` (1 to 2000), those numbered after `after` (the last order number of the
        previous page): fewer than `limit` means there are no more. `activated_from` and
        `activated_until` bound `ActivatedDate` (inclusive); an order with none is outside any
        bound, as SOQL compares null.
        """
        if not 1 <= limit <= MAX_BATCH_SIZE:
            raise ValueError(f"limit must be 1 to {MAX_BATCH_SIZE}")
        soql = UNFINISHED_ORDERS_SOQL.format(
            status=quote(trigger_status),
            final=_FINAL_STATUSES,
            window=_activated_between(activated_from, activated_until),
            after="" if after is None else f" AND OrderNumber > {quote(after)}",
            limit=limit,
        )
        # query_all: a reply split into batches is followed to its end, so a short page always
        # means the last one.
        reply = await self._read(
            "read_unfinished_orders", lambda sf: sf.query_all(soql, **self._read_options)
        )
        return [
            _mapped("read_unfinished_orders", functools.partial(_unfinished_order, row))
            for row in reply.get("records") or []
        ]

    async def count_unfinished_orders(
        self, trigger_status: str, *, activated_before: datetime
    ) -> int:
        """How many orders `unfinished_orders` would find activated before `activated_before`
        (or never stamped with an ActivatedDate): the ones a bounded reconciliation leaves."""
        soql = (
            "SELECT COUNT() FROM Order"  # noqa: S608
            f" WHERE Status = {quote(trigger_status)}"
            f" AND (Activation_Status__c = null OR Activation_Status__c NOT IN ({_FINAL_STATUSES}))"
            f" AND (ActivatedDate = null OR ActivatedDate < {datetime_literal(activated_before)})"
        )
        reply = await self._read(
            "count_unfinished_orders", lambda sf: sf.query(soql, **self._read_options)
        )
        return int(reply.get("totalSize") or 0)

    async def find_pricebook_id(self, name: str) -> str | None:
        soql = f"SELECT Id FROM Pricebook2 WHERE Name = {quote(name)} AND IsActive = true LIMIT 1"  # noqa: S608
        reply = await self._read("find_pricebook", lambda sf: sf.query(soql, **self._read_options))
        records = reply.get("records") or []
        return str(records[0]["Id"]) if records else None

    async def read_order_states(self, order_ids: Sequence[str]) -> list[OrderState]:
        """Status, account and activation status of these orders (missing ones are left out)."""
        valid = [_sf_id(order_id, ids.ORDER, ErrorCode.ORDER_NOT_FOUND) for order_id in order_ids]
        if not valid:
            return []
        soql = (
            "SELECT Id, Status, AccountId, Activation_Status__c FROM Order"  # noqa: S608
            f" WHERE Id IN ({', '.join(id_literal(order_id) for order_id in valid)})"
        )
        reply = await self._read(
            "read_order_states", lambda sf: sf.query_all(soql, **self._read_options)
        )
        return [
            OrderState(
                sf_order_id=row["Id"],
                status=row["Status"],
                sf_account_id=row.get("AccountId"),
                activation_status=row.get("Activation_Status__c"),
            )
            for row in reply.get("records") or []
        ]

    async def read_item_orders(self, item_ids: Sequence[str]) -> dict[str, str]:
        """The order of each of these order items (deleted ones are left out)."""
        valid = [_sf_id(item_id, ids.ORDER_ITEM, ErrorCode.INVALID_ORDER) for item_id in item_ids]
        if not valid:
            return {}
        soql = (
            "SELECT Id, OrderId FROM OrderItem"  # noqa: S608
            f" WHERE Id IN ({', '.join(id_literal(item_id) for item_id in valid)})"
        )
        reply = await self._read(
            "read_item_orders", lambda sf: sf.query_all(soql, **self._read_options)
        )
        return {row["Id"]: row["OrderId"] for row in reply.get("records") or []}

    async def activation_applied(
        self,
        order_id: str,
        update: ActivationUpdate,
        item_service_ids: Mapping[str, str] | None = None,
    ) -> bool:
        """Whether the order (and items) already hold what `update` writes.

        The timestamp of the attempt is left out: it names the attempt, not the state.
        """
        order = _sf_id(order_id, ids.ORDER, ErrorCode.ORDER_NOT_FOUND)
        soql = _ACTIVATION_SOQL.format(id=id_literal(order))
        reply = await self._read("read_activation", lambda sf: sf.query(soql, **self._read_options))
        records = reply.get("records") or []
        if not records:
            return False
        record = records[0]
        if not _holds(record, update):
            return False
        items = await self._children("read_activation", record.get("OrderItems"))
        have = {row["Id"]: _text(row.get("WHMCS_Service_ID__c")) for row in items}
        return all(
            have.get(item_id) == service_id
            for item_id, service_id in (item_service_ids or {}).items()
        )

    # -- writes (not retried here) -------------------------------------------------------------

    async def update_activation(
        self,
        order_id: str,
        update: ActivationUpdate,
        *,
        item_service_ids: Mapping[str, str] | None = None,
    ) -> WriteOutcome:
        """Write the Activation_* fields (and WHMCS ids).

        Without item ids this is a PATCH of the order; with them, `composite/sobjects` PATCHes
        (all or none per request) with the Order record last, so the order reads Activated only
        once every item carries its service id. A refusal of values that are already there (a
        repeat after a lost reply) is `ALREADY_DONE`.
        """
        order = _sf_id(order_id, ids.ORDER, ErrorCode.ORDER_NOT_FOUND)
        try:
            await self._update_activation(order, update, item_service_ids or {})
        except BusinessError as refused:
            if refused.code is not ErrorCode.ORDER_NOT_FOUND and await self.activation_applied(
                order, update, item_service_ids
            ):
                log.info("salesforce.already_done", sf_order_id=order, operation="update_order")
                return WriteOutcome.ALREADY_DONE
            raise
        return WriteOutcome.APPLIED

    async def publish_event(self, event_name: str, fields: Mapping[str, Any]) -> str:
        """Publish a platform event (e.g. `Account_Eligibility_Update__e`); returns its id."""
        if not _EVENT_NAME.fullmatch(event_name):
            raise ValueError("not a platform event API name (Name__e)")
        body = dict(fields)
        reply = await self._write(
            "publish_event",
            lambda sf: sf.restful(
                f"sobjects/{event_name}/", method="POST", json=body, **self._write_options
            ),
        )
        if not isinstance(reply, dict) or not reply.get("success"):
            raise _record_error(
                "publish_event", reply.get("errors") if isinstance(reply, dict) else None
            )
        return str(reply.get("id"))

    # -- plumbing ------------------------------------------------------------------------------

    async def _update_activation(
        self, order: str, update: ActivationUpdate, item_service_ids: Mapping[str, str]
    ) -> None:
        if not item_service_ids:
            fields = update.order_fields()
            await self._write(
                "update_order",
                lambda sf: sf.restful(
                    f"sobjects/Order/{order}", method="PATCH", json=fields, **self._write_options
                ),
            )
            return
        records: list[dict[str, Any]] = []
        for item_id, service_id in item_service_ids.items():
            item = _sf_id(item_id, ids.ORDER_ITEM, ErrorCode.INVALID_ORDER)
            records.append(
                {"attributes": {"type": "OrderItem"}, "id": item, "WHMCS_Service_ID__c": service_id}
            )
        records.append({"attributes": {"type": "Order"}, "id": order, **update.order_fields()})
        size = self._composite_limit
        for start in range(0, len(records), size):
            await self._composite_update(records[start : start + size])

    async def _composite_update(self, records: list[dict[str, Any]]) -> None:
        payload = {"allOrNone": True, "records": records}
        results = await self._write(
            "update_order_items",
            lambda sf: sf.restful(
                "composite/sobjects", method="PATCH", json=payload, **self._write_options
            ),
        )
        failed = [result for result in results or [] if not result.get("success")]
        if failed:
            # With allOrNone every other record reports only that it was rolled back.
            errors = [
                error
                for result in failed
                for error in result.get("errors") or []
                if error.get("statusCode") != "ALL_OR_NONE_OPERATION_ROLLED_BACK"
            ]
            raise _record_error("update_order_items", errors)

    async def _children(self, operation: str, relation: Any) -> list[dict[str, Any]]:
        """A child subquery's records, following `nextRecordsUrl` for very large orders."""
        if not isinstance(relation, dict):
            return []
        rows = list(relation.get("records") or [])
        while not relation.get("done", True):
            next_url = relation.get("nextRecordsUrl")
            if not isinstance(next_url, str) or not _NEXT_RECORDS_URL.fullmatch(next_url):
                raise UnrecognisedError(System.SALESFORCE, f"{operation}: bad nextRecordsUrl")
            more = functools.partial(_query_more, url=next_url, options=self._read_options)
            relation = await self._read(operation, more)
            rows.extend(relation.get("records") or [])
        return rows

    async def _read(self, operation: str, call: Callable[[Salesforce], Any]) -> Any:
        return await self._retry.run(lambda: self._call(operation, call, write=False))

    async def _write(self, operation: str, call: Callable[[Salesforce], Any]) -> Any:
        return await self._call(operation, call, write=True)

    async def _call(self, operation: str, call: Callable[[Salesforce], T], *, write: bool) -> T:
        sent = False
        async with observe(System.SALESFORCE, operation):
            try:
                async with asyncio.timeout(self._deadline):
                    token = await self.auth.token()
                    try:
                        sent = True
                        return await self._in_thread(token, call, write=write)
                    except SalesforceError as exc:
                        if exc.status != 401:
                            raise _rest_error(operation, exc, write=write) from None
                    # The session was refused: refresh once (shared with other callers) and
                    # repeat once. A refused session never reached the data.
                    log.info("salesforce.session_refused", operation=operation)
                    token = await self.auth.token(stale=token.access_token.get_secret_value())
                    try:
                        return await self._in_thread(token, call, write=write)
                    except SalesforceError as exc:
                        raise _rest_error(operation, exc, write=write) from None
            except TimeoutError:
                text = f"{operation}: no reply within {self._deadline:g} s"
                if write and sent:
                    raise OutcomeUnknownError(System.SALESFORCE, text) from None
                raise TransientError(System.SALESFORCE, text) from None

    async def _in_thread(
        self, token: SalesforceToken, call: Callable[[Salesforce], T], *, write: bool
    ) -> T:
        sf = self._rest(token)
        try:
            result = await run_abortably(self._executor, functools.partial(call, sf))
        except requests.RequestException as exc:
            raise requests_error(exc, write=write) from None
        _record_api_usage(sf)
        return result

    def _rest(self, token: SalesforceToken) -> Salesforce:
        cached = self._sf
        if cached is not None and cached[0] is token:
            return cached[1]
        sf = Salesforce(
            instance_url=token.instance_url,
            session_id=token.access_token.get_secret_value(),
            version=self._api_version,
            session=self._session,
        )
        self._sf = (token, sf)
        return sf


def _record_api_usage(sf: Salesforce) -> None:
    usage = sf.api_usage.get("api-usage") if isinstance(sf.api_usage, Mapping) else None
    if usage is not None:
        SALESFORCE_API_USAGE.labels("used").set(usage.used)
        SALESFORCE_API_USAGE.labels("limit").set(usage.total)


def _query_more(sf: Salesforce, *, url: str, options: dict[str, Any]) -> Any:
    return sf.query_more(url, identifier_is_url=True, **options)


def _sf_id(value: str, key_prefix: str, code: ErrorCode) -> str:
    try:
        return ids.validate_sf_id(value, key_prefix=key_prefix)
    except ids.InvalidSalesforceId as exc:
        raise BusinessError(
            System.SALESFORCE, code, "malformed Salesforce id", detail=str(exc)
        ) from None


def _rest_error(operation: str, exc: SalesforceError, *, write: bool) -> ClientError:
    content = exc.content
    first = content[0] if isinstance(content, list) and content else content
    error_code = first.get("errorCode") if isinstance(first, dict) else None
    message = first.get("message") if isinstance(first, dict) else None
    return classify_salesforce_error(
        operation,
        exc.status,
        error_code if isinstance(error_code, str) else None,
        message if isinstance(message, str) else None,
        write=write,
    )


def _record_error(operation: str, errors: Sequence[Any] | None) -> ClientError:
    first = errors[0] if errors else None
    code = first.get("statusCode") if isinstance(first, dict) else None
    message = first.get("message") if isinstance(first, dict) else None
    return classify_salesforce_error(
        operation,
        400,
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
        write=True,
    )


def _mapped(operation: str, build: Callable[[], T]) -> T:
    try:
        return build()
    except (ValidationError, KeyError, ValueError, ArithmeticError) as exc:
        # Field locations only: values may be personal data.
        where = (
            ", ".join(sorted({".".join(map(str, e["loc"])) for e in exc.errors()}))
            if isinstance(exc, ValidationError)
            else type(exc).__name__
        )
        raise UnrecognisedError(
            System.SALESFORCE, f"{operation}: unexpected record shape", detail=where
        ) from None
