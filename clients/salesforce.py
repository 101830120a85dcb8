"""The Salesforce client: OAuth tokens shared by REST and streaming, typed order reads, write-backs.

- `SalesforceAuth` gets and caches one access token (password, client-credentials or JWT-bearer
  flow, chosen by `SF_AUTH_FLOW`); the REST client and the streaming authenticator both use it,
  so a refresh by one serves the other.
- `SalesforceClient` runs simple-salesforce (blocking `requests`) on a small bounded thread pool
  so the event loop never blocks. TLS verification is always on (`SF_CA_FILE` adds a private CA).
  A rejected session (`INVALID_SESSION_ID`) is refreshed once and the call repeated once; a
  second rejection is a `TransientError`.
- Ids are validated (`clients.salesforce_ids`) and strings quoted (`clients.soql`) before they
  reach SOQL or a URL path.

Reads are retried on transient failures; writes (PATCH, platform events) are not.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import httpx
import jwt
import requests
from aiosfstream_ng.auth import AuthenticatorBase
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError

from clients import salesforce_ids as ids
from clients.errors import (
    BusinessError,
    ClientError,
    ConfigurationError,
    ErrorCode,
    System,
    TransientError,
)
from clients.http import (
    DEFAULT_TIMEOUT,
    tls_context,
    transient_from_transport,
    transient_status,
)
from clients.metrics import observe
from clients.retry import RetryPolicy
from clients.soql import id_literal, quote
from config.logging import get_logger
from config.settings import Settings

log = get_logger(__name__)

T = TypeVar("T")
AuthFlow = Literal["password", "client_credentials", "jwt"]
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Composite sobjects takes at most 200 records per request.
COMPOSITE_LIMIT = 200
# Activation_Error_Message__c is a text field; longer values would be refused.
ERROR_MESSAGE_LIMIT = 255

# ---------------------------------------------------------------------------------------------
# Error mapping: the one table from Salesforce errorCodes (then HTTP statuses) to the taxonomy.

Disposition = ErrorCode | Literal["transient", "configuration"]

SALESFORCE_ERROR_TABLE: Mapping[str, Disposition] = {
    # Worth repeating later.
    "INVALID_SESSION_ID": "transient",  # only reached after the one refresh failed
    "REQUEST_LIMIT_EXCEEDED": "transient",
    "SERVER_UNAVAILABLE": "transient",
    "UNABLE_TO_LOCK_ROW": "transient",
    "QUERY_TIMEOUT": "transient",
    "REQUEST_RUNNING_TOO_LONG": "transient",
    # The record is gone; every record the engine writes hangs off an order.
    "NOT_FOUND": ErrorCode.ORDER_NOT_FOUND,
    "ENTITY_IS_DELETED": ErrorCode.ORDER_NOT_FOUND,
    # The order's data refuses our write.
    "FIELD_CUSTOM_VALIDATION_EXCEPTION": ErrorCode.INVALID_ORDER,
    "REQUIRED_FIELD_MISSING": ErrorCode.INVALID_ORDER,
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": ErrorCode.INVALID_ORDER,
    "STRING_TOO_LONG": ErrorCode.INVALID_ORDER,
    "FIELD_INTEGRITY_EXCEPTION": ErrorCode.INVALID_ORDER,
    "INVALID_CROSS_REFERENCE_KEY": ErrorCode.INVALID_ORDER,
    "MALFORMED_ID": ErrorCode.INVALID_ORDER,
    # The org does not fit our configuration (missing field, permission, API access).
    "MALFORMED_QUERY": "configuration",
    "INVALID_FIELD": "configuration",
    "INVALID_TYPE": "configuration",
    "INVALID_FIELD_FOR_INSERT_UPDATE": "configuration",
    "INSUFFICIENT_ACCESS": "configuration",
    "INSUFFICIENT_ACCESS_OR_READONLY": "configuration",
    "API_DISABLED_FOR_ORG": "configuration",
    "API_CURRENTLY_DISABLED": "configuration",
    "FUNCTIONALITY_NOT_ENABLED": "configuration",
    "INVALID_AUTH_HEADER": "configuration",
}

SALESFORCE_STATUS_TABLE: Mapping[int, Disposition] = {
    400: ErrorCode.INVALID_ORDER,
    401: "transient",
    403: "configuration",
    404: ErrorCode.ORDER_NOT_FOUND,
}

# OAuth token endpoint `error` values that mean our credentials or app setup are wrong.
SALESFORCE_TOKEN_CONFIG_ERRORS = frozenset(
    {
        "invalid_grant",
        "invalid_client",
        "invalid_client_id",
        "invalid_client_credentials",
        "unsupported_grant_type",
        "invalid_request",
        "inactive_user",
        "inactive_org",
        "unauthorized_client",
    }
)


def classify_salesforce_error(
    operation: str,
    status: int,
    error_code: str | None,
    message: str | None = None,
    *,
    retry_after: float | None = None,
) -> ClientError:
    """The taxonomy error for a Salesforce REST failure (errorCode first, then HTTP status)."""
    disposition: Disposition | None = SALESFORCE_ERROR_TABLE.get(error_code or "")
    if disposition is None:
        disposition = SALESFORCE_STATUS_TABLE.get(status)
    if disposition is None:
        disposition = "transient" if transient_status(status) or status < 400 else "configuration"
    detail = ": ".join(part for part in (error_code, message) if part) or f"HTTP {status}"
    text = f"{operation} failed"
    if disposition == "transient":
        return TransientError(System.SALESFORCE, text, detail=detail, retry_after=retry_after)
    if disposition == "configuration":
        return ConfigurationError(System.SALESFORCE, text, detail=detail)
    return BusinessError(System.SALESFORCE, disposition, text, detail=detail)


def classify_token_error(status: int, body: object) -> ClientError:
    """The taxonomy error for a failed OAuth token request."""
    error = body.get("error") if isinstance(body, dict) else None
    description = body.get("error_description") if isinstance(body, dict) else None
    detail = ": ".join(str(part) for part in (error, description) if part) or f"HTTP {status}"
    if transient_status(status):
        return TransientError(System.SALESFORCE, "token request failed", detail=detail)
    if error in SALESFORCE_TOKEN_CONFIG_ERRORS or status in (400, 401, 403, 404):
        return ConfigurationError(System.SALESFORCE, "token request refused", detail=detail)
    return TransientError(System.SALESFORCE, "token request failed", detail=detail)


# ---------------------------------------------------------------------------------------------
# OAuth tokens, shared by REST and streaming.


@dataclass(frozen=True)
class SalesforceToken:
    access_token: SecretStr = field(repr=False)
    instance_url: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret


class SalesforceAuth:
    """Gets, caches and refreshes the org's access token; safe to share between tasks."""

    def __init__(
        self,
        token_url: str,
        *,
        client_id: str,
        flow: AuthFlow = "password",
        client_secret: SecretStr | None = None,
        username: str | None = None,
        password: SecretStr | None = None,
        jwt_private_key: SecretStr | None = None,
        jwt_audience: str | None = None,
        instance_url: str | None = None,
        ca_file: Path | str | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
    ) -> None:
        needed: dict[AuthFlow, tuple[str, ...]] = {
            "password": ("client_secret", "username", "password"),
            "client_credentials": ("client_secret",),
            "jwt": ("username", "jwt_private_key"),
        }
        given = {
            "client_secret": client_secret,
            "username": username,
            "password": password,
            "jwt_private_key": jwt_private_key,
        }
        missing = [name for name in needed[flow] if not given[name]]
        if missing:
            raise ValueError(f"Salesforce {flow} flow needs {', '.join(missing)}")
        self.token_url = token_url
        self.flow: AuthFlow = flow
        self._client_id = client_id
        self._client_secret = client_secret
        self._username = username
        self._password = password
        self._jwt_private_key = jwt_private_key
        parts = urlsplit(token_url)
        # Salesforce wants the login host (login/test.salesforce.com or My Domain) as audience.
        self._jwt_audience = jwt_audience or f"{parts.scheme}://{parts.netloc}"
        self._instance_url = instance_url
        self._retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(timeout=timeout, verify=tls_context(ca_file))
        self._token: SalesforceToken | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        if not settings.sf_token_url or not settings.sf_client_id:
            raise ValueError("SF_TOKEN_URL and SF_CLIENT_ID must be set")
        key = settings.sf_jwt_key_file
        return cls(
            settings.sf_token_url,
            client_id=settings.sf_client_id,
            flow=settings.sf_auth_flow,
            client_secret=settings.sf_client_secret,
            username=settings.sf_username,
            password=settings.sf_password,
            jwt_private_key=SecretStr(key.read_text()) if key else None,
            instance_url=settings.sf_instance_url,
            ca_file=settings.sf_ca_file,
        )

    def __repr__(self) -> str:
        return f"SalesforceAuth(token_url={self.token_url!r}, flow={self.flow!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def token(self, *, stale: str | None = None) -> SalesforceToken:
        """The cached token, or a new one when there is none or the caller's `stale` was refused.

        Passing the refused token (rather than "force") lets many callers that saw the same
        rejection share one refresh.
        """
        async with self._lock:
            current = self._token
            if current is not None and current.access_token.get_secret_value() != stale:
                return current
            self._token = await self._retry.run(self._fetch)
            log.info("salesforce.token_acquired", flow=self.flow, refresh=current is not None)
            return self._token

    def streaming_authenticator(self) -> SalesforceStreamingAuthenticator:
        return SalesforceStreamingAuthenticator(self)

    async def _fetch(self) -> SalesforceToken:
        async with observe(System.SALESFORCE, "oauth_token"):
            try:
                response = await self._http.post(self.token_url, data=self._grant())
            except httpx.TransportError as exc:
                raise transient_from_transport(System.SALESFORCE, exc) from None
            try:
                body = response.json()
            except ValueError:
                body = None
            if response.status_code != 200 or not isinstance(body, dict):
                raise classify_token_error(response.status_code, body)
            access_token = body.get("access_token")
            instance_url = self._instance_url or body.get("instance_url")
            if not isinstance(access_token, str) or not isinstance(instance_url, str):
                raise TransientError(System.SALESFORCE, "token reply lacks token or instance_url")
            return SalesforceToken(
                SecretStr(access_token), instance_url, str(body.get("token_type") or "Bearer")
            )

    def _grant(self) -> dict[str, str]:
        if self.flow == "jwt":
            assert self._jwt_private_key is not None and self._username is not None
            claims = {
                "iss": self._client_id,
                "sub": self._username,
                "aud": self._jwt_audience,
                "exp": int(time.time()) + 180,
            }
            assertion = jwt.encode(
                claims, self._jwt_private_key.get_secret_value(), algorithm="RS256"
            )
            return {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
        assert self._client_secret is not None
        grant = {
            "grant_type": self.flow,
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
        }
        if self.flow == "password":
            assert self._username is not None and self._password is not None
            grant |= {"username": self._username, "password": self._password.get_secret_value()}
        return grant


class SalesforceStreamingAuthenticator(AuthenticatorBase):
    """aiosfstream-ng authenticator backed by `SalesforceAuth`.

    The streaming client calls `authenticate()` at start and again after a `401::`/`403::`
    reply; in the second case the token it holds was refused, so it is passed as `stale` and a
    fresh one is fetched (and then shared with REST). Failures surface as the taxonomy's
    errors (`ConfigurationError` for refused credentials, `TransientError` otherwise).
    """

    def __init__(self, auth: SalesforceAuth) -> None:
        super().__init__()
        self._auth = auth

    def __repr__(self) -> str:
        return f"SalesforceStreamingAuthenticator(auth={self._auth!r})"

    async def _authenticate(self) -> tuple[int, dict[str, Any]]:
        token = await self._auth.token(stale=self.access_token)
        return 200, {
            "access_token": token.access_token.get_secret_value(),
            "token_type": token.token_type,
            "instance_url": token.instance_url,
        }


# ---------------------------------------------------------------------------------------------
# Typed records.


def _text(value: Any) -> Any:
    # Id-like custom fields may be defined as Number in some orgs; 1234.0 must read as "1234".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Text = Annotated[str | None, BeforeValidator(_text)]


class SfRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class ProductSnapshot(SfRecord):
    id: str = Field(alias="Id")
    name: str = Field(alias="Name")
    product_code: str | None = Field(default=None, alias="ProductCode")
    is_active: bool = Field(default=True, alias="IsActive")
    whmcs_product_id: int | None = Field(default=None, alias="WHMCS_Product_Id__c")
    product_type: str | None = Field(default=None, alias="Product_Type__c")
    item_class: str | None = Field(default=None, alias="Item_Class__c")
    billing_cycle: str | None = Field(default=None, alias="Billing_Cycle__c")
    freebit_plan_code: str | None = Field(default=None, alias="Freebit_Plan_Code__c")


class OrderItemSnapshot(SfRecord):
    id: str = Field(alias="Id")
    order_id: str = Field(alias="OrderId")
    product2_id: str | None = Field(default=None, alias="Product2Id")
    pricebook_entry_id: str | None = Field(default=None, alias="PricebookEntryId")
    quantity: Decimal = Field(alias="Quantity")
    unit_price: Decimal | None = Field(default=None, alias="UnitPrice")
    whmcs_service_id: Text = Field(default=None, alias="WHMCS_Service_ID__c")
    product: ProductSnapshot | None = Field(default=None, alias="Product2")


class AccountSnapshot(SfRecord):
    id: str = Field(alias="Id")
    name: str = Field(alias="Name")
    customer_number: Text = Field(default=None, alias="Customer_Number__c")
    whmcs_client_id: Text = Field(default=None, alias="WH_Account__c")
    portal_status: str | None = Field(default=None, alias="Portal_Status__c")


class BillingAddress(SfRecord):
    street: str | None = Field(default=None, alias="BillingStreet")
    city: str | None = Field(default=None, alias="BillingCity")
    state: str | None = Field(default=None, alias="BillingState")
    postal_code: str | None = Field(default=None, alias="BillingPostalCode")
    country: str | None = Field(default=None, alias="BillingCountry")


class OrderSnapshot(SfRecord):
    """An order as the workflow needs it: header, address snapshot, account, items, products."""

    id: str = Field(alias="Id")
    order_number: str | None = Field(default=None, alias="OrderNumber")
    account_id: str | None = Field(default=None, alias="AccountId")
    pricebook2_id: str | None = Field(default=None, alias="Pricebook2Id")
    status: str = Field(alias="Status")
    effective_date: date | None = Field(default=None, alias="EffectiveDate")
    activation_status: str | None = Field(default=None, alias="Activation_Status__c")
    activation_error_code: str | None = Field(default=None, alias="Activation_Error_Code__c")
    activation_error_message: str | None = Field(default=None, alias="Activation_Error_Message__c")
    activation_last_attempt_at: datetime | None = Field(
        default=None, alias="Activation_Last_Attempt_At__c"
    )
    whmcs_order_id: Text = Field(default=None, alias="WHMCS_Order_ID__c")
    sim_type: str | None = Field(default=None, alias="SIM_Type__c")
    eid: str | None = Field(default=None, alias="EID__c")
    sim_phone_number: Text = Field(default=None, alias="SIM_Phone_Number__c")
    mnp_reservation_number: Text = Field(default=None, alias="MNP_Reservation_Number__c")
    mnp_expiry_date: date | None = Field(default=None, alias="MNP_Expiry_Date__c")
    billing_address: BillingAddress
    account: AccountSnapshot | None = Field(default=None, alias="Account")
    items: tuple[OrderItemSnapshot, ...] = ()


class CatalogEntry(SfRecord):
    """A pricebook entry with its product, as the public catalog shows it."""

    id: str = Field(alias="Id")
    pricebook2_id: str = Field(alias="Pricebook2Id")
    product2_id: str = Field(alias="Product2Id")
    unit_price: Decimal = Field(alias="UnitPrice")
    is_active: bool = Field(alias="IsActive")
    product: ProductSnapshot = Field(alias="Product2")


ActivationStatus = Literal["Pending", "Activating", "Activated", "Failed", "Cancelled"]


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
            "Activation_Status__c": self.status,
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
    " MNP_Expiry_Date__c, Account.Id, Account.Name, Account.Customer_Number__c,"
    " Account.WH_Account__c, Account.Portal_Status__c"
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
_NEXT_RECORDS_URL = re.compile(r"/services/data/v\d+\.\d/query/[A-Za-z0-9-]+")
_EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,38}__e")


