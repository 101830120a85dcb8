"""SOQL over the emulator's REST API through simple-salesforce: shapes, paging, errors, cost."""

from typing import Any

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

ORDER_SNAPSHOT = (
    "SELECT Id, OrderNumber, Status, AccountId, Account.Name, Account.WH_Account__c, SIM_Type__c, "
    "EID__c, (SELECT Id, Quantity, UnitPrice, PricebookEntry.Product2.Name, "
    "Product2.WHMCS_Product_Id__c, Product2.Product_Type__c FROM OrderItems) "
    "FROM Order WHERE Id = '{}'"
)


def _content(error: Any) -> Any:
    """The decoded error body simple-salesforce keeps on its exception."""
    return error.content


def _seed_accounts(h: Any, count: int) -> None:
    records = [
        {
            "attributes": {"type": "Account"},
            "Name": f"Account {n:05d}",
            "Customer_Number__c": f"N{n}",
        }
        for n in range(count)
    ]
    h.control("POST", "seed", {"records": records})


def test_a_whole_order_snapshot_is_one_query_and_one_round_trip(sf_emulator):
    ids = sf_emulator.seed_demo()
    sf = sf_emulator.client()
    sf_emulator.control("DELETE", "requests")
    order_id = ids["orders"]["esim"]
    result = sf.query(ORDER_SNAPSHOT.format(order_id[:15]))
    assert result["totalSize"] == 1 and result["done"] is True
    order = result["records"][0]
    assert order["Id"] == order_id
    assert order["Account"]["Name"] == "Taro Yamada"
    assert order["Account"]["WH_Account__c"] == "1"
    assert order["SIM_Type__c"] == "eSIM" and len(order["EID__c"]) == 32
    item = order["OrderItems"]["records"][0]
    assert item["PricebookEntry"]["Product2"]["Name"] == "eSIM Data 20GB"
    assert item["Product2"] == {
        "attributes": {
            "type": "Product2",
            "url": f"/services/data/v60.0/sobjects/Product2/{ids['products']['ESIM-DATA-20GB']}",
        },
        "WHMCS_Product_Id__c": 3.0,
        "Product_Type__c": "SIM",
    }
    log = sf_emulator.control("GET", "requests?path=/services/data")
    assert log["count"] == 1


def test_query_all_follows_next_records_url_in_default_batches_of_2000(sf_emulator):
    _seed_accounts(sf_emulator, 2100)
    sf = sf_emulator.client()
    first = sf.query("SELECT Id, Name FROM Account ORDER BY Name")
    assert (first["totalSize"], first["done"], len(first["records"])) == (2100, False, 2000)
    assert first["nextRecordsUrl"].startswith("/services/data/v60.0/query/01g")
    assert first["nextRecordsUrl"].endswith("-2000")
    everything = sf.query_all("SELECT Id, Name FROM Account ORDER BY Name")
    names = [r["Name"] for r in everything["records"]]
    assert names == sorted(names) and len(set(names)) == 2100


def test_batch_size_header_is_honoured_with_a_floor_of_200(sf_emulator):
    _seed_accounts(sf_emulator, 450)
    sf = sf_emulator.client()
    sf_emulator.control("DELETE", "requests")
    records = sf.query_all(
        "SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=200"}
    )["records"]
    assert len(records) == 450
    assert sf_emulator.control("GET", "requests?path=/services/data")["count"] == 3
    tiny = sf.query("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=5"})
    assert len(tiny["records"]) == 200


def test_an_unknown_query_locator_is_refused(sf_emulator):
    sf = sf_emulator.client()
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query_more("01g000000000000AAA-2000")
    assert _content(caught.value)[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_query_all_sees_deleted_records(sf_emulator):
    sf = sf_emulator.client()
    created = sf.Account.create({"Name": "Short lived"})
    sf.Account.delete(created["id"])
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 0
    deleted = sf.query("SELECT Id, IsDeleted FROM Account", include_deleted=True)
    assert deleted["records"][0]["IsDeleted"] is True


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("SELECT Id FROM Account WHERE Name = 'a' OR", "MALFORMED_QUERY"),
        ("SELECT Id, Colour__c FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Widget__c", "INVALID_TYPE"),
    ],
)
def test_query_errors_come_back_as_400_with_the_salesforce_body(sf_emulator, query, code):
    sf = sf_emulator.client()
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query(query)
    assert caught.value.status == 400
    [error] = _content(caught.value)
    assert error["errorCode"] == code
    assert "ERROR at Row:1:Column:" in error["message"]


def test_invalid_field_message_names_the_column_and_entity(sf_emulator):
    sf = sf_emulator.client()
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query("SELECT Id, Colour__c FROM Account")
    message = _content(caught.value)[0]["message"]
    assert message.startswith("\nSELECT Id, Colour__c FROM Account\n           ^\n")
    assert "No such column 'Colour__c' on entity 'Account'." in message


def test_count_and_date_literals(sf_emulator):
    sf_emulator.seed_demo()
    sf = sf_emulator.client()
    drafts = sf.query("SELECT COUNT() FROM Order WHERE Status = 'Draft' AND CreatedDate = TODAY")
    assert (drafts["totalSize"], drafts["records"]) == (5, [])
    assert (
        sf.query("SELECT Id FROM Order WHERE CreatedDate < 2020-01-01T00:00:00Z")["totalSize"] == 0
    )
    assert sf.query("SELECT Id FROM Order WHERE EffectiveDate = LAST_N_DAYS:1")["totalSize"] == 5
