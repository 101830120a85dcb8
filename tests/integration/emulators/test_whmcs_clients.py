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


def test_get_pay_methods_lists_a_card_and_none_for_a_client_without(
    whmcs: WhmcsEmulatorHandle,
) -> None:
    with_card = call(whmcs, "GetPayMethods", clientid=demo.CLIENT_WITH_CARD)
    assert with_card["clientid"] == 1
    [card] = with_card["paymethods"]
    assert (card["type"], card["gateway_name"], card["card_last_four"]) == (
        "CreditCard",
        "stripe",
        "4242",
    )
    assert card["expiry_date"] == "12/30"
    assert call(whmcs, "GetPayMethods", clientid=demo.CLIENT_WITHOUT_PAY_METHOD)["paymethods"] == []
    only_bank = call(whmcs, "GetPayMethods", clientid=demo.CLIENT_WITH_CARD, type="BankAccount")
    assert only_bank["paymethods"] == []
    assert call(whmcs, "GetPayMethods", clientid=77)["message"] == "Client Not Found"


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
