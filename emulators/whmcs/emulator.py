"""State of the WHMCS emulator and its API actions (clients, pay methods, products, orders, …).

`WhmcsEmulator.call(action, params)` runs one API action on already authenticated parameters
and returns the reply dict, or raises `WhmcsError` whose message is WHMCS's own wording. The
HTTP door (auth, IP allow-list, encoding) is in `app.py`. Orders follow WHMCS's life cycle:
AddOrder makes a Pending order, Pending services carrying their custom field values, and an
Unpaid invoice (unless `noinvoice`); AcceptOrder activates order and services; CancelOrder
cancels order, services and an unpaid invoice.

Boolean parameters (`noinvoice`, `stats`, …) are read with PHP's truthiness: any value but ""
and "0" is true, so a client that means false must leave the parameter out.

Reply id types follow each action's documentation, which differ: AddOrder's `orderid` and
`invoiceid` (and `serviceids`) and GetClientsProducts' ids are strings; GetOrders' and
GetInvoices' ids and counts are integers. A client must compare ids as integers.
Actions that act on one client (GetPayMethods, AddPayMethod, DeletePayMethod, AddOrder) answer
`Client ID Is Required` when `clientid` is missing or empty.

Paging (GetOrders, GetClientsProducts, GetInvoices): `limitstart` (default 0) and `limitnum`
(default 25) select the page, `totalresults` counts every match. The `ignore_limitstart` setting
(default false) makes them answer the first page whatever `limitstart` says, with
`startnumber` 0, as a misbehaving upstream or proxy might: a client's paging loop must still end.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from emulators.common.emulator import ConfigurableEmulator
from emulators.whmcs import demo
from emulators.whmcs.phpdata import PhpDataError, form_keyed, unserialize

DEFAULT_SETTINGS: dict[str, Any] = {
    "identifier": "emulator-identifier",
    "secret": "emulator-secret",
    "access_key": "",
    # Empty: every address may call. Otherwise only these, or callers sending `accesskey`.
    "allowed_ips": [],
    "currency": "JPY",
    # Custom fields every product made by AddProduct gets, as an administrator would define them.
    "product_custom_fields": [demo.ORDER_ITEM_FIELD_NAME],
    # True: paged lists answer their first page whatever `limitstart` asks for.
    "ignore_limitstart": False,
}

PAY_METHOD_TYPES = ("CreditCard", "RemoteCreditCard", "BankAccount", "RemoteBankAccount")
# GetPayMethods' `type` filter names a family; the gateway-stored ("Remote") kind belongs to it.
PAY_METHOD_FILTERS = {
    "CreditCard": ("CreditCard", "RemoteCreditCard"),
    "BankAccount": ("BankAccount", "RemoteBankAccount"),
}
BILLING_CYCLES = (
    "free",
    "onetime",
    "monthly",
    "quarterly",
    "semiannually",
    "annually",
    "biennially",
    "triennially",
)
_COLLECTIONS = ("clients", "paymethods", "groups", "products", "orders", "services", "invoices")


class WhmcsError(Exception):
    """An API-level refusal; `message` is sent as `{"result": "error", "message": …}`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Params:
    """The form fields of one API call, with PHP-style array access."""

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self.items = list(items)
        self._last = dict(self.items)

    def get(self, name: str, default: str = "") -> str:
        return self._last.get(name, default)

    def has(self, name: str) -> bool:
        return name in self._last

    def keyed(self, name: str) -> dict[int, str]:
        return form_keyed(self.items, name)

    def flag(self, name: str) -> bool:
        # PHP truthiness, as WHMCS reads its boolean parameters: only "" and "0" are false, so
        # "false" and "no" switch a flag on.
        return self.get(name) not in ("", "0")


