"""The WHMCS API client: typed actions over one pooled httpx connection, errors mapped once.

Every action is a form POST to `includes/api.php` carrying `identifier`/`secret` (and the
optional `accesskey`); replies are JSON with `result` = `success` or `error`. Read actions are
retried on transient failures; AddOrder, AcceptOrder and CancelOrder are not (WHMCS has no
idempotency key, so a repeat is the activity's decision, made after looking for an earlier one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

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
from clients.whmcs_encoding import encode_product_fields, php_array_fields
from config.logging import get_logger
from config.settings import Settings

log = get_logger(__name__)

M = TypeVar("M", bound=BaseModel)

# ---------------------------------------------------------------------------------------------
# Error mapping: the one table from WHMCS error messages to the taxonomy.


@dataclass(frozen=True)
class WhmcsErrorRule:
    """A WHMCS error message (exact, or a prefix) and what it means to us."""

    text: str
    code: ErrorCode
    prefix: bool = False
    configuration: bool = False

    def matches(self, message: str) -> bool:
        text, candidate = self.text.casefold(), message.strip().casefold()
        return candidate.startswith(text) if self.prefix else candidate == text


WHMCS_ERROR_TABLE: tuple[WhmcsErrorRule, ...] = (
    WhmcsErrorRule("Client Not Found", ErrorCode.BILLING_CLIENT_NOT_LINKED),
    WhmcsErrorRule("Client ID Not Found", ErrorCode.BILLING_CLIENT_NOT_LINKED),
    WhmcsErrorRule("Invalid Payment Method", ErrorCode.PAYMENT_METHOD_MISSING, prefix=True),
    WhmcsErrorRule("Order ID not found or Status not Pending", ErrorCode.BILLING_ORDER_REJECTED),
    WhmcsErrorRule(
        "No items added to cart so order cannot proceed", ErrorCode.BILLING_ORDER_REJECTED
    ),
    WhmcsErrorRule(
        "Unable to add order when client status is", ErrorCode.BILLING_ORDER_REJECTED, prefix=True
    ),
    WhmcsErrorRule("Authentication Failed", ErrorCode.UPSTREAM_UNAVAILABLE, configuration=True),
    WhmcsErrorRule("Invalid IP", ErrorCode.UPSTREAM_UNAVAILABLE, prefix=True, configuration=True),
    WhmcsErrorRule(
        "Invalid Permissions", ErrorCode.UPSTREAM_UNAVAILABLE, prefix=True, configuration=True
    ),
)

# What an unlisted `result=error` message means, by the action that got it.
WHMCS_DEFAULT_CODES: Mapping[str, ErrorCode] = {
    "GetClientsDetails": ErrorCode.BILLING_CLIENT_NOT_LINKED,
    "GetPayMethods": ErrorCode.PAYMENT_METHOD_MISSING,
}


def classify_whmcs_error(action: str, message: str) -> BusinessError:
    """The taxonomy error for a WHMCS `result=error` reply to `action`."""
    for rule in WHMCS_ERROR_TABLE:
        if rule.matches(message):
            if rule.configuration:
                return ConfigurationError(
                    System.WHMCS, f"{action} refused our API credentials", detail=message
                )
            return BusinessError(System.WHMCS, rule.code, f"{action} refused", detail=message)
    code = WHMCS_DEFAULT_CODES.get(action, ErrorCode.BILLING_ORDER_REJECTED)
    return BusinessError(System.WHMCS, code, f"{action} refused", detail=message)


def classify_whmcs_status(action: str, status: int) -> ClientError:
    """The taxonomy error for an HTTP failure whose body is not a WHMCS error reply."""
    if transient_status(status):
        return TransientError(System.WHMCS, f"{action} failed with HTTP {status}")
    # A 401/403/404 without a WHMCS body means a wrong URL or a proxy refusing us.
    return ConfigurationError(System.WHMCS, f"{action} failed with HTTP {status}")


# ---------------------------------------------------------------------------------------------
# Typed models.


class WhmcsModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


def _none_if_blank(value: Any) -> Any:
    return None if value in ("", 0, "0") else value


def _ids(value: Any) -> Any:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, int):
        return [value]
    return value


def _unwrap(value: Any, key: str) -> list[Any]:
    """WHMCS wraps lists as {"orders": {"order": [...]}}; empty lists arrive as "" or {}."""
    if value in (None, "", [], {}):
        return []
    if isinstance(value, dict):
        value = value.get(key, [])
    if isinstance(value, dict):
        return [value]
    return list(value) if isinstance(value, list) else []


class BillingClient(WhmcsModel):
    id: int
    firstname: str = ""
    lastname: str = ""
    companyname: str = ""
    email: str = ""
    status: str = ""


class PayMethod(WhmcsModel):
    id: int
    type: str
    description: str = ""
    gateway_name: str = ""
    # Card data stays out of reprs and logs even in its masked form.
    card_last_four: str | None = Field(default=None, repr=False)
    expiry_date: str | None = Field(default=None, repr=False)


class OrderLine(WhmcsModel):
    """One product of an AddOrder call."""

    pid: int
    billingcycle: str
    qty: int = Field(default=1, ge=1)
    customfields: Mapping[int, str] = Field(default_factory=dict)
    configoptions: Mapping[int, str | int] = Field(default_factory=dict)
    priceoverride: Decimal | None = None


class AddOrderRequest(WhmcsModel):
    client_id: int
    payment_method: str
    lines: Sequence[OrderLine] = Field(min_length=1)
    promocode: str | None = None
    noinvoice: bool = False
    noinvoiceemail: bool = False
    noemail: bool = False
    clientip: str | None = None

    def to_form(self) -> dict[str, str]:
        """The AddOrder parameters in WHMCS's PHP-array form encoding."""
        form: dict[str, str] = {
            "clientid": str(self.client_id),
            "paymentmethod": self.payment_method,
        }
        form |= php_array_fields("pid", [line.pid for line in self.lines])
        form |= php_array_fields("qty", [line.qty for line in self.lines])
        form |= php_array_fields("billingcycle", [line.billingcycle for line in self.lines])
        for index, line in enumerate(self.lines):
            if line.customfields:
                form[f"customfields[{index}]"] = encode_product_fields(line.customfields)
            if line.configoptions:
                form[f"configoptions[{index}]"] = encode_product_fields(line.configoptions)
            if line.priceoverride is not None:
                form[f"priceoverride[{index}]"] = str(line.priceoverride)
        if self.promocode:
            form["promocode"] = self.promocode
        if self.clientip:
            form["clientip"] = self.clientip
        # PHP reads any non-empty string as true, so false flags are left out rather than sent.
        for flag in ("noinvoice", "noinvoiceemail", "noemail"):
            if getattr(self, flag):
                form[flag] = "1"
        return form


