"""The WHMCS API client: typed actions over one pooled httpx connection, errors mapped once.

Every action is a form POST to `includes/api.php` carrying `identifier`/`secret` (and the
optional `accesskey`); replies are JSON with `result` = `success` or `error`. Read actions are
retried on transient failures; AddOrder, AcceptOrder and CancelOrder are not (WHMCS has no
idempotency key, so a repeat is the activity's decision, made after looking for an earlier one).

The product catalogue (GetProducts: the custom field ids AddOrder needs per product) changes
rarely and is the same for every order: it is read through a `ProductCatalogue`, in production
the portal's Redis (`clients.cache.CachedInGroup`, dropped with the services catalog group on
Product2/PricebookEntry change events), so an order does not cost a GetProducts. A product the
cached catalogue lacks is looked for once more in WHMCS before the order fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Protocol, Self, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

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
from clients.http import DEFAULT_TIMEOUT, FormApiClient, status_error, transient_status
from clients.metrics import observe
from clients.retry import RetryPolicy
from clients.whmcs_encoding import encode_product_fields, php_array_fields
from config.logging import get_logger
from config.settings import Settings
from domain.billing import (
    ORDER_ITEM_MARKER_FIELD,
    BillingOrder,
    BillingOrderResult,
    BillingOrderStatus,
    PayMethod,
)
from domain.errors import WriteOutcome
from domain.rules import services_by_item

log = get_logger(__name__)

M = TypeVar("M", bound=BaseModel)

# ---------------------------------------------------------------------------------------------
# Error mapping: per action, from WHMCS error messages to the taxonomy.

# Actions that write; a lost reply to one of them is `OutcomeUnknownError`.
WRITE_ACTIONS = frozenset({"AddOrder", "AcceptOrder", "CancelOrder", "UpdateClientProduct"})
# Every action: WHMCS refusing our credentials or address.
_ALL = frozenset[str]()
# Sentinel outcome: AcceptOrder/CancelOrder met an order that is not Pending; the client reads
# the order to tell "already done" from a real refusal.
NOT_PENDING: Literal["not_pending"] = "not_pending"
WhmcsOutcome = ErrorCode | Literal["configuration", "not_pending"]


@dataclass(frozen=True)
class WhmcsErrorRule:
    """A WHMCS error message (exact, or a prefix), the actions it is known for, its meaning."""

    text: str
    outcome: WhmcsOutcome
    actions: frozenset[str] = _ALL
    prefix: bool = False

    def matches(self, action: str, message: str) -> bool:
        if self.actions and action not in self.actions:
            return False
        text, candidate = self.text.casefold(), message.strip().casefold()
        return candidate.startswith(text) if self.prefix else candidate == text


_CLIENT_READS = frozenset({"GetClientsDetails", "GetPayMethods", "GetClientsProducts"})
WHMCS_ERROR_RULES: tuple[WhmcsErrorRule, ...] = (
    WhmcsErrorRule("Authentication Failed", "configuration"),
    WhmcsErrorRule("Invalid IP", "configuration", prefix=True),
    WhmcsErrorRule("Invalid Permissions", "configuration", prefix=True),
    WhmcsErrorRule("Invalid Access Key", "configuration", prefix=True),
    WhmcsErrorRule("Client Not Found", ErrorCode.BILLING_CLIENT_NOT_LINKED, _CLIENT_READS),
    WhmcsErrorRule(
        "Client ID Not Found",
        ErrorCode.BILLING_CLIENT_NOT_LINKED,
        _CLIENT_READS | {"AddOrder"},
    ),
    # The gateway we send is not active in WHMCS: our setting, not the customer's data.
    WhmcsErrorRule("Invalid Payment Method", "configuration", frozenset({"AddOrder"}), True),
    WhmcsErrorRule("Invalid Pay Method Type", "configuration", frozenset({"GetPayMethods"}), True),
    WhmcsErrorRule(
        "No items added to cart so order cannot proceed",
        ErrorCode.BILLING_ORDER_REJECTED,
        frozenset({"AddOrder"}),
    ),
    WhmcsErrorRule(
        "Unable to add order when client status is",
        ErrorCode.BILLING_ORDER_REJECTED,
        frozenset({"AddOrder"}),
        prefix=True,
    ),
    WhmcsErrorRule(
        "Order ID not found or Status not Pending",
        NOT_PENDING,
        frozenset({"AcceptOrder", "CancelOrder"}),
    ),
)


class AccessRefusedError(ConfigurationError):
    """WHMCS refused our credentials or address; the client pauses all calls for a while."""


class _NotPendingError(BusinessError):
    """Internal: AcceptOrder/CancelOrder met a non-Pending (or missing) order."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(
            System.WHMCS, ErrorCode.BILLING_ORDER_REJECTED, f"{action} refused", detail=message
        )