class WhmcsEmulator(ConfigurableEmulator):
    name = "whmcs"
    DEFAULT_SETTINGS = DEFAULT_SETTINGS

    # -- Emulator contract -------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> None:
        self.config = self.start_settings()
        self.data: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in _COLLECTIONS}
        self.gateways: list[dict[str, str]] = []
        self.counters: dict[str, int] = {name: 0 for name in (*_COLLECTIONS, "customfields")}
        self.random = random.Random(seed)

    def to_state(self) -> dict[str, Any]:
        return {
            "settings": dict(self.config),
            "gateways": [dict(g) for g in self.gateways],
            "counters": dict(self.counters),
            **{name: dict(records) for name, records in self.data.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.config = {**self.start_settings(), **state.get("settings", {})}
        self.gateways = list(state.get("gateways", []))
        self.counters = {**self.counters, **state.get("counters", {})}
        self.data = {name: dict(state.get(name, {})) for name in _COLLECTIONS}

    def is_empty(self) -> bool:
        return not self.gateways and not any(self.data.values())

    def seed(self, payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("dataset") == "demo":
            return self._seed_demo()
        records = payload.get("records")
        if not isinstance(records, dict):
            raise ValueError('seed needs {"dataset": "demo"} or {"records": {...}}')
        return self._seed_records(records)

    # -- Seeding -----------------------------------------------------------------------------

    def _seed_demo(self) -> dict[str, Any]:
        gateways = [g["module"] for g in demo.GATEWAYS if self._add_gateway(g)]
        groups = [self._add_group(name) for name in demo.GROUPS.values()]
        products = [
            self._add_product(p["name"], p["gid"], {"monthly": p["monthly"]}, p["fields"])
            for p in demo.PRODUCTS
        ]
        for pid, field in demo.EXTRA_FIELDS:
            self._add_custom_field(str(pid), field)
        clients = [self._add_client(c) for c in demo.CLIENTS]
        paymethods = [self._add_pay_method_record(dict(p)) for p in demo.PAY_METHODS]
        return {
            "gateways": gateways,
            "groups": groups,
            "products": products,
            "clients": clients,
            "paymethods": paymethods,
        }

    def _seed_records(self, records: dict[str, Any]) -> dict[str, Any]:
        unknown = set(records) - {"gateways", "groups", "products", "clients", "paymethods"}
        if unknown:
            raise ValueError(f"unknown record kinds: {', '.join(sorted(unknown))}")
        created: dict[str, list[Any]] = {}
        created["gateways"] = [
            g["module"] for g in records.get("gateways", []) if self._add_gateway(g)
        ]
        created["groups"] = [self._add_group(str(name)) for name in records.get("groups", [])]
        created["products"] = [
            self._add_product(
                p["name"],
                int(p.get("gid", 1)),
                {"monthly": str(p.get("monthly", "0.00"))},
                list(p.get("customfields", self.config["product_custom_fields"])),
            )
            for p in records.get("products", [])
        ]
        created["clients"] = [self._add_client(c) for c in records.get("clients", [])]
        created["paymethods"] = [
            self._add_pay_method_record(_checked_pay_method(p, self.data["clients"]))
            for p in records.get("paymethods", [])
        ]
        return {kind: ids for kind, ids in created.items() if ids}

    # -- Record factories --------------------------------------------------------------------

    def _next(self, collection: str) -> int:
        self.counters[collection] += 1
        return self.counters[collection]

    def _now(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.now()))

    def _today(self) -> str:
        return self._now()[:10]

    def _add_gateway(self, gateway: dict[str, str]) -> bool:
        if any(g["module"] == gateway["module"] for g in self.gateways):
            return False
        self.gateways.append({"module": gateway["module"], "displayname": gateway["displayname"]})
        return True

    def _add_group(self, name: str) -> int:
        gid = self._next("groups")
        self.data["groups"][str(gid)] = {"id": gid, "name": name}
        return gid

    def _add_product(
        self, name: str, gid: int, pricing: dict[str, str], fields: Sequence[str]
    ) -> int:
        pid = self._next("products")
        self.data["products"][str(pid)] = {
            "pid": pid,
            "gid": gid,
            "type": "other",
            "name": name,
            "description": "",
            "module": "",
            "paytype": "recurring",
            "pricing": {"monthly": pricing.get("monthly", "0.00"), "msetupfee": "0.00"},
            "customfields": [],
        }
        for field in fields:
            self._add_custom_field(str(pid), field)
        return pid

    def _add_custom_field(self, pid: str, name: str) -> int:
        field_id = self._next("customfields")
        self.data["products"][pid]["customfields"].append({"id": field_id, "name": name})
        return field_id

    def _add_client(self, fields: dict[str, Any]) -> int:
        client_id = self._next("clients")
        self.data["clients"][str(client_id)] = {
            "id": client_id,
            "firstname": str(fields.get("firstname", "")),
            "lastname": str(fields.get("lastname", "")),
            "companyname": str(fields.get("companyname", "")),
            "email": str(fields.get("email", "")),
            "address1": str(fields.get("address1", "")),
            "city": str(fields.get("city", "")),
            "state": str(fields.get("state", "")),
            "postcode": str(fields.get("postcode", "")),
            "country": str(fields.get("country", "JP")),
            "phonenumber": str(fields.get("phonenumber", "")),
            "status": str(fields.get("status", "Active")),
            "datecreated": self._today(),
        }
        return client_id

    def _add_pay_method_record(self, fields: dict[str, Any]) -> int:
        pay_method_id = self._next("paymethods")
        expiry = str(fields.get("expiry", ""))
        self.data["paymethods"][str(pay_method_id)] = {
            "id": pay_method_id,
            "clientid": int(fields["clientid"]),
            "type": str(fields["type"]),
            "description": str(fields.get("description", "")),
            "gateway_name": str(fields.get("gateway", "")),
            "card_last_four": str(fields.get("last_four", "")),
            "expiry_date": f"{expiry[:2]}/{expiry[2:]}" if len(expiry) == 4 else "",
            "bank_name": str(fields.get("bank_name", "")),
            "last_updated": self._now(),
        }
        return pay_method_id

    # -- Dispatch ----------------------------------------------------------------------------

    def call(self, action: str, params: Params) -> dict[str, Any]:
        handler = self._actions().get(action.lower())
        if handler is None:
            raise WhmcsError("Command Not Found")
        return {"result": "success", **handler(params)}

    def _actions(self) -> dict[str, Callable[[Params], dict[str, Any]]]:
        return {
            "getclientsdetails": self.get_clients_details,
            "addclient": self.add_client,
            "getpaymethods": self.get_pay_methods,
            "addpaymethod": self.add_pay_method,
            "deletepaymethod": self.delete_pay_method,
            "getpaymentmethods": self.get_payment_methods,
            "getproducts": self.get_products,
            "addproduct": self.add_product,
            "addorder": self.add_order,
            "acceptorder": self.accept_order,
            "cancelorder": self.cancel_order,
            "getorders": self.get_orders,
            "getclientsproducts": self.get_clients_products,
            "updateclientproduct": self.update_client_product,
            "getinvoices": self.get_invoices,
        }

    def _client(self, client_id: str, message: str = "Client Not Found") -> dict[str, Any]:
        client = self.data["clients"].get(client_id.strip())
        if client is None:
            raise WhmcsError(message)
        return client

    def _required_client(self, p: Params, message: str = "Client Not Found") -> dict[str, Any]:
        """The client named by `clientid`, which the action cannot do without."""
        if not p.get("clientid").strip():
            raise WhmcsError("Client ID Is Required")
        return self._client(p.get("clientid"), message)

    # -- Clients -----------------------------------------------------------------------------

    def get_clients_details(self, p: Params) -> dict[str, Any]:
        if p.get("clientid"):
            client = self._client(p.get("clientid"))
        else:
            email = p.get("email").lower()
            matches = [c for c in self.data["clients"].values() if email and c["email"] == email]
            if not matches:
                raise WhmcsError("Client Not Found")
            client = matches[0]
        details = {
            "userid": client["id"],
            "client_id": client["id"],
            **client,
            "fullname": f"{client['firstname']} {client['lastname']}".strip(),
            "countrycode": client["country"],
            "currency_code": self.config["currency"],
        }
        reply: dict[str, Any] = {
            "userid": client["id"],
            "id": client["id"],
            "firstname": client["firstname"],
            "lastname": client["lastname"],
            "email": client["email"],
            "status": client["status"],
            "client": details,
        }
        if p.flag("stats"):
            orders = [o for o in self.data["orders"].values() if o["userid"] == client["id"]]
            services = [s for s in self.data["services"].values() if s["clientid"] == client["id"]]
            reply["stats"] = {
                "numorders": str(len(orders)),
                "productsnumactive": sum(s["status"] == "Active" for s in services),
                "productsnumtotal": len(services),
            }
        return reply

    def add_client(self, p: Params) -> dict[str, Any]:
        for field, label in (
            ("firstname", "first name"),
            ("lastname", "last name"),
            ("email", "email address"),
        ):
            if not p.get(field).strip():
                raise WhmcsError(f"You did not enter your {label}")
        email = p.get("email").strip().lower()
        if any(c["email"] == email for c in self.data["clients"].values()):
            raise WhmcsError("A user already exists with that email address")
        fields = {key: value for key, value in p.items}
        fields["email"] = email
        fields.pop("status", None)
        return {"clientid": self._add_client(fields)}

    # -- Pay methods and gateways ------------------------------------------------------------

    def get_pay_methods(self, p: Params) -> dict[str, Any]:
        """A client's stored pay methods, each with its `type` as WHMCS reports it.

        Cards and bank accounts a gateway (Stripe, …) holds are `RemoteCreditCard` and
        `RemoteBankAccount`; locally stored ones `CreditCard` and `BankAccount`. The `type` filter
        accepts only the two families: `CreditCard` lists local and remote cards alike,
        `BankAccount` local and remote bank accounts, as WHMCS groups them.
        """
        client = self._required_client(p)
        wanted = p.get("type")
        if wanted and wanted not in PAY_METHOD_FILTERS:
            raise WhmcsError("Invalid Pay Method Type. Should be 'BankAccount' or 'CreditCard'")
        kinds = PAY_METHOD_FILTERS.get(wanted, PAY_METHOD_TYPES)
        methods = [
            {key: value for key, value in m.items() if key != "clientid"}
            for m in self.data["paymethods"].values()
            if m["clientid"] == client["id"] and m["type"] in kinds
        ]
        if p.get("paymethodid"):
            methods = [m for m in methods if str(m["id"]) == p.get("paymethodid")]
        return {"clientid": client["id"], "paymethods": methods}

    def add_pay_method(self, p: Params) -> dict[str, Any]:
        client = self._required_client(p)
        kind = p.get("type", "CreditCard")
        if kind not in PAY_METHOD_TYPES:
            raise WhmcsError(
                f"Invalid Pay Method Type. Should be one of: {', '.join(PAY_METHOD_TYPES)}"
            )
        gateway = p.get("gateway_module")
        if kind.startswith("Remote") and gateway not in self._gateway_modules():
            raise WhmcsError("Invalid Gateway Module Name")
        card = p.get("card_number").replace(" ", "")
        if kind == "CreditCard" and not (card.isdigit() and 12 <= len(card) <= 19):
            raise WhmcsError("Invalid Card Number")
        pay_method_id = self._add_pay_method_record(
            {
                "clientid": client["id"],
                "type": kind,
                "description": p.get("description"),
                "gateway": gateway,
                "last_four": card[-4:] if card else p.get("card_last_four"),
                "expiry": p.get("card_expiry"),
                "bank_name": p.get("bank_name"),
            }
        )
        return {"clientid": client["id"], "paymethodid": pay_method_id}

    def delete_pay_method(self, p: Params) -> dict[str, Any]:
        client = self._required_client(p)
        method = self.data["paymethods"].get(p.get("paymethodid"))
        if method is None or method["clientid"] != client["id"]:
            raise WhmcsError("Invalid Pay Method ID")
        del self.data["paymethods"][str(method["id"])]
        return {"paymethodid": method["id"]}

    def _gateway_modules(self) -> list[str]:
        return [g["module"] for g in self.gateways]

    def get_payment_methods(self, p: Params) -> dict[str, Any]:
        return {
            "totalresults": len(self.gateways),
            "paymentmethods": {"paymentmethod": [dict(g) for g in self.gateways]},
        }

    # -- Products ----------------------------------------------------------------------------

    def get_products(self, p: Params) -> dict[str, Any]:
        wanted = {value.strip() for value in p.get("pid").split(",") if value.strip()}
        products = [
            self._product_view(product)
            for pid, product in self.data["products"].items()
            if (not wanted or pid in wanted)
            and (not p.get("gid") or str(product["gid"]) == p.get("gid"))
        ]
        return {"totalresults": len(products), "products": {"product": products}}

    def _product_view(self, product: dict[str, Any]) -> dict[str, Any]:
        group = self.data["groups"].get(str(product["gid"]), {"name": ""})
        monthly = product["pricing"]["monthly"]
        return {
            "pid": product["pid"],
            "gid": product["gid"],
            "type": product["type"],
            "name": product["name"],
            "groupname": group["name"],
            "description": product["description"],
            "module": product["module"],
            "paytype": product["paytype"],
            "pricing": {
                self.config["currency"]: {
                    "prefix": "¥" if self.config["currency"] == "JPY" else "",
                    "suffix": "",
                    "msetupfee": product["pricing"]["msetupfee"],
                    "monthly": monthly,
                    "quarterly": "-1.00",
                    "semiannually": "-1.00",
                    "annually": "-1.00",
                    "biennially": "-1.00",
                    "triennially": "-1.00",
                }
            },
            "customfields": {
                "customfield": [
                    {
                        "id": f["id"],
                        "name": f["name"],
                        "description": "",
                        "required": "",
                        "adminonly": "",
                        "options": "",
                    }
                    for f in product["customfields"]
                ]
            },
            "configoptions": {"configoption": []},
        }

    def add_product(self, p: Params) -> dict[str, Any]:
        if not p.get("name").strip():
            raise WhmcsError("You must supply a name for the product")
        if p.get("gid") not in self.data["groups"]:
            raise WhmcsError("You must supply a valid Product Group ID")
        monthly = p.get("pricing[1][monthly]") or p.get("monthly") or "0.00"
        try:
            monthly = f"{float(monthly):.2f}"
        except ValueError as exc:
            raise WhmcsError("Invalid pricing") from exc
        pid = self._add_product(
            p.get("name").strip(),
            int(p.get("gid")),
            {"monthly": monthly},
            self.config["product_custom_fields"],
        )
        return {"pid": pid}

    # -- Orders ------------------------------------------------------------------------------

    def add_order(self, p: Params) -> dict[str, Any]:
        client = self._required_client(p, "Client ID Not Found")
        if client["status"] == "Closed":
            raise WhmcsError("Unable to add order when client status is Closed")
        gateway = p.get("paymentmethod")
        if gateway not in self._gateway_modules():
            raise WhmcsError(
                f"Invalid Payment Method. Valid options include {','.join(self._gateway_modules())}"
            )
        items = self._order_items(p)
        if not items:
            raise WhmcsError("No items added to cart so order cannot proceed")
        order_id = self._next("orders")
        service_ids: list[int] = []
        total = 0.0
        for product, cycle, price, fields, domain in items:
            service_id = self._next("services")
            service_ids.append(service_id)
            total += float(price)
            self.data["services"][str(service_id)] = {
                "id": service_id,
                "clientid": client["id"],
                "orderid": order_id,
                "pid": product["pid"],
                "regdate": self._today(),
                "name": product["name"],
                "groupname": self.data["groups"].get(str(product["gid"]), {"name": ""})["name"],
                "domain": domain,
                "status": "Pending",
                "firstpaymentamount": price,
                "recurringamount": price,
                "paymentmethod": gateway,
                "billingcycle": cycle,
                "nextduedate": self._today(),
                "notes": "",
                "customfields": fields,
            }
        amount = f"{total:.2f}"
        invoice_id = 0
        if not p.flag("noinvoice"):
            invoice_id = self._add_invoice(client, gateway, amount)
        self.data["orders"][str(order_id)] = {
            "id": order_id,
            "ordernum": str(self.random.randrange(10**9, 10**10)),
            "userid": client["id"],
            "date": self._now(),
            "amount": amount,
            "paymentmethod": gateway,
            "invoiceid": invoice_id,
            "status": "Pending",
            "ipaddress": p.get("clientip"),
            "notes": "",
            "promocode": p.get("promocode"),
            "serviceids": service_ids,
        }
        return {
            "orderid": str(order_id),
            "serviceids": ",".join(str(s) for s in service_ids),
            "addonids": "",
            "domainids": "",
            # "0" when `noinvoice` kept WHMCS from raising one.
            "invoiceid": str(invoice_id),
        }

    def _order_items(self, p: Params) -> list[tuple[dict[str, Any], str, str, dict[str, str], str]]:
        # Each line's fields go by the index of its `pid[n]`, as PHP keys them (a sparse array
        # keeps its indexes). `domain[n]` is stored on the service as given.
        pids = p.keyed("pid")
        cycles, overrides = p.keyed("billingcycle"), p.keyed("priceoverride")
        encoded_fields = p.keyed("customfields")
        quantities = p.keyed("qty")
        domains = p.keyed("domain")
        items: list[tuple[dict[str, Any], str, str, dict[str, str], str]] = []
        for index, pid in pids.items():
            product = self.data["products"].get(pid.strip())
            # WHMCS silently skips a product id it does not know; the cart may end up empty.
            if product is None:
                continue
            cycle = (cycles.get(index, "").strip() or "monthly").lower()
            if cycle not in BILLING_CYCLES:
                raise WhmcsError("Invalid Billing Cycle Requested")
            override = overrides.get(index, "").strip()
            price = override or product["pricing"]["monthly"]
            try:
                price = f"{float(price):.2f}"
            except ValueError as exc:
                raise WhmcsError("Invalid Price Override") from exc
            fields = self._custom_field_values(product, encoded_fields.get(index, "").strip())
            quantity = quantities.get(index, "").strip()
            count = int(quantity) if quantity and quantity.isdigit() and int(quantity) > 0 else 1
            domain = domains.get(index, "").strip()
            items.extend((product, cycle, price, dict(fields), domain) for _ in range(count))
        return items

    def _custom_field_values(self, product: dict[str, Any], encoded: str) -> dict[str, str]:
        values = {str(f["id"]): "" for f in product["customfields"]}
        if not encoded:
            return values
        try:
            decoded = unserialize(base64.b64decode(encoded, validate=True))
        except (binascii.Error, PhpDataError) as exc:
            raise WhmcsError("Invalid custom fields data") from exc
        if not isinstance(decoded, dict):
            raise WhmcsError("Invalid custom fields data")
        for key, value in decoded.items():
            # Ids of fields the product does not have are ignored, as WHMCS does.
            if str(key) in values:
                values[str(key)] = "" if value is None else str(value)
        return values

    def _add_invoice(self, client: dict[str, Any], gateway: str, amount: str) -> int:
        invoice_id = self._next("invoices")
        self.data["invoices"][str(invoice_id)] = {
            "id": invoice_id,
            "userid": client["id"],
            "date": self._today(),
            "duedate": self._today(),
            "datepaid": "0000-00-00 00:00:00",
            "subtotal": amount,
            "total": amount,
            "status": "Unpaid" if float(amount) > 0 else "Paid",
            "paymentmethod": gateway,
        }
        return invoice_id

    def _pending_order(self, order_id: str) -> dict[str, Any]:
        order = self.data["orders"].get(order_id.strip())
        if order is None or order["status"] != "Pending":
            raise WhmcsError("Order ID not found or Status not Pending")
        return order

    def accept_order(self, p: Params) -> dict[str, Any]:
        order = self._pending_order(p.get("orderid"))
        order["status"] = "Active"
        for service_id in order["serviceids"]:
            self.data["services"][str(service_id)]["status"] = "Active"
        return {}

    def cancel_order(self, p: Params) -> dict[str, Any]:
        order = self._pending_order(p.get("orderid"))
        order["status"] = "Cancelled"
        for service_id in order["serviceids"]:
            self.data["services"][str(service_id)]["status"] = "Cancelled"
        invoice = self.data["invoices"].get(str(order["invoiceid"]))
        if invoice is not None and invoice["status"] == "Unpaid":
            invoice["status"] = "Cancelled"
        return {}

    def get_orders(self, p: Params) -> dict[str, Any]:
        orders = [
            o
            for o in self.data["orders"].values()
            if (not p.get("id") or str(o["id"]) == p.get("id"))
            and (not p.get("userid") or str(o["userid"]) == p.get("userid"))
            and (not p.get("status") or o["status"] == p.get("status"))
        ]
        orders.sort(key=lambda o: -int(o["id"]))
        start, page = self._page(p, orders)
        return {
            "totalresults": len(orders),
            "startnumber": start,
            "numreturned": len(page),
            "orders": {"order": [self._order_view(o) for o in page]},
        }

    def _order_view(self, order: dict[str, Any]) -> dict[str, Any]:
        invoice = self.data["invoices"].get(str(order["invoiceid"]))
        gateway_names = {g["module"]: g["displayname"] for g in self.gateways}
        lineitems = []
        for service_id in order["serviceids"]:
            service = self.data["services"][str(service_id)]
            lineitems.append(
                {
                    "type": "product",
                    "relid": service_id,
                    "producttype": "Other",
                    "product": service["name"],
                    "domain": "",
                    "billingcycle": service["billingcycle"].capitalize(),
                    "amount": service["firstpaymentamount"],
                    "status": service["status"],
                }
            )
        return {
            "id": order["id"],
            "ordernum": int(order["ordernum"]),
            "userid": order["userid"],
            "contactid": 0,
            "date": order["date"],
            "amount": order["amount"],
            "paymentmethod": order["paymentmethod"],
            "paymentmethodname": gateway_names.get(order["paymentmethod"], ""),
            "invoiceid": order["invoiceid"],
            "status": order["status"],
            "paymentstatus": invoice["status"] if invoice else "",
            "ipaddress": order["ipaddress"],
            "promocode": order["promocode"],
            "notes": order["notes"],
            "lineitems": {"lineitem": lineitems},
        }

    # -- Services ----------------------------------------------------------------------------

    def get_clients_products(self, p: Params) -> dict[str, Any]:
        # `clientid` is optional here: without it WHMCS lists every client's services.
        if p.get("clientid"):
            self._client(p.get("clientid"))
        # A domain matches exactly, without regard to case (MySQL's default collation).
        domain = (p.get("domain") or "").strip().casefold()
        services = [
            s
            for s in self.data["services"].values()
            if (not p.get("clientid") or str(s["clientid"]) == p.get("clientid").strip())
            and (not p.get("serviceid") or str(s["id"]) == p.get("serviceid"))
            and (not p.get("pid") or str(s["pid"]) == p.get("pid"))
            and (not domain or s["domain"].casefold() == domain)
        ]
        start, page = self._page(p, services)
        return {
            "clientid": p.get("clientid") or None,
            "serviceid": p.get("serviceid") or None,
            "pid": p.get("pid") or None,
            "domain": p.get("domain") or None,
            "totalresults": len(services),
            "startnumber": start,
            "numreturned": len(page),
            "products": {"product": [self._service_view(s) for s in page]},
        }

    def _service_view(self, service: dict[str, Any]) -> dict[str, Any]:
        product = self.data["products"].get(str(service["pid"]), {"customfields": []})
        names = {str(f["id"]): f["name"] for f in product["customfields"]}
        gateway_names = {g["module"]: g["displayname"] for g in self.gateways}
        return {
            "id": str(service["id"]),
            "clientid": str(service["clientid"]),
            "orderid": str(service["orderid"]),
            "pid": str(service["pid"]),
            "regdate": service["regdate"],
            "name": service["name"],
            "translated_name": service["name"],
            "groupname": service["groupname"],
            "domain": service["domain"],
            "status": service["status"],
            "firstpaymentamount": service["firstpaymentamount"],
            "recurringamount": service["recurringamount"],
            "paymentmethod": service["paymentmethod"],
            "paymentmethodname": gateway_names.get(service["paymentmethod"], ""),
            "billingcycle": service["billingcycle"].capitalize(),
            "nextduedate": service["nextduedate"],
            "notes": service["notes"],
            "customfields": {
                "customfield": [
                    {
                        "id": str(field_id),
                        "name": names.get(field_id, ""),
                        "translated_name": names.get(field_id, ""),
                        "value": value,
                    }
                    for field_id, value in service["customfields"].items()
                ]
            },
            "configoptions": {"configoption": []},
        }

    def update_client_product(self, p: Params) -> dict[str, Any]:
        service = self.data["services"].get(p.get("serviceid").strip())
        if service is None:
            raise WhmcsError("Service ID Not Found")
        if p.has("status"):
            status = p.get("status")
            allowed = ("Pending", "Active", "Suspended", "Terminated", "Cancelled", "Fraud")
            if status not in allowed:
                raise WhmcsError("Invalid Status")
            service["status"] = status
        if p.has("notes"):
            service["notes"] = p.get("notes")
        if p.get("customfields"):
            product = self.data["products"][str(service["pid"])]
            updates = self._custom_field_values(product, p.get("customfields"))
            sent = unserialize(base64.b64decode(p.get("customfields")))
            service["customfields"].update(
                {key: value for key, value in updates.items() if _has_key(sent, key)}
            )
        return {"serviceid": service["id"]}

    # -- Invoices ----------------------------------------------------------------------------

    def get_invoices(self, p: Params) -> dict[str, Any]:
        invoices = [
            i
            for i in self.data["invoices"].values()
            if (not p.get("userid") or str(i["userid"]) == p.get("userid"))
            and (not p.get("status") or i["status"] == p.get("status"))
        ]
        start, page = self._page(p, invoices)
        return {
            "totalresults": len(invoices),
            "startnumber": start,
            "numreturned": len(page),
            "invoices": {"invoice": [self._invoice_view(i) for i in page]},
        }

    def _invoice_view(self, invoice: dict[str, Any]) -> dict[str, Any]:
        client = self.data["clients"].get(str(invoice["userid"]), {})
        return {
            "id": invoice["id"],
            "userid": invoice["userid"],
            "firstname": client.get("firstname", ""),
            "lastname": client.get("lastname", ""),
            "companyname": client.get("companyname", ""),
            "invoicenum": "",
            "date": invoice["date"],
            "duedate": invoice["duedate"],
            "datepaid": invoice["datepaid"],
            "subtotal": invoice["subtotal"],
            "credit": "0.00",
            "tax": "0.00",
            "tax2": "0.00",
            "total": invoice["total"],
            "status": invoice["status"],
            "paymentmethod": invoice["paymentmethod"],
            "notes": "",
            "currencycode": self.config["currency"],
        }

    # -- Paging ------------------------------------------------------------------------------

    def _page(self, p: Params, records: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
        start = 0 if self.config["ignore_limitstart"] else _digits(p, "limitstart", 0)
        limit = _digits(p, "limitnum", 25)
        return start, records[start : start + limit]

    # -- Authentication ----------------------------------------------------------------------

    def credentials_valid(self, identifier: str, secret: str) -> bool:
        if identifier != self.config["identifier"]:
            return False
        expected = str(self.config["secret"])
        # The username/password form of the API sends the password as its MD5 hex digest.
        md5 = hashlib.md5(expected.encode(), usedforsecurity=False).hexdigest()
        return secret in (expected, md5)


def _checked_pay_method(spec: Any, clients: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A seeded pay method: `{"clientid", "type", "gateway", "last_four", "expiry", …}`."""
    if not isinstance(spec, dict) or str(spec.get("clientid")) not in clients:
        raise ValueError("each pay method needs the 'clientid' of a seeded client")
    if spec.get("type") not in PAY_METHOD_TYPES:
        raise ValueError(f"pay method 'type' must be one of {', '.join(PAY_METHOD_TYPES)}")
    return dict(spec)


def _has_key(decoded: Any, key: str) -> bool:
    return isinstance(decoded, dict) and any(str(k) == key for k in decoded)


def _digits(p: Params, name: str, default: int) -> int:
    value = p.get(name).strip()
    return int(value) if value.isascii() and value.isdigit() else default