class AddOrderResult(WhmcsModel):
    order_id: int = Field(alias="orderid")
    service_ids: list[int] = Field(default_factory=list, alias="serviceids")
    addon_ids: list[int] = Field(default_factory=list, alias="addonids")
    domain_ids: list[int] = Field(default_factory=list, alias="domainids")
    invoice_id: int | None = Field(default=None, alias="invoiceid")

    _split = field_validator("service_ids", "addon_ids", "domain_ids", mode="before")(_ids)
    _blank = field_validator("invoice_id", mode="before")(_none_if_blank)


class OrderLineItem(WhmcsModel):
    type: str = ""
    relid: int | None = None
    producttype: str = ""
    product: str = ""
    billingcycle: str = ""
    amount: str = ""
    status: str = ""

    _blank = field_validator("relid", mode="before")(_none_if_blank)


class WhmcsOrder(WhmcsModel):
    id: int
    ordernum: str = ""
    userid: int
    date: str = ""
    amount: str = ""
    paymentmethod: str = ""
    invoiceid: int | None = None
    status: str
    paymentstatus: str = ""
    lineitems: list[OrderLineItem] = Field(default_factory=list)

    _blank = field_validator("invoiceid", mode="before")(_none_if_blank)

    @field_validator("ordernum", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value)

    @field_validator("lineitems", mode="before")
    @classmethod
    def _items(cls, value: Any) -> Any:
        return _unwrap(value, "lineitem")


