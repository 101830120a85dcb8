"""The WHMCS client against the WHMCS emulator over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from clients.errors import (
    BusinessError,
    ConfigurationError,
    ErrorCode,
    OutcomeUnknownError,
    TransientError,
    UnrecognisedError,
)
from clients.retry import RetryPolicy
from clients.whmcs import AccessRefusedError, InProcessCatalogue, WhmcsClient
from config.settings import load_settings
from domain.billing import BillingLine, BillingOrder, BillingOrderStatus
from domain.errors import WriteOutcome
from tests.fixtures.whmcs_emulator import WhmcsEmulatorHandle
from tests.integration.clients._control import Control, seeded_control

FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05)
SF_ORDER = "801000000000001AAA"


@pytest.fixture
def whmcs_control(whmcs_emulator: WhmcsEmulatorHandle) -> Iterator[Control]:
    with seeded_control(whmcs_emulator.control_url) as control:
        yield control


def _client(handle: WhmcsEmulatorHandle, **options: object) -> WhmcsClient:
    settings: dict[str, object] = {
        "access_key": SecretStr(handle.access_key),
        "timeout": httpx.Timeout(2.0),
        "retry": FAST_RETRY,
    }
    return WhmcsClient(
        handle.api_url,
        handle.identifier,
        SecretStr(handle.secret),
        **(settings | options),  # type: ignore[arg-type]
    )


@pytest.fixture
async def whmcs(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs_control: Control
) -> AsyncIterator[WhmcsClient]:
    async with _client(whmcs_emulator) as client:
        yield client


def billing_order(*items: str, client_id: int = 1, gateway: str = "stripe") -> BillingOrder:
    """An order of SIM product 1 (plus fibre, product 4) lines, one per Salesforce item id."""
    lines = [
        BillingLine(
            sf_order_item_id=item,
            whmcs_product_id=1 if index == 0 else 4,
            billing_cycle="monthly",
            price_override=Decimal("990"),
        )
        for index, item in enumerate(items or ("802000000000001AAA",))
    ]
    return BillingOrder(
        sf_order_id=SF_ORDER, whmcs_client_id=client_id, payment_method=gateway, lines=tuple(lines)
    )


def orders_in(control: Control) -> list[dict[str, Any]]:
    return list(control.state()["orders"].values())


async def test_an_order_is_created_marked_found_again_and_accepted(whmcs: WhmcsClient) -> None:
    order = billing_order("802000000000001AAA", "802000000000002AAA")
    result = await whmcs.add_order(order)
    assert set(result.service_ids) == {"802000000000001AAA", "802000000000002AAA"}
    assert result.whmcs_invoice_id is not None and result.status is BillingOrderStatus.PENDING

    # The marker custom field ties each service to its Salesforce item: the order is found
    # again from WHMCS alone, as after a lost reply.
    found = await whmcs.find_billing_order(order)
    assert found == result

    assert await whmcs.accept_order(result.whmcs_order_id) is WriteOutcome.APPLIED
    assert await whmcs.order_status(result.whmcs_order_id) is BillingOrderStatus.ACTIVE
    invoices = await whmcs.get_invoices(1)
    assert result.whmcs_invoice_id in [invoice.id for invoice in invoices]


async def test_no_earlier_order_is_found_for_other_items_or_a_cancelled_order(
    whmcs: WhmcsClient,
) -> None:
    first = billing_order("802000000000001AAA")
    assert await whmcs.find_billing_order(first) is None
    made = await whmcs.add_order(first)
    assert await whmcs.find_billing_order(billing_order("802000000000009AAA")) is None
    await whmcs.cancel_order(made.whmcs_order_id)
    # A cancelled order is not taken for the new attempt (re-activation starts afresh).
    assert await whmcs.find_billing_order(first) is None


@pytest.mark.parametrize("mode", ["status", "reset", "hang"])
async def test_a_lost_add_order_reply_is_outcome_unknown_and_the_read_finds_the_order(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs_control: Control, mode: str
) -> None:
    order = billing_order()
    match: dict[str, Any] = {"action": "AddOrder"}
    if mode == "hang":
        match["ms"] = 5000
    whmcs_control.lose_reply(mode=mode, **match)
    async with _client(whmcs_emulator, timeout=httpx.Timeout(1.0)) as whmcs:
        with pytest.raises(OutcomeUnknownError):
            await whmcs.add_order(order)
        found = await whmcs.find_billing_order(order)
    assert found is not None
    assert [int(o["id"]) for o in orders_in(whmcs_control)] == [found.whmcs_order_id]
    assert len(whmcs_control.requests(action="AddOrder")) == 1


async def test_a_server_error_to_add_order_is_outcome_unknown_and_not_repeated(
    whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    whmcs_control.fail(1, 503, action="AddOrder")
    with pytest.raises(OutcomeUnknownError):
        await whmcs.add_order(billing_order())
    assert len(whmcs_control.requests(action="AddOrder")) == 1
    # Here WHMCS refused before doing anything: the follow-up read finds nothing to take.
    assert await whmcs.find_billing_order(billing_order()) is None


@pytest.mark.parametrize(
    ("action", "wanted"),
    [("AcceptOrder", BillingOrderStatus.ACTIVE), ("CancelOrder", BillingOrderStatus.CANCELLED)],
)
async def test_a_lost_accept_or_cancel_reply_then_a_repeat_is_already_done(
    whmcs: WhmcsClient, whmcs_control: Control, action: str, wanted: BillingOrderStatus
) -> None:
    made = await whmcs.add_order(billing_order())
    write = whmcs.accept_order if action == "AcceptOrder" else whmcs.cancel_order
    whmcs_control.lose_reply(mode="reset", action=action)
    with pytest.raises(OutcomeUnknownError):
        await write(made.whmcs_order_id)
    assert await whmcs.order_status(made.whmcs_order_id) is wanted
    assert await write(made.whmcs_order_id) is WriteOutcome.ALREADY_DONE
    assert await whmcs.order_status(made.whmcs_order_id) is wanted


@pytest.mark.parametrize(
    ("action", "wanted"),
    [("AcceptOrder", BillingOrderStatus.ACTIVE), ("CancelOrder", BillingOrderStatus.CANCELLED)],
)
async def test_an_accept_or_cancel_committing_late_changes_the_order_once(
    whmcs: WhmcsClient, whmcs_control: Control, action: str, wanted: BillingOrderStatus
) -> None:
    # Needs no settle window: WHMCS applies either only to a Pending order, so whichever of the
    # late write and the repeat comes second is refused by the state the first one left.
    made = await whmcs.add_order(billing_order())
    write = whmcs.accept_order if action == "AcceptOrder" else whmcs.cancel_order
    spec = {"kind": "late_commit", "ms": 3000, "count": 1, "action": action}
    whmcs_control.http.post(f"{whmcs_control.url}/faults", json=spec).raise_for_status()
    with pytest.raises(OutcomeUnknownError):
        await write(made.whmcs_order_id)  # the client's 2 s read timeout
    assert await whmcs.order_status(made.whmcs_order_id) is BillingOrderStatus.PENDING
    assert await write(made.whmcs_order_id) is WriteOutcome.APPLIED
    for _ in range(50):
        if any(r["lost_reply"] == "late_commit" for r in whmcs_control.requests(action=action)):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the late write never landed")
    assert await whmcs.order_status(made.whmcs_order_id) is wanted
    assert len([o for o in orders_in(whmcs_control) if o["status"] == wanted.value]) == 1


async def test_cancelling_an_accepted_order_is_a_refusal_naming_its_state(
    whmcs: WhmcsClient,
) -> None:
    made = await whmcs.add_order(billing_order())
    await whmcs.accept_order(made.whmcs_order_id)
    with pytest.raises(BusinessError) as info:
        await whmcs.cancel_order(made.whmcs_order_id)
    assert info.value.code is ErrorCode.BILLING_ORDER_REJECTED
    assert "is Active" in info.value.message
    # WHMCS can set an order back to Pending, so a retry may help; a deleted order is gone.
    assert info.value.retry_cannot_help is None
    with pytest.raises(BusinessError) as missing:
        await whmcs.accept_order(99999)
    assert "does not exist" in missing.value.message
    failure = missing.value.to_failure()
    assert failure.retry_cannot_help is not None
    assert "WHMCS order 99999 no longer exists" in failure.retry_cannot_help


@pytest.mark.parametrize(
    ("kind", "gateway"),
    [
        ("CreditCard", "stripe"),
        ("RemoteCreditCard", "stripe"),
        ("BankAccount", "banktransfer"),
        ("RemoteBankAccount", "stripe"),
    ],
)
async def test_every_kind_of_pay_method_is_read(
    whmcs: WhmcsClient, whmcs_control: Control, kind: str, gateway: str
) -> None:
    spec = {"clientid": 3, "type": kind, "gateway": gateway}
    reply = whmcs_control.http.post(
        f"{whmcs_control.url}/seed", json={"records": {"paymethods": [spec]}}
    )
    reply.raise_for_status()
    methods = await whmcs.get_pay_methods(3)
    assert [(m.type, m.gateway_name) for m in methods] == [(kind, gateway)]


async def test_the_demo_clients_gateway_card_is_a_remote_credit_card(whmcs: WhmcsClient) -> None:
    client = await whmcs.get_client(1)
    assert (client.id, client.firstname, client.status) == (1, "Taro", "Active")
    assert [m.type for m in await whmcs.get_pay_methods(1)] == ["RemoteCreditCard"]
    assert await whmcs.get_pay_methods(3) == []


async def test_an_unknown_client_is_not_linked(whmcs: WhmcsClient) -> None:
    with pytest.raises(BusinessError) as info:
        await whmcs.get_client(999)
    assert info.value.code is ErrorCode.BILLING_CLIENT_NOT_LINKED
    assert info.value.detail == "Client Not Found"


async def test_an_inactive_gateway_is_our_configuration_not_a_missing_payment(
    whmcs: WhmcsClient,
) -> None:
    with pytest.raises(ConfigurationError) as info:
        await whmcs.add_order(billing_order(gateway="no-such-gateway"))
    assert not isinstance(info.value, BusinessError)
    assert (info.value.detail or "").startswith("Invalid Payment Method")


async def test_add_order_refusals_map_to_their_codes(whmcs: WhmcsClient) -> None:
    with pytest.raises(BusinessError) as missing:
        await whmcs.add_order(billing_order(client_id=999))
    assert missing.value.code is ErrorCode.BILLING_CLIENT_NOT_LINKED
    with pytest.raises(BusinessError) as closed:
        await whmcs.add_order(billing_order(client_id=4))
    assert closed.value.code is ErrorCode.BILLING_ORDER_REJECTED
    assert closed.value.detail == "Unable to add order when client status is Closed"


async def test_a_product_without_the_marker_field_is_configuration(
    whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    with pytest.raises(ConfigurationError) as info:
        await whmcs.marker_field_id(999)
    assert "Salesforce Order Item ID" in info.value.message
    # Looked for once more in WHMCS before giving up, not more.
    assert len(whmcs_control.requests(action="GetProducts")) == 2


async def test_marker_fields_of_every_product_come_from_one_catalogue_read(
    whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    assert [await whmcs.marker_field_id(pid) for pid in (4, 3, 4, 1)] == [4, 3, 4, 1]
    assert len(whmcs_control.requests(action="GetProducts")) == 1


async def test_a_product_the_kept_catalogue_lacks_is_looked_for_in_whmcs_once(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs_control: Control
) -> None:
    # Kept yesterday, before product 4 got its marker field (or was added) in WHMCS.
    kept = InProcessCatalogue()
    yesterday = (
        '{"format": "whmcs-products/v1", "products": {"3": {"Salesforce Order Item ID": 3}}}'
    )
    await kept.get(lambda: _value(yesterday))
    async with _client(whmcs_emulator, catalogue=kept) as whmcs:
        assert await whmcs.marker_field_id(3) == 3
        assert len(whmcs_control.requests(action="GetProducts")) == 0
        assert await whmcs.marker_field_id(4) == 4
        assert await whmcs.marker_field_id(4) == 4
    assert len(whmcs_control.requests(action="GetProducts")) == 1


async def _value(text: str) -> str:
    return text


async def test_refused_credentials_pause_every_call_instead_of_hammering(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs_control: Control
) -> None:
    async with WhmcsClient(
        whmcs_emulator.api_url, whmcs_emulator.identifier, SecretStr("wrong-secret")
    ) as client:
        with pytest.raises(AccessRefusedError) as info:
            await client.get_client(1)
        # Every order in flight calling again must not add a failed login each: WHMCS bans
        # addresses that keep failing. The pause answers locally.
        for _ in range(3):
            with pytest.raises(AccessRefusedError):
                await client.get_pay_methods(1)
    assert info.value.detail == "Authentication Failed"
    assert info.value.retry_after is not None and info.value.retry_after >= 60
    assert "wrong-secret" not in repr(info.value)
    assert len(whmcs_control.requests()) == 1


async def test_an_address_not_on_the_allow_list_is_refused_access(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    whmcs_control.configure(allowed_ips=["203.0.113.9"])
    # The access key lets a caller past the allow-list, as in WHMCS; without it we are refused.
    assert len(await whmcs.get_pay_methods(1)) == 1
    async with WhmcsClient(
        whmcs_emulator.api_url, whmcs_emulator.identifier, SecretStr(whmcs_emulator.secret)
    ) as without_key:
        with pytest.raises(AccessRefusedError) as info:
            await without_key.get_pay_methods(1)
    assert (info.value.detail or "").startswith("Invalid IP")


async def test_an_unknown_error_on_get_pay_methods_is_not_a_missing_payment_method(
    whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    body = {"result": "error", "message": "Module gateway error"}
    whmcs_control.fail(5, 200, body, action="GetPayMethods")
    with pytest.raises(UnrecognisedError):
        await whmcs.get_pay_methods(1)
    whmcs_control.clear_faults()


async def test_reads_page_through_everything(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    ids = [
        (await whmcs.add_order(billing_order(f"80200000000000{n}AAA"))).whmcs_order_id
        for n in range(5)
    ]
    whmcs_control.clear_requests()
    async with _client(whmcs_emulator, page_size=2) as paged:
        orders = await paged.get_orders(client_id=1)
    assert sorted(order.id for order in orders) == sorted(ids)
    assert len(whmcs_control.requests(action="GetOrders")) == 3


async def test_an_upstream_ignoring_limitstart_ends_in_an_error_not_a_loop_or_a_short_list(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    for n in range(5):
        await whmcs.add_order(billing_order(f"80200000000000{n}AAA"))
    whmcs_control.configure(ignore_limitstart=True)
    async with _client(whmcs_emulator, page_size=2) as paged:
        with pytest.raises(UnrecognisedError) as info:
            await paged.get_orders(client_id=1)
    assert "ignores limitstart" in info.value.message


async def test_reads_ride_out_a_brief_outage(whmcs: WhmcsClient, whmcs_control: Control) -> None:
    whmcs_control.fail(2, 503, action="GetPayMethods")
    assert len(await whmcs.get_pay_methods(1)) == 1
    assert len(whmcs_control.requests(action="GetPayMethods")) == 3


async def test_a_long_outage_is_transient(whmcs: WhmcsClient, whmcs_control: Control) -> None:
    whmcs_control.fail(5, 502, action="GetClientsDetails")
    with pytest.raises(TransientError):
        await whmcs.get_client(1)
    assert len(whmcs_control.requests(action="GetClientsDetails")) == 3


async def test_a_cancelled_call_does_not_block_the_next_one(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs_control: Control
) -> None:
    async with _client(whmcs_emulator, timeout=httpx.Timeout(30.0)) as whmcs:
        whmcs_control.delay(20_000, action="GetClientsDetails")
        slow = asyncio.create_task(whmcs.get_client(1))
        await asyncio.sleep(0.2)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        whmcs_control.clear_faults()
        async with asyncio.timeout(3):
            assert len(await whmcs.get_pay_methods(1)) == 1


async def test_a_non_json_reply_is_transient_and_retried(
    whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    whmcs_control.fail(1, 200, "<html>maintenance</html>", action="GetClientsDetails")
    assert (await whmcs.get_client(1)).id == 1
    whmcs_control.fail(5, 200, "<html>maintenance</html>", action="GetClientsDetails")
    with pytest.raises(TransientError):
        await whmcs.get_client(1)
    whmcs_control.clear_faults()


async def test_a_reply_of_an_unexpected_shape_names_fields_not_values(
    whmcs: WhmcsClient, whmcs_control: Control
) -> None:
    body = {"result": "success", "client": {"id": "not a number", "email": "taro@example.jp"}}
    whmcs_control.fail(1, 200, body, action="GetClientsDetails")
    with pytest.raises(TransientError) as info:
        await whmcs.get_client(1)
    assert info.value.detail == "id" and "taro" not in str(info.value)


async def test_a_slow_reply_times_out_as_transient(
    whmcs_emulator: WhmcsEmulatorHandle, whmcs_control: Control
) -> None:
    whmcs_control.delay(600)
    async with _client(
        whmcs_emulator, timeout=httpx.Timeout(0.2), retry=RetryPolicy(attempts=1)
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
