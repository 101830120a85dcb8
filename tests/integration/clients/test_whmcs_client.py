"""The WHMCS client against the WHMCS emulator over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from clients.errors import BusinessError, ConfigurationError, ErrorCode, TransientError
from clients.retry import RetryPolicy
from clients.whmcs import AddOrderRequest, OrderLine, WhmcsClient
from config.settings import load_settings
from tests.fixtures.whmcs_emulator import WhmcsEmulatorHandle
from tests.integration.clients._control import Control, seeded_control

FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05)
ORDER_ITEM_FIELD = "Salesforce Order Item ID"


@pytest.fixture
def whmcs_control(whmcs_emulator: WhmcsEmulatorHandle) -> Iterator[Control]:
    with seeded_control(whmcs_emulator.control_url) as control:
        yield control


@pytest.fixture
async def whmcs(whmcs_emulator: WhmcsEmulatorHandle) -> AsyncIterator[WhmcsClient]:
    async with WhmcsClient(
        whmcs_emulator.api_url,
        whmcs_emulator.identifier,
        SecretStr(whmcs_emulator.secret),
        access_key=SecretStr(whmcs_emulator.access_key),
        timeout=httpx.Timeout(2.0),
        retry=FAST_RETRY,
    ) as client:
        yield client


def _field_id(control: Control, pid: int, name: str) -> int:
    product = control.state()["products"][str(pid)]
    return next(int(f["id"]) for f in product["customfields"] if f["name"] == name)


def _sim_line(control: Control, item_id: str) -> OrderLine:
    """A SIM product line marked with its Salesforce order item id, as the engine sends it."""
    field_id = _field_id(control, 1, ORDER_ITEM_FIELD)
    return OrderLine(pid=1, billingcycle="monthly", customfields={field_id: item_id})


async def _add_sim_order(whmcs: WhmcsClient, control: Control, item_id: str) -> int:
    request = AddOrderRequest(
        client_id=1, payment_method="stripe", lines=[_sim_line(control, item_id)], noemail=True
    )
    return (await whmcs.add_order(request)).order_id


async def test_order_lifecycle_reads_back_typed(whmcs: WhmcsClient, whmcs_control: Control) -> None:
    client = await whmcs.get_client(1)
    assert (client.id, client.firstname, client.status) == (1, "Taro", "Active")
    methods = await whmcs.get_pay_methods(1)
    assert [(m.type, m.gateway_name) for m in methods] == [("CreditCard", "stripe")]

    result = await whmcs.add_order(
        AddOrderRequest(
            client_id=1,
            payment_method="stripe",
            lines=[
                _sim_line(whmcs_control, "802A"),
                OrderLine(pid=2, billingcycle="monthly"),
            ],
        )
    )
    assert len(result.service_ids) == 2 and result.invoice_id is not None

    [order] = await whmcs.get_orders(order_id=result.order_id)
    assert (order.userid, order.status, order.invoiceid) == (1, "Pending", result.invoice_id)

    products = await whmcs.get_clients_products(1)
    marked = [p for p in products if p.custom_field(ORDER_ITEM_FIELD) == "802A"]
    assert [(p.orderid, p.pid) for p in marked] == [(result.order_id, 1)]

    await whmcs.accept_order(result.order_id)
    [accepted] = await whmcs.get_orders(order_id=result.order_id)
    assert accepted.status == "Active"
    invoices = await whmcs.get_invoices(1)
    assert result.invoice_id in [invoice.id for invoice in invoices]


async def test_cancel_pending_order(whmcs: WhmcsClient, whmcs_control: Control) -> None:
    order_id = await _add_sim_order(whmcs, whmcs_control, "802B")
    await whmcs.cancel_order(order_id)
    [order] = await whmcs.get_orders(order_id=order_id)
    assert order.status == "Cancelled"


async def test_reads_page_through_everything(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    ids = [await _add_sim_order(whmcs, whmcs_control, f"802P{n}") for n in range(5)]
    async with WhmcsClient(
        whmcs_emulator.api_url,
        whmcs_emulator.identifier,
        SecretStr(whmcs_emulator.secret),
        access_key=SecretStr(whmcs_emulator.access_key),
        page_size=2,
    ) as paged:
        orders = await paged.get_orders(client_id=1)
    assert sorted(order.id for order in orders) == sorted(ids)
    assert len(whmcs_control.requests(action="GetOrders")) == 3


async def test_unknown_client_is_not_linked(whmcs: WhmcsClient, whmcs_control: Control) -> None:
    with pytest.raises(BusinessError) as info:
        await whmcs.get_client(999)
    assert info.value.code is ErrorCode.BILLING_CLIENT_NOT_LINKED
    assert info.value.detail == "Client Not Found"


async def test_invalid_payment_method_is_missing_payment(
    whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    with pytest.raises(BusinessError) as info:
        await whmcs.add_order(
            AddOrderRequest(
                client_id=1,
                payment_method="no-such-gateway",
                lines=[OrderLine(pid=1, billingcycle="monthly")],
            )
        )
    assert info.value.code is ErrorCode.PAYMENT_METHOD_MISSING


async def test_accepting_twice_is_rejected(whmcs: WhmcsClient, whmcs_control: Control) -> None:
    order_id = await _add_sim_order(whmcs, whmcs_control, "802C")
    await whmcs.accept_order(order_id)
    with pytest.raises(BusinessError) as info:
        await whmcs.accept_order(order_id)
    assert info.value.code is ErrorCode.BILLING_ORDER_REJECTED
    assert info.value.detail == "Order ID not found or Status not Pending"


async def test_wrong_secret_is_a_configuration_error(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs_control: Control
) -> None:
    async with WhmcsClient(
        whmcs_emulator.api_url, whmcs_emulator.identifier, SecretStr("wrong-secret")
    ) as client:
        with pytest.raises(ConfigurationError) as info:
            await client.get_client(1)
    assert info.value.detail == "Authentication Failed"
    assert "wrong-secret" not in repr(info.value)
    # Refused credentials are not retried: one request only.
    assert len(whmcs_control.requests(action="GetClientsDetails")) == 1


async def test_address_not_allowed_is_a_configuration_error(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    whmcs_control.configure(allowed_ips=["203.0.113.9"])
    # The access key lets a caller past the allow-list, as in WHMCS; without it we are refused.
    assert len(await whmcs.get_pay_methods(1)) == 1
    async with WhmcsClient(
        whmcs_emulator.api_url, whmcs_emulator.identifier, SecretStr(whmcs_emulator.secret)
    ) as without_key:
        with pytest.raises(ConfigurationError) as info:
            await without_key.get_pay_methods(1)
    assert info.value.detail is not None and info.value.detail.startswith("Invalid IP")


async def test_reads_ride_out_a_brief_outage(whmcs: WhmcsClient, whmcs_control: Control) -> None:
    whmcs_control.fail(2, 503, action="GetPayMethods")
    assert len(await whmcs.get_pay_methods(1)) == 1
    assert len(whmcs_control.requests(action="GetPayMethods")) == 3


async def test_a_long_outage_is_transient(whmcs: WhmcsClient, whmcs_control: Control) -> None:
    whmcs_control.fail(5, 502, action="GetClientsDetails")
    with pytest.raises(TransientError):
        await whmcs.get_client(1)
    assert len(whmcs_control.requests(action="GetClientsDetails")) == 3


async def test_writes_are_not_retried(whmcs: WhmcsClient, whmcs_control: Control) -> None:
    whmcs_control.fail(1, 503, action="AddOrder")
    with pytest.raises(TransientError):
        await _add_sim_order(whmcs, whmcs_control, "802D")
    assert len(whmcs_control.requests(action="AddOrder")) == 1
    assert await whmcs.get_orders(client_id=1) == []


async def test_a_slow_reply_times_out_as_transient(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs_control: Control
) -> None:
    whmcs_control.delay(600)
    async with WhmcsClient(
        whmcs_emulator.api_url,
        whmcs_emulator.identifier,
        SecretStr(whmcs_emulator.secret),
        access_key=SecretStr(whmcs_emulator.access_key),
        timeout=httpx.Timeout(0.2),
        retry=RetryPolicy(attempts=1),
    ) as client:
        with pytest.raises(TransientError) as info:
            await client.get_client(1)
    assert "timed out" in str(info.value)
    whmcs_control.clear_faults()


async def test_from_settings_talks_to_the_configured_installation(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs_control: Control
) -> None:
    settings = load_settings(
        whmcs_api_url=whmcs_emulator.api_url,
        whmcs_identifier=whmcs_emulator.identifier,
        whmcs_secret=whmcs_emulator.secret,
        whmcs_access_key=whmcs_emulator.access_key,
    )
    async with WhmcsClient.from_settings(settings) as client:
        assert (await client.get_client(2)).lastname == "Suzuki"


async def test_add_order_refusals_map_to_their_codes(
    whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    rejected = ErrorCode.BILLING_ORDER_REJECTED
    cases = [
        (999, 1, ErrorCode.BILLING_CLIENT_NOT_LINKED, "Client ID Not Found"),
        (4, 1, rejected, "Unable to add order when client status is Closed"),
        (1, 999, rejected, "No items added to cart so order cannot proceed"),
    ]
    for client_id, pid, code, message in cases:
        with pytest.raises(BusinessError) as info:
            await whmcs.add_order(
                AddOrderRequest(
                    client_id=client_id,
                    payment_method="stripe",
                    lines=[OrderLine(pid=pid, billingcycle="monthly")],
                )
            )
        assert (type(info.value), info.value.code, info.value.detail) == (
            BusinessError,
            code,
            message,
        )


async def test_cancelling_an_accepted_order_is_rejected(
    whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    order_id = await _add_sim_order(whmcs, whmcs_control, "802E")
    await whmcs.accept_order(order_id)
    with pytest.raises(BusinessError) as info:
        await whmcs.cancel_order(order_id)
    assert info.value.code is ErrorCode.BILLING_ORDER_REJECTED


async def test_a_non_json_reply_is_transient_and_retried(
    whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    whmcs_control.fail(1, 200, "<html>maintenance</html>", action="GetClientsDetails")
    assert (await whmcs.get_client(1)).id == 1
    whmcs_control.fail(5, 200, "<html>maintenance</html>", action="GetClientsDetails")
    with pytest.raises(TransientError):
        await whmcs.get_client(1)
    whmcs_control.clear_faults()


async def test_a_reply_of_an_unexpected_shape_is_transient(
    whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    body = {"result": "success", "client": {"id": "not a number", "email": "taro@example.jp"}}
    whmcs_control.fail(1, 200, body, action="GetClientsDetails")
    with pytest.raises(TransientError) as info:
        await whmcs.get_client(1)
    # Only the field's location is reported, never the reply's values (personal data).
    assert info.value.detail == "id" and "taro" not in str(info.value)