class CustomFieldValue(WhmcsModel):
    id: int
    name: str = ""
    value: str = ""


class ClientProduct(WhmcsModel):
    """A service (GetClientsProducts), with the custom fields our idempotency marker lives in."""

    id: int
    clientid: int
    orderid: int
    pid: int
    name: str = ""
    status: str = ""
    billingcycle: str = ""
    customfields: list[CustomFieldValue] = Field(default_factory=list)

    @field_validator("customfields", mode="before")
    @classmethod
    def _fields(cls, value: Any) -> Any:
        return _unwrap(value, "customfield")

    def custom_field(self, name: str) -> str | None:
        for field in self.customfields:
            if field.name == name:
                return field.value
        return None


class Invoice(WhmcsModel):
    id: int
    userid: int
    invoicenum: str = ""
    date: str = ""
    duedate: str = ""
    total: str = ""
    status: str = ""
    paymentmethod: str = ""


# ---------------------------------------------------------------------------------------------
# The client.


class WhmcsClient(FormApiClient):
    """Talks to one WHMCS installation; one instance per process, closed with `aclose()`."""

    def __init__(
        self,
        api_url: str,
        identifier: str,
        secret: SecretStr,
        *,
        access_key: SecretStr | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        page_size: int = 100,
    ) -> None:
        self._api_url = api_url
        self._page_size = page_size
        self._identifier = identifier
        self._secret = secret
        self._access_key = access_key
        self._retry = retry or RetryPolicy()
        super().__init__(System.WHMCS, timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        if not settings.whmcs_api_url or not settings.whmcs_identifier or not settings.whmcs_secret:
            raise ValueError("WHMCS_API_URL, WHMCS_IDENTIFIER and WHMCS_SECRET must be set")
        return cls(
            settings.whmcs_api_url,
            settings.whmcs_identifier,
            settings.whmcs_secret,
            access_key=settings.whmcs_access_key,
        )

    def __repr__(self) -> str:
        return f"WhmcsClient(api_url={self._api_url!r}, identifier={self._identifier!r})"

    # -- reads (retried) -----------------------------------------------------------------------

    async def get_client(self, client_id: int) -> BillingClient:
        # No `stats` parameter: WHMCS reads "false" as true (PHP truthiness) and adds the stats.
        reply = await self._read("GetClientsDetails", {"clientid": str(client_id)})
        # WHMCS returns the client both flattened at top level and under "client".
        return self._parse(BillingClient, "GetClientsDetails", reply.get("client") or reply)

    async def get_pay_methods(self, client_id: int) -> list[PayMethod]:
        reply = await self._read("GetPayMethods", {"clientid": str(client_id)})
        return self._parse_list(PayMethod, "GetPayMethods", reply.get("paymethods"))

    async def get_orders(
        self,
        *,
        order_id: int | None = None,
        client_id: int | None = None,
        status: str | None = None,
    ) -> list[WhmcsOrder]:
        params = {"id": order_id, "userid": client_id, "status": status}
        return await self._paged("GetOrders", params, "orders", "order", WhmcsOrder)

    async def get_clients_products(
        self, client_id: int, *, service_id: int | None = None
    ) -> list[ClientProduct]:
        params = {"clientid": client_id, "serviceid": service_id}
        return await self._paged("GetClientsProducts", params, "products", "product", ClientProduct)

    async def get_invoices(self, client_id: int, *, status: str | None = None) -> list[Invoice]:
        params = {"userid": client_id, "status": status}
        return await self._paged("GetInvoices", params, "invoices", "invoice", Invoice)

    # -- writes (never retried here) -----------------------------------------------------------

    async def add_order(self, request: AddOrderRequest) -> AddOrderResult:
        reply = await self._write("AddOrder", request.to_form())
        result = self._parse(AddOrderResult, "AddOrder", reply)
        log.info(
            "whmcs.order_added",
            whmcs_client_id=request.client_id,
            whmcs_order_id=result.order_id,
            whmcs_service_ids=result.service_ids,
            whmcs_invoice_id=result.invoice_id,
        )
        return result

    async def accept_order(
        self, order_id: int, *, autosetup: bool = True, sendemail: bool = False
    ) -> None:
        form = {"orderid": str(order_id)}
        if autosetup:
            form["autosetup"] = "1"
        if sendemail:
            form["sendemail"] = "1"
        await self._write("AcceptOrder", form)

    async def cancel_order(
        self, order_id: int, *, cancel_subscription: bool = False, noemail: bool = True
    ) -> None:
        form = {"orderid": str(order_id)}
        if cancel_subscription:
            form["cancelsub"] = "1"
        if noemail:
            form["noemail"] = "1"
        await self._write("CancelOrder", form)

    # -- plumbing ------------------------------------------------------------------------------

    async def _read(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        return await self._retry.run(lambda: self._call(action, params))

    async def _write(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        return await self._call(action, params)

    async def _paged(
        self,
        action: str,
        params: Mapping[str, int | str | None],
        list_key: str,
        item_key: str,
        model: type[M],
    ) -> list[M]:
        base = {key: str(value) for key, value in params.items() if value is not None}
        items: list[M] = []
        while True:
            page = {**base, "limitstart": str(len(items)), "limitnum": str(self._page_size)}
            reply = await self._read(action, page)
            batch = self._parse_list(model, action, _unwrap(reply.get(list_key), item_key))
            items.extend(batch)
            total = _int_or_none(reply.get("totalresults"))
            if (
                not batch
                or len(batch) < self._page_size
                or (total is not None and len(items) >= total)
            ):
                return items

    async def _call(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        form = {
            **params,
            "action": action,
            "identifier": self._identifier,
            "secret": self._secret.get_secret_value(),
            "responsetype": "json",
        }
        if self._access_key is not None:
            form["accesskey"] = self._access_key.get_secret_value()
        async with observe(System.WHMCS, action):
            response, body = await self._post_form(self._api_url, form)
            return self._interpret(action, response, body)

    @staticmethod
    def _interpret(action: str, response: httpx.Response, body: Any) -> dict[str, Any]:
        if transient_status(response.status_code):
            raise TransientError(
                System.WHMCS,
                f"{action} failed with HTTP {response.status_code}",
                retry_after=retry_after_seconds(response),
            )
        if not isinstance(body, dict):
            if response.is_success:
                raise TransientError(System.WHMCS, f"{action} returned a non-JSON reply")
            raise classify_whmcs_status(action, response.status_code)
        if body.get("result") == "success" and response.is_success:
            return body
        message = body.get("message")
        if body.get("result") == "error" and isinstance(message, str):
            raise classify_whmcs_error(action, message)
        raise classify_whmcs_status(action, response.status_code)

    @staticmethod
    def _parse(model: type[M], action: str, data: Any) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise _shape_error(action, exc) from None

    @classmethod
    def _parse_list(cls, model: type[M], action: str, data: Any) -> list[M]:
        rows = data if isinstance(data, list) else []
        return [cls._parse(model, action, row) for row in rows]


def _shape_error(action: str, exc: ValidationError) -> TransientError:
    # Only field locations go into the message: values may be card data or personal data.
    fields = sorted({".".join(str(part) for part in error["loc"]) for error in exc.errors()})
    return TransientError(
        System.WHMCS, f"{action} reply has an unexpected shape", detail=", ".join(fields)
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