def classify_whmcs_error(action: str, message: str) -> ClientError:
    """The taxonomy error for a WHMCS `result=error` reply to `action`.

    A message the rules do not know for this action is an `UnrecognisedError` (transient, with
    an alert), never a business code: a new WHMCS message must not park orders with a code that
    tells the operator the wrong story.
    """
    for rule in WHMCS_ERROR_RULES:
        if not rule.matches(action, message):
            continue
        if rule.outcome == "configuration":
            error_type = AccessRefusedError if not rule.actions else ConfigurationError
            return error_type(System.WHMCS, f"{action} refused our setup", detail=message)
        if rule.outcome == NOT_PENDING:
            return _NotPendingError(action, message)
        return BusinessError(
            System.WHMCS, ErrorCode(rule.outcome), f"{action} refused", detail=message
        )
    return UnrecognisedError(
        System.WHMCS, f"{action} failed with an unrecognised error", detail=message
    )


def classify_whmcs_status(action: str, status: int) -> ClientError:
    """The taxonomy error for an HTTP failure whose body is not a WHMCS error reply."""
    # A 401/403/404 without a WHMCS body means a wrong URL or a proxy refusing us.
    if status in (401, 403):
        return AccessRefusedError(System.WHMCS, f"{action} failed with HTTP {status}")
    if status == 404:
        return ConfigurationError(System.WHMCS, f"{action} failed with HTTP {status}")
    return UnrecognisedError(System.WHMCS, f"{action} failed with HTTP {status}")


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


class OrderLine(WhmcsModel):
    """One product of an AddOrder call."""

    pid: int
    billingcycle: str
    qty: int = Field(default=1, ge=1)
    customfields: Mapping[int, str] = Field(default_factory=dict)
    configoptions: Mapping[int, str | int] = Field(default_factory=dict)
    priceoverride: Decimal | None = None
    # Stored on the service as its `domain`, which GetClientsProducts can filter by.
    domain: str | None = None


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
            if line.domain:
                form[f"domain[{index}]"] = line.domain
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


class ProductFields(WhmcsModel):
    """A product's custom field definitions (GetProducts), where the marker field is found."""

    pid: int
    customfields: list[CustomFieldValue] = Field(default_factory=list)

    @field_validator("customfields", mode="before")
    @classmethod
    def _fields(cls, value: Any) -> Any:
        return _unwrap(value, "customfield")


# ---------------------------------------------------------------------------------------------
# The product catalogue.

# The cached value's layout; another (an older release's) is read as a miss.
_CATALOGUE_FORMAT = "whmcs-products/v1"


class ProductCatalogue(Protocol):
    """Where the product catalogue is kept between orders (`clients.cache.CachedInGroup`)."""

    async def get(self, fill: Callable[[], Awaitable[str]], *, refresh: bool = False) -> str:
        """The kept value, else `fill()`'s; `refresh`: `fill()`'s, the kept one was lacking."""
        ...


class InProcessCatalogue:
    """Kept in the process until a refresh: for a client without a shared cache."""

    def __init__(self) -> None:
        self._value: str | None = None

    async def get(self, fill: Callable[[], Awaitable[str]], *, refresh: bool = False) -> str:
        if refresh or self._value is None:
            self._value = await fill()
        return self._value


def _catalogue(products: Sequence[ProductFields]) -> str:
    """The catalogue as kept: per product id, its custom fields' ids by name."""
    fields = {
        str(product.pid): {field.name: field.id for field in product.customfields}
        for product in products
    }
    return json.dumps({"format": _CATALOGUE_FORMAT, "products": fields}, sort_keys=True)


def _field_ids(text: str) -> dict[int, dict[str, int]] | None:
    """The kept catalogue, or None when it is not one this release wrote."""
    try:
        value = json.loads(text)
        if value.get("format") != _CATALOGUE_FORMAT:
            return None
        return {
            int(pid): {str(name): int(field_id) for name, field_id in fields.items()}
            for pid, fields in value["products"].items()
        }
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------
# The client.


