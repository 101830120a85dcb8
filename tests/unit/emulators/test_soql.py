"""The SOQL parser and evaluator, run against an in-memory org through `soql.execute`."""

from datetime import date
from typing import Any

import pytest

from emulators.salesforce import schema, soql
from emulators.salesforce.auth import USER_ID
from emulators.salesforce.ids import IdFactory
from emulators.salesforce.store import Store, Transaction

NOW = 1_735_689_600.0  # 2025-01-01T00:00:00Z
TODAY = date(2025, 1, 1)


@pytest.fixture
def org():
    store = Store(IdFactory(seed=1), lambda: NOW)
    store.insert_standard_pricebook(USER_ID)
    tx = Transaction(USER_ID)
    pricebook = store.standard_pricebook()["Id"]
    acme = store.create(tx, schema.ACCOUNT, {"Name": "Acme", "Customer_Number__c": "C-1"})
    zeta = store.create(tx, schema.ACCOUNT, {"Name": "zeta O'Brien", "WH_Account__c": "7"})
    sim = store.create(
        tx,
        schema.PRODUCT2,
        {"Name": "SIM 3GB", "Product_Type__c": "SIM", "WHMCS_Product_Id__c": 1, "IsActive": True},
    )
    fiber = store.create(tx, schema.PRODUCT2, {"Name": "Fiber", "Product_Type__c": "Internet"})
    entries = {}
    for product in (sim, fiber):
        entries[product["Id"]] = store.create(
            tx,
            schema.PRICEBOOK_ENTRY,
            {
                "Pricebook2Id": pricebook,
                "Product2Id": product["Id"],
                "UnitPrice": 100,
                "IsActive": True,
            },
        )["Id"]
    orders = []
    for account, effective in ((acme, "2024-12-31"), (acme, "2025-01-01"), (zeta, "2024-06-01")):
        order = store.create(
            tx,
            schema.ORDER,
            {
                "AccountId": account["Id"],
                "Pricebook2Id": pricebook,
                "Status": "Draft",
                "EffectiveDate": effective,
            },
        )
        orders.append(order)
    for product, quantity in ((sim, 2), (fiber, 1)):
        store.create(
            tx,
            schema.ORDER_ITEM,
            {
                "OrderId": orders[0]["Id"],
                "PricebookEntryId": entries[product["Id"]],
                "Quantity": quantity,
                "UnitPrice": 100,
            },
        )
    return store


def run(store: Store, query: str, **kwargs: Any) -> soql.QueryResult:
    return soql.execute(query, store, version="60.0", today=TODAY, **kwargs)


def names(result: soql.QueryResult) -> list[str]:
    return [r["Name"] for r in result.records]


def test_select_shapes_records_with_attributes_and_canonical_field_names(org):
    result = run(org, "select id, NAME from account where name = 'ACME'")
    assert result.total_size == 1
    record = result.records[0]
    assert list(record) == ["attributes", "Id", "Name"]
    assert record["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v60.0/sobjects/Account/{record['Id']}",
    }


def test_parent_paths_nest_per_relationship(org):
    result = run(
        org,
        "SELECT Quantity, Order.Account.Name, PricebookEntry.Product2.WHMCS_Product_Id__c "
        "FROM OrderItem ORDER BY Quantity DESC",
    )
    first = result.records[0]
    assert first["Order"]["Account"]["Name"] == "Acme"
    assert first["PricebookEntry"]["Product2"]["WHMCS_Product_Id__c"] == 1.0
    assert result.records[1]["PricebookEntry"]["Product2"]["WHMCS_Product_Id__c"] is None


def test_child_subquery_returns_a_nested_result_or_null(org):
    result = run(
        org,
        "SELECT EffectiveDate, (SELECT Quantity FROM OrderItems ORDER BY Quantity) "
        "FROM Order ORDER BY EffectiveDate DESC",
    )
    with_items = next(r for r in result.records if r["OrderItems"] is not None)
    assert with_items["EffectiveDate"] == "2024-12-31"
    assert with_items["OrderItems"]["totalSize"] == 2
    assert with_items["OrderItems"]["done"] is True
    assert [i["Quantity"] for i in with_items["OrderItems"]["records"]] == [1.0, 2.0]
    assert [r["OrderItems"] for r in result.records].count(None) == 2


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("Name != 'Acme'", ["zeta O'Brien"]),
        ("Name = 'zeta O\\'Brien'", ["zeta O'Brien"]),
        ("Name LIKE 'ac%'", ["Acme"]),
        ("Name LIKE '_eta%'", ["zeta O'Brien"]),
        ("Name IN ('acme', 'nobody')", ["Acme"]),
        ("Name NOT IN ('acme')", ["zeta O'Brien"]),
        ("WH_Account__c = null", ["Acme"]),
        ("WH_Account__c != null", ["zeta O'Brien"]),
        ("NOT Name = 'Acme'", ["zeta O'Brien"]),
        ("(Name = 'Acme' OR Name = 'x') AND Customer_Number__c = 'C-1'", ["Acme"]),
        ("Name = 'Acme' OR (WH_Account__c = '7' AND Name LIKE 'z%')", ["Acme", "zeta O'Brien"]),
        ("CreatedDate = TODAY", ["Acme", "zeta O'Brien"]),
        ("CreatedDate < 2025-01-01T00:00:01Z", ["Acme", "zeta O'Brien"]),
        ("CreatedDate > 2025-01-01T00:00:00+09:00", ["Acme", "zeta O'Brien"]),
        ("CreatedDate = YESTERDAY", []),
        ("CreatedDate = LAST_N_DAYS:3", ["Acme", "zeta O'Brien"]),
    ],
)
def test_where_operators(org, where, expected):
    query = f"SELECT Name FROM Account WHERE {where} ORDER BY Name"  # noqa: S608
    assert names(run(org, query)) == expected