# ---------------------------------------------------------------------------------------------
# The REST client.


class SalesforceClient:
    """Salesforce REST through simple-salesforce, run on a bounded thread pool."""

    def __init__(
        self,
        auth: SalesforceAuth,
        *,
        api_version: str = "60.0",
        ca_file: Path | str | None = None,
        timeout: float = 30.0,
        max_workers: int = 4,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.auth = auth
        self._api_version = api_version
        # Passed on every request: requests lets REQUESTS_CA_BUNDLE override a session-level
        # `verify`, but not a per-request one. Never False: without a CA file the system trust
        # store is used.
        self._http_options: dict[str, Any] = {
            "timeout": timeout,
            "verify": str(ca_file) if ca_file is not None else True,
        }
        self._retry = retry or RetryPolicy()
        self._session = requests.Session()
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sf-rest")
        self._sf: tuple[SalesforceToken, Salesforce] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            SalesforceAuth.from_settings(settings),
            api_version=settings.sf_api_version,
            ca_file=settings.sf_ca_file,
        )

    def __repr__(self) -> str:
        return f"SalesforceClient(auth={self.auth!r}, api_version={self._api_version!r})"

    async def aclose(self) -> None:
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
        reply = await self._read("read_order", lambda sf: sf.query(soql, **self._http_options))
        records = reply.get("records") or []
        if not records:
            raise BusinessError(
                System.SALESFORCE,
                ErrorCode.ORDER_NOT_FOUND,
                "order does not exist",
                detail=order,
            )
        record = dict(records[0])
        items = await self._children("read_order", record.get("OrderItems"))
        data = {**record, "billing_address": record, "items": items}
        return _parse(OrderSnapshot, "read_order", data)

    async def read_catalog(self, pricebook_id: str | None = None) -> list[CatalogEntry]:
        """Active entries of a pricebook (default: the standard one) with their products."""
        if pricebook_id is None:
            where = "Pricebook2.IsStandard = true"
        else:
            pricebook = _sf_id(pricebook_id, ids.PRICEBOOK2, ErrorCode.INVALID_ORDER)
            where = f"Pricebook2Id = {id_literal(pricebook)}"
        soql = CATALOG_SOQL.format(pricebook=where)
        rows = await self._read("read_catalog", lambda sf: sf.query_all(soql, **self._http_options))
        return [_parse(CatalogEntry, "read_catalog", row) for row in rows.get("records") or []]

    async def find_pricebook_id(self, name: str) -> str | None:
        soql = f"SELECT Id FROM Pricebook2 WHERE Name = {quote(name)} AND IsActive = true LIMIT 1"  # noqa: S608
        reply = await self._read("find_pricebook", lambda sf: sf.query(soql, **self._http_options))
        records = reply.get("records") or []
        return str(records[0]["Id"]) if records else None

    # -- writes (not retried here) -------------------------------------------------------------

    async def update_activation(
        self,
        order_id: str,
        update: ActivationUpdate,
        *,
        item_service_ids: Mapping[str, str] | None = None,
    ) -> None:
        """Write the Activation_* fields (and WHMCS ids) in one request.

        Without item ids this is a PATCH of the order; with them, one `composite/sobjects` PATCH
        (all or none) carries the order and its items.
        """
        order = _sf_id(order_id, ids.ORDER, ErrorCode.ORDER_NOT_FOUND)
        if not item_service_ids:
            fields = update.order_fields()
            await self._write(
                "update_order",
                lambda sf: sf.restful(
                    f"sobjects/Order/{order}", method="PATCH", json=fields, **self._http_options
                ),
            )
            return
        records: list[dict[str, Any]] = [
            {"attributes": {"type": "Order"}, "id": order, **update.order_fields()}
        ]
        for item_id, service_id in item_service_ids.items():
            item = _sf_id(item_id, ids.ORDER_ITEM, ErrorCode.INVALID_ORDER)
            records.append(
                {"attributes": {"type": "OrderItem"}, "id": item, "WHMCS_Service_ID__c": service_id}
            )
        for start in range(0, len(records), COMPOSITE_LIMIT):
            await self._composite_update(records[start : start + COMPOSITE_LIMIT])

    async def publish_event(self, event_name: str, fields: Mapping[str, Any]) -> str:
        """Publish a platform event (e.g. `Account_Eligibility_Update__e`); returns its id."""
        if not _EVENT_NAME.fullmatch(event_name):
            raise ValueError("not a platform event API name (Name__e)")
        body = dict(fields)
        reply = await self._write(
            "publish_event",
            lambda sf: sf.restful(
                f"sobjects/{event_name}/", method="POST", json=body, **self._http_options
            ),
        )
        if not isinstance(reply, dict) or not reply.get("success"):
            raise _record_error(
                "publish_event", reply.get("errors") if isinstance(reply, dict) else None
            )
        return str(reply.get("id"))

    # -- plumbing ------------------------------------------------------------------------------

    async def _composite_update(self, records: list[dict[str, Any]]) -> None:
        payload = {"allOrNone": True, "records": records}
        results = await self._write(
            "update_order_items",
            lambda sf: sf.restful(
                "composite/sobjects", method="PATCH", json=payload, **self._http_options
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
                raise TransientError(System.SALESFORCE, f"{operation}: bad nextRecordsUrl")
            more = functools.partial(_query_more, url=next_url, options=self._http_options)
            relation = await self._read(operation, more)
            rows.extend(relation.get("records") or [])
        return rows

    async def _read(self, operation: str, call: Callable[[Salesforce], Any]) -> Any:
        return await self._retry.run(lambda: self._call(operation, call))

    async def _write(self, operation: str, call: Callable[[Salesforce], Any]) -> Any:
        return await self._call(operation, call)

    async def _call(self, operation: str, call: Callable[[Salesforce], T]) -> T:
        async with observe(System.SALESFORCE, operation):
            token = await self.auth.token()
            try:
                return await self._in_thread(token, call)
            except SalesforceError as exc:
                if exc.status != 401:
                    raise _rest_error(operation, exc) from None
            # The session was refused: refresh once (shared with other callers) and repeat once.
            # A refused session never reached the data, so repeating a write is safe here.
            log.info("salesforce.session_refused", operation=operation)
            token = await self.auth.token(stale=token.access_token.get_secret_value())
            try:
                return await self._in_thread(token, call)
            except SalesforceError as exc:
                raise _rest_error(operation, exc) from None

    async def _in_thread(self, token: SalesforceToken, call: Callable[[Salesforce], T]) -> T:
        sf = self._rest(token)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(call, sf))
        except requests.exceptions.SSLError:
            raise ConfigurationError(
                System.SALESFORCE, "TLS verification failed (check SF_CA_FILE)"
            ) from None
        except requests.exceptions.Timeout:
            raise TransientError(System.SALESFORCE, "request timed out") from None
        except requests.exceptions.ConnectionError:
            raise TransientError(System.SALESFORCE, "connection failed") from None

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


def _query_more(sf: Salesforce, *, url: str, options: dict[str, Any]) -> Any:
    return sf.query_more(url, identifier_is_url=True, **options)


def _sf_id(value: str, key_prefix: str, code: ErrorCode) -> str:
    try:
        return ids.validate_sf_id(value, key_prefix=key_prefix)
    except ids.InvalidSalesforceId as exc:
        raise BusinessError(
            System.SALESFORCE, code, "malformed Salesforce id", detail=str(exc)
        ) from None


def _rest_error(operation: str, exc: SalesforceError) -> ClientError:
    content = exc.content
    first = content[0] if isinstance(content, list) and content else content
    error_code = first.get("errorCode") if isinstance(first, dict) else None
    message = first.get("message") if isinstance(first, dict) else None
    return classify_salesforce_error(
        operation,
        exc.status,
        error_code if isinstance(error_code, str) else None,
        message if isinstance(message, str) else None,
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
    )


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], operation: str, data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(part) for part in error["loc"]) for error in exc.errors()})
        raise ConfigurationError(
            System.SALESFORCE, f"{operation}: unexpected record shape", detail=", ".join(fields)
        ) from None