_GONE = (
    "WHMCS order {order_id} no longer exists, and this fulfillment keeps the order it placed: "
    "cancel the fulfillment, then activate the order again in Salesforce to place a new one"
)


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
        max_pages: int = 1000,
        marker_field: str = ORDER_ITEM_MARKER_FIELD,
        catalogue: ProductCatalogue | None = None,
    ) -> None:
        self._api_url = api_url
        self._page_size = page_size
        self._max_pages = max_pages
        self._identifier = identifier
        self._secret = secret
        self._access_key = access_key
        self._retry = retry or RetryPolicy()
        self._marker_field = marker_field
        self._catalogue: ProductCatalogue = catalogue or InProcessCatalogue()
        # After WHMCS refuses our credentials or address, calls fail here until this monotonic
        # time: WHMCS bans addresses that keep failing to log in, and every order in flight
        # would otherwise add its own failed login.
        self._refused: tuple[float, ConfigurationError] | None = None
        super().__init__(System.WHMCS, timeout)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, catalogue: ProductCatalogue | None = None
    ) -> Self:
        if not settings.whmcs_api_url or not settings.whmcs_identifier or not settings.whmcs_secret:
            raise ValueError("WHMCS_API_URL, WHMCS_IDENTIFIER and WHMCS_SECRET must be set")
        return cls(
            settings.whmcs_api_url,
            settings.whmcs_identifier,
            settings.whmcs_secret,
            access_key=settings.whmcs_access_key,
            timeout=httpx.Timeout(settings.whmcs_timeout_seconds, connect=5.0),
            catalogue=catalogue,
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
        """Every pay method of the client, of any type (no `type` filter: it knows only two)."""
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
        self,
        client_id: int,
        *,
        service_id: int | None = None,
        product_id: int | None = None,
        domain: str | None = None,
    ) -> list[ClientProduct]:
        params = {
            "clientid": client_id,
            "serviceid": service_id,
            "pid": product_id,
            "domain": domain,
        }
        return await self._paged("GetClientsProducts", params, "products", "product", ClientProduct)

    async def get_invoices(self, client_id: int, *, status: str | None = None) -> list[Invoice]:
        params = {"userid": client_id, "status": status}
        return await self._paged("GetInvoices", params, "invoices", "invoice", Invoice)

    async def get_products(self) -> list[ProductFields]:
        """Every product with its custom field definitions (one GetProducts, not cached)."""
        reply = await self._read("GetProducts", {})
        rows = _unwrap(reply.get("products"), "product")
        return self._parse_list(ProductFields, "GetProducts", rows)

    async def marker_field_id(self, pid: int) -> int:
        """The id of the product's order-item marker field (ids differ per product), from the
        kept catalogue; a product it lacks, or lacks the field of, is looked for once more in
        WHMCS (added there today) before the product counts as misconfigured."""
        for refresh in (False, True):
            products = await self._products(refresh=refresh)
            field_id = products.get(pid, {}).get(self._marker_field)
            if field_id is not None:
                return field_id
        raise ConfigurationError(
            System.WHMCS,
            f"product {pid} has no {self._marker_field!r} custom field",
            detail="define it on every product the engine orders",
        )

    async def _products(self, *, refresh: bool) -> dict[int, dict[str, int]]:
        products = _field_ids(await self._catalogue.get(self._read_catalogue, refresh=refresh))
        if products is None and not refresh:
            # Kept in another layout (an older release): read it again.
            products = _field_ids(await self._catalogue.get(self._read_catalogue, refresh=True))
        if products is None:
            raise UnrecognisedError(System.WHMCS, "GetProducts: the kept catalogue is unreadable")
        return products

    async def _read_catalogue(self) -> str:
        return _catalogue(await self.get_products())

    async def find_billing_order(
        self, order: BillingOrder, *, thorough: bool = True
    ) -> BillingOrderResult | None:
        """The WHMCS order an earlier attempt made for `order`, found by the services' markers.

        Each service carries its Salesforce item id twice: in the marker custom field, and as
        its `domain`, which WHMCS can filter by. The domain finds a service in one call per
        line, whatever the client's history (`thorough=False` looks no further). A service
        made by a release that did not set the domain carries the custom field only, and
        WHMCS cannot filter by a custom field's value: `thorough` also reads the client's
        services of the order's products, which costs pages in proportion to that history.
        Every line must have a service marked with its Salesforce item id, all in one order
        that is not cancelled; otherwise there is no earlier order to take (None).
        """
        items = {line.sf_order_item_id for line in order.lines}
        services: list[ClientProduct] = []
        for item in dict.fromkeys(line.sf_order_item_id for line in order.lines):
            services += await self.get_clients_products(order.whmcs_client_id, domain=item)
        found = await self._earlier_order(order, services)
        if found is not None or not thorough:
            return found
        products = list(dict.fromkeys(line.whmcs_product_id for line in order.lines))
        services = await self.get_clients_products(order.whmcs_client_id, product_id=products[0])
        if not any(s.custom_field(self._marker_field) in items for s in services):
            return None
        for product_id in products[1:]:
            services += await self.get_clients_products(
                order.whmcs_client_id, product_id=product_id
            )
        return await self._earlier_order(order, services)

    async def _earlier_order(
        self, order: BillingOrder, services: list[ClientProduct]
    ) -> BillingOrderResult | None:
        """The newest live WHMCS order whose services carry every line's marker."""
        by_order: dict[int, list[ClientProduct]] = {}
        for service in services:
            by_order.setdefault(service.orderid, []).append(service)
        for order_id in sorted(by_order, reverse=True):
            marked = [(s.id, s.custom_field(self._marker_field)) for s in by_order[order_id]]
            service_ids = services_by_item(order.lines, marked)
            if service_ids is None:
                continue
            found = await self.get_orders(order_id=order_id)
            if not found or _order_status(found[0].status) in _DEAD:
                continue
            return BillingOrderResult(
                whmcs_order_id=order_id,
                whmcs_invoice_id=found[0].invoiceid,
                status=_order_status(found[0].status),
                service_ids=service_ids,
            )
        return None

    async def order_status(self, order_id: int) -> BillingOrderStatus | None:
        found = await self.get_orders(order_id=order_id)
        return _order_status(found[0].status) if found else None

    # -- writes (never retried here) -----------------------------------------------------------

    async def add_order(self, order: BillingOrder) -> BillingOrderResult:
        """AddOrder with each line marked; a lost reply raises `OutcomeUnknownError`, after
        which `find_billing_order` tells whether WHMCS made the order."""
        lines = [
            OrderLine(
                pid=line.whmcs_product_id,
                billingcycle=line.billing_cycle,
                qty=line.quantity,
                customfields={
                    await self.marker_field_id(line.whmcs_product_id): line.sf_order_item_id
                },
                priceoverride=line.price_override,
                domain=line.sf_order_item_id,
            )
            for line in order.lines
        ]
        request = AddOrderRequest(
            client_id=order.whmcs_client_id,
            payment_method=order.payment_method,
            lines=lines,
            noemail=True,
        )
        reply = await self._write("AddOrder", request.to_form())
        added = self._parse(AddOrderResult, "AddOrder", reply)
        log.info(
            "whmcs.order_added",
            sf_order_id=order.sf_order_id,
            whmcs_client_id=order.whmcs_client_id,
            whmcs_order_id=added.order_id,
            whmcs_service_ids=added.service_ids,
            whmcs_invoice_id=added.invoice_id,
        )
        service_ids = (
            {
                line.sf_order_item_id: sid
                for line, sid in zip(order.lines, added.service_ids, strict=True)
            }
            if len(added.service_ids) == len(order.lines)
            else None
        )
        if service_ids is None:
            # Quantities above one make several services per line: the markers say which.
            found = await self.find_billing_order(order, thorough=False)
            service_ids = found.service_ids if found else {}
        return BillingOrderResult(
            whmcs_order_id=added.order_id,
            whmcs_invoice_id=added.invoice_id,
            status=BillingOrderStatus.PENDING,
            service_ids=service_ids,
        )

    async def accept_order(
        self, order_id: int, *, autosetup: bool = True, sendemail: bool = False
    ) -> WriteOutcome:
        """Accept a pending order; an order already Active (an earlier attempt's reply was
        lost) is `ALREADY_DONE`."""
        form = {"orderid": str(order_id)}
        if autosetup:
            form["autosetup"] = "1"
        if sendemail:
            form["sendemail"] = "1"
        return await self._settle("AcceptOrder", order_id, form, BillingOrderStatus.ACTIVE)

    async def cancel_order(
        self, order_id: int, *, cancel_subscription: bool = False, noemail: bool = True
    ) -> WriteOutcome:
        """Cancel a pending order; one already Cancelled is `ALREADY_DONE`."""
        form = {"orderid": str(order_id)}
        if cancel_subscription:
            form["cancelsub"] = "1"
        if noemail:
            form["noemail"] = "1"
        return await self._settle("CancelOrder", order_id, form, BillingOrderStatus.CANCELLED)

    # -- plumbing ------------------------------------------------------------------------------

    async def _settle(
        self, action: str, order_id: int, form: Mapping[str, str], wanted: BillingOrderStatus
    ) -> WriteOutcome:
        try:
            await self._write(action, form)
            return WriteOutcome.APPLIED
        except _NotPendingError as refused:
            status = await self.order_status(order_id)
            if status == wanted:
                log.info("whmcs.already_done", action=action, whmcs_order_id=order_id)
                return WriteOutcome.ALREADY_DONE
            seen = "does not exist" if status is None else f"is {status.value}"
            raise BusinessError(
                System.WHMCS,
                ErrorCode.BILLING_ORDER_REJECTED,
                f"{action} refused: order {order_id} {seen}",
                detail=refused.detail,
                # A cancelled order can be set back to Pending in WHMCS; a deleted one is gone,
                # and a fulfillment keeps the order it placed.
                retry_cannot_help=_GONE.format(order_id=order_id) if status is None else None,
            ) from None

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
        """Every page of a list action.

        Bounded: an upstream that ignores `limitstart` (returning the first page again) or
        never stops is an error, not an endless loop and not a silently short list (a short
        list would make `find_billing_order` miss an earlier order and add a second one).
        """
        base = {key: str(value) for key, value in params.items() if value is not None}
        items: list[M] = []
        first_page: list[M] | None = None
        for _page in range(self._max_pages):
            page = {**base, "limitstart": str(len(items)), "limitnum": str(self._page_size)}
            reply = await self._read(action, page)
            batch = self._parse_list(model, action, _unwrap(reply.get(list_key), item_key))
            if first_page is None:
                first_page = batch
            elif batch and batch == first_page:
                raise UnrecognisedError(
                    System.WHMCS, f"{action} ignores limitstart", detail=f"at {len(items)}"
                )
            items.extend(batch)
            total = _int_or_none(reply.get("totalresults"))
            if (
                not batch
                or len(batch) < self._page_size
                or (total is not None and len(items) >= total)
            ):
                return items
        raise UnrecognisedError(
            System.WHMCS, f"{action} did not end within {self._max_pages} pages"
        )

    async def _call(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        refused = self._refused
        if refused is not None:
            until, error = refused
            if time.monotonic() < until:
                raise error
            self._refused = None
        form = {
            **params,
            "action": action,
            "identifier": self._identifier,
            "secret": self._secret.get_secret_value(),
            "responsetype": "json",
        }
        if self._access_key is not None:
            form["accesskey"] = self._access_key.get_secret_value()
        write = action in WRITE_ACTIONS
        async with observe(System.WHMCS, action):
            response, body = await self._post_form(self._api_url, form, write=write)
            try:
                return self._interpret(action, response, body, write=write)
            except AccessRefusedError as exc:
                self._refused = (time.monotonic() + (exc.retry_after or 0.0), exc)
                raise

    @staticmethod
    def _interpret(
        action: str, response: httpx.Response, body: Any, *, write: bool
    ) -> dict[str, Any]:
        if transient_status(response.status_code):
            raise status_error(System.WHMCS, action, response, write=write)
        if not isinstance(body, dict):
            if response.is_success:
                text = f"{action} returned a non-JSON reply"
                if write:
                    raise OutcomeUnknownError(System.WHMCS, text)
                raise TransientError(System.WHMCS, text)
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


_DEAD = (BillingOrderStatus.CANCELLED, BillingOrderStatus.FRAUD)


def _order_status(value: str) -> BillingOrderStatus:
    try:
        return BillingOrderStatus(value)
    except ValueError:
        return BillingOrderStatus.OTHER


def _shape_error(action: str, exc: ValidationError) -> TransientError:
    # Only field locations go into the message: values may be card data or personal data.
    # A reply we cannot read to a write still leaves its outcome unknown.
    fields = sorted({".".join(str(part) for part in error["loc"]) for error in exc.errors()})
    error_type = OutcomeUnknownError if action in WRITE_ACTIONS else UnrecognisedError
    return error_type(
        System.WHMCS, f"{action} reply has an unexpected shape", detail=", ".join(fields)
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