def test_numbers_booleans_dates_and_relationship_filters(org):
    assert run(org, "SELECT Id FROM OrderItem WHERE Quantity >= 2").total_size == 1
    assert run(org, "SELECT Id FROM OrderItem WHERE Quantity < 2.5").total_size == 2
    assert run(org, "SELECT Id FROM Product2 WHERE IsActive = true").total_size == 1
    assert run(org, "SELECT Id FROM Order WHERE EffectiveDate >= 2024-12-31").total_size == 2
    assert run(org, "SELECT Id FROM Order WHERE EffectiveDate = TODAY").total_size == 1
    assert run(org, "SELECT Id FROM Order WHERE Account.Name = 'acme'").total_size == 2
    by_product = run(org, "SELECT Id FROM OrderItem WHERE Product2.Product_Type__c = 'SIM'")
    assert by_product.total_size == 1


def test_ids_match_in_fifteen_or_eighteen_characters(org):
    account = run(org, "SELECT Id FROM Account WHERE Name = 'Acme'").records[0]["Id"]
    by_short_id = f"SELECT Id FROM Account WHERE Id = '{account[:15]}'"  # noqa: S608
    assert run(org, by_short_id).total_size == 1
    by_long_id = f"SELECT Id FROM Order WHERE AccountId IN ('{account}')"  # noqa: S608
    assert run(org, by_long_id).total_size == 2


def test_order_by_nulls_limit_and_offset(org):
    query = "SELECT Name FROM Account ORDER BY WH_Account__c {} LIMIT {} OFFSET {}"
    assert names(run(org, query.format("ASC", 2, 0))) == ["Acme", "zeta O'Brien"]
    assert names(run(org, query.format("ASC NULLS LAST", 2, 0))) == ["zeta O'Brien", "Acme"]
    assert names(run(org, query.format("DESC", 1, 0))) == ["zeta O'Brien"]
    assert names(run(org, query.format("DESC", 5, 1))) == ["Acme"]


def test_count(org):
    result = run(org, "SELECT COUNT() FROM Order WHERE Status = 'Draft'")
    assert (result.total_size, result.records) == (3, [])
    aggregate = run(org, "SELECT COUNT(Id) total FROM Order")
    assert aggregate.records == [{"attributes": {"type": "AggregateResult"}, "total": 3}]


def test_query_all_includes_deleted_records(org):
    tx = Transaction(USER_ID)
    order = run(org, "SELECT Id FROM Order WHERE EffectiveDate = 2024-06-01").records[0]
    org.delete(tx, schema.ORDER, order["Id"])
    assert run(org, "SELECT Id FROM Order").total_size == 2
    everything = run(org, "SELECT Id, IsDeleted FROM Order", include_deleted=True)
    assert sorted(r["IsDeleted"] for r in everything.records) == [False, False, True]


@pytest.mark.parametrize(
    ("query", "code", "text"),
    [
        ("SELECT Id FRO Account", "MALFORMED_QUERY", "unexpected token: 'FRO'"),
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY", "unexpected token: <EOF>"),
        (
            "SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'",
            "MALFORMED_QUERY",
            "unexpected token: 'OR'",
        ),
        ("SELECT Id FROM Account WHERE Name = 'oops", "MALFORMED_QUERY", "unexpected token"),
        ("SELECT Id, Nope__c FROM Account", "INVALID_FIELD", "No such column 'Nope__c' on entity"),
        ("SELECT Boss.Name FROM Account", "INVALID_FIELD", "Didn't understand relationship 'Boss'"),
        ("SELECT Id FROM Nothing__c", "INVALID_TYPE", "sObject type 'Nothing__c' is not supported"),
        (
            "SELECT Id, (SELECT Id FROM Lines) FROM Order",
            "INVALID_TYPE",
            "Didn't understand relationship 'Lines' in FROM part of query call",
        ),
        (
            "SELECT Id FROM OrderItem WHERE Quantity = '2'",
            "INVALID_FIELD",
            "must be of type double and should not be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Account WHERE Name = 5",
            "INVALID_FIELD",
            "must be of type string and should be enclosed in quotes",
        ),
        ("SELECT Id FROM Account WHERE Id = 'abc'", "INVALID_QUERY_FILTER_OPERATOR", "invalid ID"),
        ("SELECT Id, COUNT() FROM Account", "MALFORMED_QUERY", "Field must be grouped"),
    ],
)
def test_errors_have_salesforce_codes_and_point_at_the_problem(org, query, code, text):
    with pytest.raises(soql.QueryError) as caught:
        run(org, query)
    error = caught.value
    assert error.status == 400
    assert error.error_code == code
    assert text in error.message
    assert "ERROR at Row:1:Column:" in error.message
    assert error.body() == [{"message": error.message, "errorCode": code}]


def test_error_position_counts_rows_and_columns():
    with pytest.raises(soql.QueryError) as caught:
        soql.parse("SELECT Id\nFROM Account\nWHERE Name = = 'x'")
    message = caught.value.message
    assert "ERROR at Row:3:Column:14" in message
    assert "\nWHERE Name = = 'x'\n             ^\n" in message


def test_string_escapes_and_keywords_are_case_insensitive():
    query = soql.parse(
        "select Name from Account where Name = 'a\\nb\\\\c' order by Name desc nulls last"
    )
    assert query.sobject_name == "Account"
    assert query.order_by[0].descending and query.order_by[0].nulls_last
    comparison = query.where
    assert isinstance(comparison, soql.Comparison)
    assert comparison.values[0].value == "a\nb\\c"
