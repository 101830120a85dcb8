"""WHMCS reply models read ids and counts whether WHMCS sends them as strings or numbers."""

from __future__ import annotations

from clients.whmcs import AddOrderResult, ClientProduct, WhmcsOrder
from domain.billing import PayMethod


def test_add_order_result_reads_string_ids_and_comma_separated_lists() -> None:
    result = AddOrderResult.model_validate(
        {
            "result": "success",
            "orderid": "12",
            "serviceids": "31,32",
            "addonids": "",
            "domainids": "",
            "invoiceid": "7",
        }
    )
    assert (result.order_id, result.service_ids, result.invoice_id) == (12, [31, 32], 7)
    assert (result.addon_ids, result.domain_ids) == ([], [])


def test_add_order_result_without_invoice() -> None:
    for invoice_id in (0, "0", ""):
        result = AddOrderResult.model_validate({"orderid": 3, "invoiceid": invoice_id})
        assert result.invoice_id is None


def test_order_reads_string_ids_and_wrapped_line_items() -> None:
    order = WhmcsOrder.model_validate(
        {
            "id": "12",
            "ordernum": 4815162342,
            "userid": "1",
            "invoiceid": "0",
            "status": "Pending",
            "lineitems": {"lineitem": [{"relid": "31", "status": "Pending"}]},
        }
    )
    assert (order.id, order.ordernum, order.userid, order.invoiceid) == (12, "4815162342", 1, None)
    assert [item.relid for item in order.lineitems] == [31]


def test_client_product_reads_wrapped_custom_fields_with_string_ids() -> None:
    product = ClientProduct.model_validate(
        {
            "id": "31",
            "clientid": "1",
            "orderid": "12",
            "pid": "1",
            "customfields": {
                "customfield": [{"id": "5", "name": "Salesforce Order Item ID", "value": "802A"}]
            },
        }
    )
    assert (product.id, product.orderid) == (31, 12)
    assert product.custom_field("Salesforce Order Item ID") == "802A"
    assert product.custom_field("Other") is None


def test_empty_wrapped_lists_arrive_as_empty_string_or_object() -> None:
    empties: list[object] = ["", {}, {"customfield": []}]
    for empty in empties:
        product = ClientProduct.model_validate(
            {"id": 1, "clientid": 1, "orderid": 1, "pid": 1, "customfields": empty}
        )
        assert product.customfields == []
    order = WhmcsOrder.model_validate({"id": 1, "userid": 1, "status": "Active", "lineitems": ""})
    assert order.lineitems == []


def test_pay_method_id_as_string() -> None:
    assert PayMethod.model_validate({"id": "4", "type": "RemoteCreditCard"}).id == 4
