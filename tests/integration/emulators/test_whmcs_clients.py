"""WHMCS emulator: clients, pay methods and gateways, with success and error shapes."""

from __future__ import annotations

import pytest

from emulators.whmcs import demo
from tests.fixtures.whmcs_emulator import WhmcsEmulatorHandle
from tests.integration.emulators._whmcs import call


@pytest.fixture
def whmcs(whmcs_emulator: WhmcsEmulatorHandle) -> WhmcsEmulatorHandle:
    whmcs_emulator.seed_demo()
    return whmcs_emulator


def test_get_clients_details_by_id_and_by_email(whmcs: WhmcsEmulatorHandle) -> None:
    by_id = call(whmcs, "GetClientsDetails", clientid=demo.CLIENT_WITH_CARD, stats="true")
    assert by_id["result"] == "success"
    assert by_id["client"]["id"] == 1
    assert by_id["client"]["firstname"] == "Taro"
    assert by_id["client"]["status"] == "Active"
    assert by_id["stats"]["numorders"] == "0"
    by_email = call(whmcs, "GetClientsDetails", email="hanako.suzuki@example.jp")
    assert by_email["client"]["id"] == demo.CLIENT_WITH_BANK_ACCOUNT


def test_get_clients_details_of_unknown_client_is_client_not_found(
    whmcs: WhmcsEmulatorHandle,
) -> None:
    assert call(whmcs, "GetClientsDetails", clientid=999) == {
        "result": "error",
        "message": "Client Not Found",
    }


def test_add_client_returns_its_id_and_refuses_a_duplicate_email(
    whmcs: WhmcsEmulatorHandle,
) -> None:
    fields = {"firstname": "Jiro", "lastname": "Sato", "email": "jiro@example.jp", "country": "JP"}
    added = call(whmcs, "AddClient", fields)
    assert added == {"result": "success", "clientid": 5}
    assert call(whmcs, "GetClientsDetails", clientid=5)["client"]["email"] == "jiro@example.jp"
    again = call(whmcs, "AddClient", fields)
    assert again == {"result": "error", "message": "A user already exists with that email address"}
    missing = call(whmcs, "AddClient", firstname="No", lastname="Mail")
    assert missing["message"] == "You did not enter your email address"


def test_get_pay_methods_reports_a_gateway_stored_card_as_remote_credit_card(
    whmcs: WhmcsEmulatorHandle,
) -> None:
    with_card = call(whmcs, "GetPayMethods", clientid=demo.CLIENT_WITH_CARD)
    assert with_card["clientid"] == 1
    [card] = with_card["paymethods"]
    assert (card["type"], card["gateway_name"], card["card_last_four"]) == (
        "RemoteCreditCard",
        "stripe",
        "4242",
    )
    assert card["expiry_date"] == "12/30"
    [local] = call(whmcs, "GetPayMethods", clientid=demo.CLIENT_CLOSED)["paymethods"]
    assert local["type"] == "CreditCard"
    [bank] = call(whmcs, "GetPayMethods", clientid=demo.CLIENT_WITH_BANK_ACCOUNT)["paymethods"]
    assert bank["type"] == "BankAccount"
    assert call(whmcs, "GetPayMethods", clientid=demo.CLIENT_WITHOUT_PAY_METHOD)["paymethods"] == []
    assert call(whmcs, "GetPayMethods", clientid=77)["message"] == "Client Not Found"


def seed_client_with_every_pay_method_type(whmcs: WhmcsEmulatorHandle) -> int:
    client = call(whmcs, "AddClient", firstname="Yui", lastname="Kato", email="yui@example.jp")
    client_id = int(client["clientid"])
    kinds = ["CreditCard", "RemoteCreditCard", "BankAccount", "RemoteBankAccount"]
    reply = whmcs.http.post(
        f"{whmcs.control_url}/seed",
        json={
            "records": {
                "paymethods": [
                    {"clientid": client_id, "type": kind, "gateway": "stripe"} for kind in kinds
                ]
            }
        },
    )
    assert reply.status_code == 200, reply.text
    return client_id


@pytest.mark.parametrize(
    ("wanted", "types"),
    [
        (None, ["CreditCard", "RemoteCreditCard", "BankAccount", "RemoteBankAccount"]),
        ("CreditCard", ["CreditCard", "RemoteCreditCard"]),
        ("BankAccount", ["BankAccount", "RemoteBankAccount"]),
    ],
)
def test_type_filter_lists_a_family_local_and_gateway_stored_alike(
    whmcs: WhmcsEmulatorHandle, wanted: str | None, types: list[str]
) -> None:
    client_id = seed_client_with_every_pay_method_type(whmcs)
    fields = {"clientid": client_id, **({"type": wanted} if wanted else {})}
    listed = call(whmcs, "GetPayMethods", fields)["paymethods"]
    assert [m["type"] for m in listed] == types


