"""WHMCS emulator: products, the order life cycle, services and invoices, over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from emulators.whmcs import demo
from tests.fixtures.whmcs_emulator import WhmcsEmulatorHandle
from tests.integration.emulators._whmcs import call, custom_fields


@pytest.fixture
def whmcs(whmcs_emulator: WhmcsEmulatorHandle) -> WhmcsEmulatorHandle:
    whmcs_emulator.seed_demo()
    return whmcs_emulator


def order_sim_and_vpn(whmcs: WhmcsEmulatorHandle, **extra: str) -> dict[str, Any]:
    return call(
        whmcs,
        "AddOrder",
        {
            "clientid": demo.CLIENT_WITH_CARD,
            "paymentmethod": "stripe",
            "pid[0]": demo.PRODUCT_SIM_DATA_3GB,
            "pid[1]": demo.PRODUCT_VPN_BASIC,
            "billingcycle[0]": "monthly",
            "billingcycle[1]": "monthly",
            "customfields[0]": custom_fields({1: "802000000000001AAA"}),
            "customfields[1]": custom_fields({5: "802000000000002AAA"}),
            "noemail": "true",
            **extra,
        },
    )


def test_get_products_lists_the_demo_catalogue_with_custom_fields(
    whmcs: WhmcsEmulatorHandle,
) -> None:
    reply = call(whmcs, "GetProducts")
    products = reply["products"]["product"]
    assert reply["totalresults"] == 5
    assert [p["pid"] for p in products] == [1, 2, 3, 4, 5]
    esim = call(whmcs, "GetProducts", pid=demo.PRODUCT_ESIM_DATA_20GB)["products"]["product"][0]
    assert esim["name"] == "eSIM Data 20GB"
    assert esim["pricing"]["JPY"]["monthly"] == "2480.00"
    fields = [(f["id"], f["name"]) for f in esim["customfields"]["customfield"]]
    assert fields == [(3, "Salesforce Order Item ID"), (8, "Phone Number"), (9, "EID")]


def test_add_product_gets_the_order_item_custom_field(whmcs: WhmcsEmulatorHandle) -> None:
    added = call(whmcs, "AddProduct", name="SIM Data 50GB", gid=1, paytype="recurring")
    assert added == {"result": "success", "pid": 6}
    product = call(whmcs, "GetProducts", pid=6)["products"]["product"][0]
    assert [f["name"] for f in product["customfields"]["customfield"]] == [
        "Salesforce Order Item ID"
    ]
    assert call(whmcs, "AddProduct", name="x", gid=99)["message"] == (
        "You must supply a valid Product Group ID"
    )


def test_add_order_creates_a_pending_order_services_and_an_unpaid_invoice(
    whmcs: WhmcsEmulatorHandle,
) -> None:
    added = order_sim_and_vpn(whmcs)
    assert added == {
        "result": "success",
        "orderid": "1",
        "serviceids": "1,2",
        "addonids": "",
        "domainids": "",
        "invoiceid": "1",
    }
    [order] = call(whmcs, "GetOrders", id=1)["orders"]["order"]
    assert (order["id"], order["userid"], order["status"], order["paymentstatus"]) == (
        1,
        1,
        "Pending",
        "Unpaid",
    )
    assert order["amount"] == "1540.00"
    assert [i["relid"] for i in order["lineitems"]["lineitem"]] == [1, 2]
    services = call(whmcs, "GetClientsProducts", clientid=1)["products"]["product"]
    assert [(s["id"], s["orderid"], s["status"]) for s in services] == [
        ("1", "1", "Pending"),
        ("2", "1", "Pending"),
    ]
    sim_fields = services[0]["customfields"]["customfield"]
    assert {"id": "1", "name": "Salesforce Order Item ID", "value": "802000000000001AAA"} in [
        {key: f[key] for key in ("id", "name", "value")} for f in sim_fields
    ]
    [invoice] = call(whmcs, "GetInvoices", userid=1)["invoices"]["invoice"]
    assert (invoice["id"], invoice["status"], invoice["total"]) == (1, "Unpaid", "1540.00")


def test_a_services_domain_is_set_by_add_order_and_filters_get_clients_products(
    whmcs: WhmcsEmulatorHandle,
) -> None:
    order_sim_and_vpn(whmcs, **{"domain[1]": "802000000000002AAA"})
    reply = call(whmcs, "GetClientsProducts", clientid=1, domain="802000000000002aaa")
    # Exactly that service (MySQL compares without regard to case); the other has no domain.
    assert [(s["id"], s["domain"]) for s in reply["products"]["product"]] == [
        ("2", "802000000000002AAA")
    ]
    assert reply["totalresults"] == 1
    none = call(whmcs, "GetClientsProducts", clientid=1, domain="802000000000009AAA")
    assert none["totalresults"] == 0


def test_add_order_with_noinvoice_makes_no_invoice(whmcs: WhmcsEmulatorHandle) -> None:
    added = order_sim_and_vpn(whmcs, noinvoice="true")
    assert added["invoiceid"] == "0"
    assert call(whmcs, "GetInvoices", userid=1)["invoices"]["invoice"] == []


@pytest.mark.parametrize(("value", "invoiced"), [("false", False), ("no", False), ("0", True)])
def test_boolean_parameters_follow_php_truthiness(
    whmcs: WhmcsEmulatorHandle, value: str, invoiced: bool
) -> None:
    added = order_sim_and_vpn(whmcs, noinvoice=value)
    assert (added["invoiceid"] != "0") is invoiced
    stats = call(whmcs, "GetClientsDetails", clientid=demo.CLIENT_WITH_CARD, stats="false")
    assert "stats" in stats


def test_a_retried_add_order_creates_a_second_order(whmcs: WhmcsEmulatorHandle) -> None:
    order_sim_and_vpn(whmcs)
    second = order_sim_and_vpn(whmcs)
    assert second["orderid"] == "2"
    assert call(whmcs, "GetOrders", userid=1)["totalresults"] == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"clientid": 99, "paymentmethod": "stripe", "pid[0]": 1}, "Client ID Not Found"),
        (
            {"clientid": 1, "paymentmethod": "cash", "pid[0]": 1},
            "Invalid Payment Method. Valid options include banktransfer,stripe",
        ),
        (
            {"clientid": 1, "paymentmethod": "stripe"},
            "No items added to cart so order cannot proceed",
        ),
        (
            {"clientid": 1, "paymentmethod": "stripe", "pid[0]": 404},
            "No items added to cart so order cannot proceed",
        ),
        (
            {"clientid": demo.CLIENT_CLOSED, "paymentmethod": "stripe", "pid[0]": 1},
            "Unable to add order when client status is Closed",
        ),
    ],
)
def test_add_order_refusals(
    whmcs: WhmcsEmulatorHandle, fields: dict[str, object], message: str
) -> None:
    assert call(whmcs, "AddOrder", fields) == {"result": "error", "message": message}
    assert call(whmcs, "GetOrders")["totalresults"] == 0


def test_accept_order_activates_order_and_services(whmcs: WhmcsEmulatorHandle) -> None:
    order_sim_and_vpn(whmcs)
    assert call(whmcs, "AcceptOrder", orderid=1, autosetup="true") == {"result": "success"}
    assert call(whmcs, "GetOrders", id=1)["orders"]["order"][0]["status"] == "Active"
    services = call(whmcs, "GetClientsProducts", clientid=1)["products"]["product"]
    assert {s["status"] for s in services} == {"Active"}


def test_accept_order_on_a_non_pending_or_unknown_order_is_refused(
    whmcs: WhmcsEmulatorHandle,
) -> None:
    order_sim_and_vpn(whmcs)
    call(whmcs, "AcceptOrder", orderid=1)
    refusal = {"result": "error", "message": "Order ID not found or Status not Pending"}
    assert call(whmcs, "AcceptOrder", orderid=1) == refusal
    assert call(whmcs, "AcceptOrder", orderid=42) == refusal


def test_cancel_order_cancels_order_services_and_invoice(whmcs: WhmcsEmulatorHandle) -> None:
    order_sim_and_vpn(whmcs)
    assert call(whmcs, "CancelOrder", orderid=1, cancelsub="true") == {"result": "success"}
    assert call(whmcs, "GetOrders", status="Cancelled")["totalresults"] == 1
    services = call(whmcs, "GetClientsProducts", clientid=1)["products"]["product"]
    assert {s["status"] for s in services} == {"Cancelled"}
    assert call(whmcs, "GetInvoices", userid=1, status="Cancelled")["numreturned"] == 1
    assert call(whmcs, "CancelOrder", orderid=1)["message"] == (
        "Order ID not found or Status not Pending"
    )


def test_get_orders_pages_newest_first(whmcs: WhmcsEmulatorHandle) -> None:
    for _ in range(3):
        order_sim_and_vpn(whmcs)
    page = call(whmcs, "GetOrders", limitstart=1, limitnum=1)
    assert (page["totalresults"], page["startnumber"], page["numreturned"]) == (3, 1, 1)
    assert page["orders"]["order"][0]["id"] == 2


def test_get_clients_products_by_service_and_for_unknown_client(
    whmcs: WhmcsEmulatorHandle,
) -> None:
    order_sim_and_vpn(whmcs)
    one = call(whmcs, "GetClientsProducts", serviceid=2)
    assert one["totalresults"] == 1
    assert one["products"]["product"][0]["pid"] == str(demo.PRODUCT_VPN_BASIC)
    assert call(whmcs, "GetClientsProducts", clientid=3)["products"]["product"] == []
    assert call(whmcs, "GetClientsProducts", clientid=99)["message"] == "Client Not Found"


def test_update_client_product_changes_status_notes_and_custom_fields(
    whmcs: WhmcsEmulatorHandle,
) -> None:
    order_sim_and_vpn(whmcs)
    updated = call(
        whmcs,
        "UpdateClientProduct",
        serviceid=1,
        status="Suspended",
        notes="SIM lost",
        customfields=custom_fields({6: "08012345678"}),
    )
    assert updated == {"result": "success", "serviceid": 1}
    service = call(whmcs, "GetClientsProducts", serviceid=1)["products"]["product"][0]
    assert (service["status"], service["notes"]) == ("Suspended", "SIM lost")
    values = {f["id"]: f["value"] for f in service["customfields"]["customfield"]}
    assert values == {"1": "802000000000001AAA", "6": "08012345678"}
    assert call(whmcs, "UpdateClientProduct", serviceid=99)["message"] == "Service ID Not Found"


def test_order_numbers_are_the_same_under_the_same_seed(whmcs: WhmcsEmulatorHandle) -> None:
    def first_ordernum() -> str:
        whmcs.http.post(f"{whmcs.control_url}/reset", json={"seed": 5}).raise_for_status()
        whmcs.seed_demo()
        order_sim_and_vpn(whmcs)
        return str(call(whmcs, "GetOrders", id=1)["orders"]["order"][0]["ordernum"])

    assert first_ordernum() == first_ordernum()


def test_custom_field_values_round_trip_multibyte_and_php_syntax(
    whmcs: WhmcsEmulatorHandle,
) -> None:
    value = '山田 "太郎"; s:3:"x";}'
    call(
        whmcs,
        "AddOrder",
        {
            "clientid": 1,
            "paymentmethod": "stripe",
            "pid[]": demo.PRODUCT_ESIM_DATA_20GB,
            "customfields[]": custom_fields({3: value, 9: "89049032000000000000000000000001"}),
        },
    )
    service = call(whmcs, "GetClientsProducts", clientid=1)["products"]["product"][0]
    values = {f["name"]: f["value"] for f in service["customfields"]["customfield"]}
    assert values == {
        "Salesforce Order Item ID": value,
        "Phone Number": "",
        "EID": "89049032000000000000000000000001",
    }


def test_malformed_custom_fields_are_refused(whmcs: WhmcsEmulatorHandle) -> None:
    reply = call(
        whmcs,
        "AddOrder",
        {"clientid": 1, "paymentmethod": "stripe", "pid[0]": 1, "customfields[0]": "!!notbase64"},
    )
    assert reply == {"result": "error", "message": "Invalid custom fields data"}


def test_reply_id_types_follow_each_actions_documentation(whmcs: WhmcsEmulatorHandle) -> None:
    added = order_sim_and_vpn(whmcs)
    # AddOrder and GetClientsProducts answer ids as strings; GetOrders and GetInvoices as
    # integers. A client that compares them as they come would never match the two.
    assert [type(added[key]) for key in ("orderid", "invoiceid", "serviceids")] == [str] * 3
    service = call(whmcs, "GetClientsProducts", clientid=1)["products"]["product"][0]
    assert [type(service[key]) for key in ("id", "clientid", "orderid", "pid")] == [str] * 4
    order = call(whmcs, "GetOrders", id=added["orderid"])["orders"]["order"][0]
    assert [type(order[key]) for key in ("id", "userid", "invoiceid")] == [int] * 3
    assert order["id"] == int(added["orderid"]) == int(service["orderid"])
    invoice = call(whmcs, "GetInvoices", userid=1)["invoices"]["invoice"][0]
    assert [type(invoice[key]) for key in ("id", "userid")] == [int] * 2
    assert invoice["id"] == int(added["invoiceid"]) == order["invoiceid"]


PAGED = [
    ("GetOrders", {"userid": 1}, "orders", "order"),
    ("GetClientsProducts", {"clientid": 1}, "products", "product"),
    ("GetInvoices", {"userid": 1}, "invoices", "invoice"),
]


def five_single_item_orders(whmcs: WhmcsEmulatorHandle) -> None:
    for _ in range(5):
        reply = call(
            whmcs,
            "AddOrder",
            {"clientid": 1, "paymentmethod": "stripe", "pid[0]": demo.PRODUCT_VPN_BASIC},
        )
        assert reply["result"] == "success"


def page_ids(
    whmcs: WhmcsEmulatorHandle,
    action: str,
    fields: dict[str, object],
    keys: tuple[str, str],
    start: int,
) -> tuple[dict[str, Any], list[int]]:
    reply = call(whmcs, action, {**fields, "limitstart": start, "limitnum": 2})
    return reply, [int(item["id"]) for item in reply[keys[0]][keys[1]]]


@pytest.mark.parametrize(("action", "fields", "list_key", "item_key"), PAGED)
def test_paged_lists_honour_limitstart_and_limitnum(
    whmcs: WhmcsEmulatorHandle,
    action: str,
    fields: dict[str, object],
    list_key: str,
    item_key: str,
) -> None:
    five_single_item_orders(whmcs)
    seen: list[int] = []
    for start, size in ((0, 2), (2, 2), (4, 1), (6, 0)):
        reply, ids = page_ids(whmcs, action, fields, (list_key, item_key), start)
        assert int(reply["totalresults"]) == 5
        assert (reply["startnumber"], reply["numreturned"], len(ids)) == (start, size, size)
        seen += ids
    assert sorted(seen) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(("action", "fields", "list_key", "item_key"), PAGED)
def test_ignore_limitstart_answers_the_first_page_whatever_is_asked(
    whmcs: WhmcsEmulatorHandle,
    action: str,
    fields: dict[str, object],
    list_key: str,
    item_key: str,
) -> None:
    five_single_item_orders(whmcs)
    keys = (list_key, item_key)
    _, first = page_ids(whmcs, action, fields, keys, 0)
    config = whmcs.http.post(f"{whmcs.control_url}/config", json={"ignore_limitstart": True})
    assert config.json()["ignore_limitstart"] is True
    reply, later = page_ids(whmcs, action, fields, keys, 2)
    assert later == first
    assert (int(reply["totalresults"]), reply["startnumber"], reply["numreturned"]) == (5, 0, 2)
    whmcs.reset()
    assert whmcs.http.get(f"{whmcs.control_url}/config").json()["ignore_limitstart"] is False


def test_ignore_limitstart_takes_only_a_boolean(whmcs: WhmcsEmulatorHandle) -> None:
    reply = whmcs.http.post(f"{whmcs.control_url}/config", json={"ignore_limitstart": "yes"})
    assert (reply.status_code, reply.json()) == (
        400,
        {"error": "setting 'ignore_limitstart' must be a bool"},
    )
