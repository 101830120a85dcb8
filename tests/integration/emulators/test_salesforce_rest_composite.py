"""The composite resource as the engine's one-call read-and-mark uses it: a query subrequest, a
PATCH that names the queried record (`@{ref.records[0].Id}`) and carries its own headers, and
what `allOrNone` does to the query's answer when the PATCH is refused."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle

V = "/services/data/v60.0"
MISSING_ORDER = "801000000000099AAA"


def _read_and_mark(
    order_id: str,
    fields: dict[str, Any],
    *,
    all_or_none: bool = False,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    soql = (
        "SELECT Id, Activation_Status__c, (SELECT Id FROM OrderItems) FROM Order"  # noqa: S608
        f" WHERE Id = '{order_id}'"
    )
    return {
        "allOrNone": all_or_none,
        "collateSubrequests": False,
        "compositeRequest": [
            {
                "method": "GET",
                "url": f"{V}/query/?q={quote(soql, safe='')}",
                "referenceId": "order",
            },
            {
                "method": "PATCH",
                "url": f"{V}/sobjects/Order/@{{order.records[0].Id}}",
                "referenceId": "activating",
                "body": fields,
                "httpHeaders": headers if headers is not None else {},
            },
        ],
    }


def _composite(sf: Any, body: dict[str, Any], **options: Any) -> dict[str, Any]:
    reply: dict[str, Any] = sf.restful("composite", method="POST", json=body, **options)
    return reply


def _activation_status(sf: Any, order_id: str) -> Any:
    record: dict[str, Any] = sf.restful(f"sobjects/Order/{order_id}")
    return record["Activation_Status__c"]


def _order_events(h: SalesforceEmulatorHandle) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = h.control("GET", "events?channel=/data/OrderChangeEvent")[
        "events"
    ]
    return events


def _api_calls(h: SalesforceEmulatorHandle) -> list[dict[str, Any]]:
    return [
        r
        for r in h.control("GET", "requests")["requests"]
        if r["path"].startswith("/services/data/")
    ]


def test_a_query_and_the_patch_it_names_run_in_order_as_one_call(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    order_id = ids["orders"]["internet"]
    sf = sf_emulator.client()
    sf_emulator.control("DELETE", "requests")
    reply = _composite(
        sf,
        _read_and_mark(
            order_id,
            {"Activation_Status__c": "Activating"},
            headers={"Sforce-Call-Options": "client=fulfil-test"},
        ),
    )
    read, mark = reply["compositeResponse"]
    assert (read["httpStatusCode"], mark["httpStatusCode"]) == (200, 204)
    # The read ran first: it saw the order as it was before the write.
    [record] = read["body"]["records"]
    assert record["Id"] == order_id and record["Activation_Status__c"] != "Activating"
    assert record["OrderItems"]["totalSize"] == 1
    # One request, one call against the allowance, whatever it held.
    assert [(r["method"], r["path"]) for r in _api_calls(sf_emulator)] == [
        ("POST", f"{V}/composite")
    ]
    assert _activation_status(sf, order_id) == "Activating"
    # The client named in the subrequest's own headers is the change's origin.
    [event] = _order_events(sf_emulator)
    header = event["data"]["payload"]["ChangeEventHeader"]
    assert header["recordIds"] == [order_id]
    assert header["changeOrigin"] == "com/salesforce/api/rest/60.0;client=fulfil-test"


def test_the_top_level_call_options_name_the_client_of_every_subrequest(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    _composite(
        sf_emulator.client(),
        _read_and_mark(ids["orders"]["esim"], {"Activation_Status__c": "Activating"}),
        headers={"Sforce-Call-Options": "client=fulfil-top"},
    )
    [event] = _order_events(sf_emulator)
    assert event["data"]["payload"]["ChangeEventHeader"]["changeOrigin"].endswith(
        ";client=fulfil-top"
    )


def test_a_patch_naming_a_record_the_query_did_not_find_is_not_run(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    sf_emulator.seed_demo()
    reply = _composite(
        sf_emulator.client(),
        _read_and_mark(MISSING_ORDER, {"Activation_Status__c": "Activating"}),
    )
    read, mark = reply["compositeResponse"]
    assert (read["httpStatusCode"], read["body"]["totalSize"]) == (200, 0)
    assert mark["httpStatusCode"] == 400
    [error] = mark["body"]
    assert error["errorCode"] == "PROCESSING_HALTED"
    assert "order.records[0].Id" in error["message"]
    assert _order_events(sf_emulator) == []


@pytest.mark.parametrize("all_or_none", [False, True])
def test_a_refused_patch_keeps_the_querys_answer_only_without_all_or_none(
    sf_emulator: SalesforceEmulatorHandle, all_or_none: bool
) -> None:
    ids = sf_emulator.seed_demo()
    order_id = ids["orders"]["internet"]
    reply = _composite(
        sf_emulator.client(),
        _read_and_mark(order_id, {"Activation_Status__c": "Half-done"}, all_or_none=all_or_none),
    )
    read, mark = reply["compositeResponse"]
    assert mark["httpStatusCode"] == 400
    assert mark["body"][0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    if all_or_none:
        # Every other subrequest answers that it was rolled back: the read is lost too.
        assert read["httpStatusCode"] == 400
        assert read["body"][0]["errorCode"] == "PROCESSING_HALTED"
    else:
        assert read["httpStatusCode"] == 200
        assert read["body"]["records"][0]["Id"] == order_id
    assert _order_events(sf_emulator) == []


@pytest.mark.parametrize("name", ["Content-Type", "Authorization", "accept"])
def test_a_subrequest_may_not_set_a_header_it_inherits(
    sf_emulator: SalesforceEmulatorHandle, name: str
) -> None:
    ids = sf_emulator.seed_demo()
    order_id = ids["orders"]["internet"]
    sf = sf_emulator.client()
    with pytest.raises(SalesforceMalformedRequest) as refused:
        _composite(
            sf,
            _read_and_mark(order_id, {"Activation_Status__c": "Activating"}, headers={name: "x"}),
        )
    content: Any = refused.value.content
    assert content[0]["errorCode"] == "INVALID_API_INPUT"
    assert _activation_status(sf, order_id) != "Activating"