@pytest.mark.parametrize("wanted", ["RemoteCreditCard", "RemoteBankAccount", "creditcard", "Cash"])
def test_type_filter_accepts_only_bank_account_or_credit_card(
    whmcs: WhmcsEmulatorHandle, wanted: str
) -> None:
    reply = call(whmcs, "GetPayMethods", clientid=demo.CLIENT_WITH_CARD, type=wanted)
    assert reply == {
        "result": "error",
        "message": "Invalid Pay Method Type. Should be 'BankAccount' or 'CreditCard'",
    }


@pytest.mark.parametrize(
    ("action", "fields"),
    [
        ("GetPayMethods", {}),
        ("AddPayMethod", {"type": "CreditCard", "card_number": "4111111111111111"}),
        ("DeletePayMethod", {"paymethodid": 1}),
        ("AddOrder", {"paymentmethod": "stripe", "pid[0]": 1}),
    ],
)
@pytest.mark.parametrize("clientid", [None, "", " "])
def test_a_missing_client_id_is_client_id_is_required(
    whmcs: WhmcsEmulatorHandle, action: str, fields: dict[str, object], clientid: str | None
) -> None:
    sent = {**fields, **({"clientid": clientid} if clientid is not None else {})}
    assert call(whmcs, action, sent) == {"result": "error", "message": "Client ID Is Required"}


def test_seeded_pay_methods_must_name_a_known_type_and_client(
    whmcs: WhmcsEmulatorHandle,
) -> None:
    for method in ({"clientid": 1, "type": "Cash"}, {"clientid": 99, "type": "CreditCard"}):
        reply = whmcs.http.post(
            f"{whmcs.control_url}/seed", json={"records": {"paymethods": [method]}}
        )
        assert reply.status_code == 400, reply.text
        assert "pay method" in reply.json()["error"]


def test_add_then_delete_pay_method(whmcs: WhmcsEmulatorHandle) -> None:
    client = demo.CLIENT_WITHOUT_PAY_METHOD
    added = call(
        whmcs,
        "AddPayMethod",
        clientid=client,
        type="CreditCard",
        card_number="4111111111111111",
        card_expiry="0931",
        description="Company card",
    )
    assert added["result"] == "success"
    listed = call(whmcs, "GetPayMethods", clientid=client)["paymethods"]
    assert [(m["id"], m["card_last_four"], m["expiry_date"]) for m in listed] == [
        (added["paymethodid"], "1111", "09/31")
    ]
    deleted = call(whmcs, "DeletePayMethod", clientid=client, paymethodid=added["paymethodid"])
    assert deleted == {"result": "success", "paymethodid": added["paymethodid"]}
    assert call(whmcs, "GetPayMethods", clientid=client)["paymethods"] == []
    again = call(whmcs, "DeletePayMethod", clientid=client, paymethodid=added["paymethodid"])
    assert again == {"result": "error", "message": "Invalid Pay Method ID"}


def test_add_pay_method_stores_a_gateway_card_as_remote(whmcs: WhmcsEmulatorHandle) -> None:
    client = demo.CLIENT_WITHOUT_PAY_METHOD
    added = call(
        whmcs,
        "AddPayMethod",
        clientid=client,
        type="RemoteCreditCard",
        gateway_module="stripe",
        card_last_four="5555",
    )
    assert added["result"] == "success"
    [card] = call(whmcs, "GetPayMethods", clientid=client, type="CreditCard")["paymethods"]
    assert (card["type"], card["card_last_four"]) == ("RemoteCreditCard", "5555")


def test_add_pay_method_errors(whmcs: WhmcsEmulatorHandle) -> None:
    assert call(whmcs, "AddPayMethod", clientid=99, type="CreditCard")["message"] == (
        "Client Not Found"
    )
    bad_type = call(whmcs, "AddPayMethod", clientid=3, type="Cash")
    assert bad_type["message"].startswith("Invalid Pay Method Type")
    bad_card = call(whmcs, "AddPayMethod", clientid=3, type="CreditCard", card_number="12")
    assert bad_card["message"] == "Invalid Card Number"


def test_get_payment_methods_lists_the_gateways(whmcs: WhmcsEmulatorHandle) -> None:
    reply = call(whmcs, "GetPaymentMethods")
    assert reply["paymentmethods"]["paymentmethod"] == [
        {"module": "banktransfer", "displayname": "Bank Transfer"},
        {"module": "stripe", "displayname": "Credit Card"},
    ]
