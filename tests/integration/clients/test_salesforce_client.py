"""The Salesforce client against the Salesforce emulator over real TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from clients.errors import BusinessError, ConfigurationError, ErrorCode, TransientError
from clients.http import tls_context
from clients.retry import RetryPolicy
from clients.salesforce import ActivationUpdate, AuthFlow, SalesforceAuth, SalesforceClient
from clients.salesforce_ids import checksum
from config.settings import load_settings
from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle
from tests.fixtures.salesforce_streaming import OpenClient
from tests.integration.clients._control import Control

FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05)
SESSION_REFUSED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def _auth(
    h: SalesforceEmulatorHandle, flow: AuthFlow = "password", **overrides: Any
) -> SalesforceAuth:
    options: dict[str, Any] = {
        "client_id": h.client_id,
        "flow": flow,
        "client_secret": SecretStr(h.client_secret),
        "username": h.username,
        "password": SecretStr(h.password),
        "ca_file": h.ca_file,
        "retry": FAST_RETRY,
    }
    if flow == "jwt":
        options["jwt_private_key"] = SecretStr(Path(h.jwt_private_key_file).read_text())
    return SalesforceAuth(h.token_url, **(options | overrides))


def _client(
    h: SalesforceEmulatorHandle, auth: SalesforceAuth | None = None, **options: Any
) -> SalesforceClient:
    return SalesforceClient(
        auth or _auth(h),
        api_version=h.api_version,
        ca_file=h.ca_file,
        retry=options.pop("retry", FAST_RETRY),
        **options,
    )


@pytest.fixture
def sf_demo(sf_emulator: SalesforceEmulatorHandle, sf_control: Control) -> dict[str, Any]:
    created = sf_emulator.seed_demo()
    sf_control.clear_requests()
    return created


@pytest.fixture
def sf_control(sf_emulator: SalesforceEmulatorHandle) -> Iterator[Control]:
    control = Control(sf_emulator.control_url, ca_file=sf_emulator.ca_file)
    yield control
    control.close()


@pytest.fixture
async def sf(sf_emulator: SalesforceEmulatorHandle) -> AsyncIterator[SalesforceClient]:
    async with _client(sf_emulator) as client:
        yield client


def _api_requests(control: Control) -> list[dict[str, Any]]:
    return [r for r in control.requests() if not r["path"].startswith("/__emulator__")]


def _missing_order_id() -> str:
    id15 = "8017y000000Tzzz"
    return id15 + checksum(id15)


async def test_order_snapshot_in_at_most_two_round_trips(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    order = await sf.read_order(sf_demo["orders"]["esim"])
    assert order.id == sf_demo["orders"]["esim"]
    assert order.account is not None and order.account.id == order.account_id
    assert order.billing_address.city
    assert [item.id for item in order.items] == [sf_demo["order_items"]["esim"]]
    product = order.items[0].product
    assert product is not None and product.product_type == "SIM"
    requests = _api_requests(sf_control)
    assert len(requests) <= 2, requests
    assert [r["path"] for r in requests] == [
        "/services/oauth2/token",
        "/services/data/v60.0/query/",
    ]


async def test_a_cached_token_makes_the_next_read_one_round_trip(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    await sf.read_order(sf_demo["orders"]["esim"])
    sf_control.clear_requests()
    await sf.read_order(sf_demo["orders"]["physical_sim"])
    assert len(_api_requests(sf_control)) == 1


@pytest.mark.parametrize("flow", ["password", "client_credentials", "jwt"])
async def test_every_auth_flow_reads_orders(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any], flow: AuthFlow
) -> None:
    async with _client(sf_emulator, _auth(sf_emulator, flow)) as client:
        order = await client.read_order(sf_demo["orders"]["internet"])
    assert order.id == sf_demo["orders"]["internet"]


async def test_missing_order_is_order_not_found(
    sf: SalesforceClient, sf_demo: dict[str, Any]
) -> None:
    with pytest.raises(BusinessError) as info:
        await sf.read_order(_missing_order_id())
    assert info.value.code is ErrorCode.ORDER_NOT_FOUND


async def test_malformed_id_never_reaches_salesforce(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    with pytest.raises(BusinessError) as info:
        await sf.read_order("8017y000000TbanAAC' OR Id != '")
    assert info.value.code is ErrorCode.ORDER_NOT_FOUND
    assert _api_requests(sf_control) == []


async def test_bad_credentials_are_a_configuration_error(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    auth = _auth(sf_emulator, client_secret=SecretStr("wrong-secret"))
    async with _client(sf_emulator, auth) as client:
        with pytest.raises(ConfigurationError) as info:
            await client.read_order(sf_demo["orders"]["esim"])
    assert "wrong-secret" not in repr(info.value)
    assert len(_api_requests(sf_control)) == 1


async def test_expired_session_is_refreshed_transparently(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    await sf.read_order(sf_demo["orders"]["esim"])
    sf_control.expire_tokens()
    sf_control.clear_requests()
    order = await sf.read_order(sf_demo["orders"]["esim"])
    assert order.id == sf_demo["orders"]["esim"]
    assert [(r["path"].rsplit("/", 2)[-2], r["status"]) for r in _api_requests(sf_control)] == [
        ("query", 401),
        ("oauth2", 200),
        ("query", 200),
    ]


async def test_session_refused_after_refresh_is_transient(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    sf_control.fail(2, 401, SESSION_REFUSED, path="/services/data")
    async with _client(sf_emulator, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(TransientError) as info:
            await client.read_order(sf_demo["orders"]["esim"])
    assert info.value.detail is not None and "INVALID_SESSION_ID" in info.value.detail


async def test_rate_limit_and_outage_are_retried_for_reads(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    limit = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    sf_control.fail(1, 403, limit, path="/services/data")
    sf_control.fail(1, 503, path="/services/data")
    order = await sf.read_order(sf_demo["orders"]["esim"])
    assert order.id == sf_demo["orders"]["esim"]


async def test_persistent_rate_limit_is_transient(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    limit = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    sf_control.fail(3, 403, limit, path="/services/data")
    with pytest.raises(TransientError):
        await sf.read_order(sf_demo["orders"]["esim"])


async def test_schema_mismatch_is_a_configuration_error(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    invalid = [
        {"message": "No such column 'EID__c' on entity 'Order'", "errorCode": "INVALID_FIELD"}
    ]
    sf_control.fail(1, 400, invalid, path="/services/data")
    with pytest.raises(ConfigurationError) as info:
        await sf.read_order(sf_demo["orders"]["esim"])
    assert info.value.detail is not None and info.value.detail.startswith("INVALID_FIELD")


async def test_slow_reply_times_out_as_transient(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    async with _client(sf_emulator, timeout=0.2, retry=RetryPolicy(attempts=1)) as client:
        await client.auth.token()
        sf_control.delay(600, path="/services/data")
        with pytest.raises(TransientError) as info:
            await client.read_order(sf_demo["orders"]["esim"])
    sf_control.clear_faults()
    assert "timed out" in str(info.value)


async def test_activation_write_back_reads_back(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    order_id = sf_demo["orders"]["esim"]
    attempted = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await sf.update_activation(
        order_id,
        ActivationUpdate(
            status="Failed",
            error_code=ErrorCode.PAYMENT_METHOD_MISSING,
            error_message="no payment method " + "x" * 300,
            attempted_at=attempted,
        ),
    )
    failed = await sf.read_order(order_id)
    assert (failed.activation_status, failed.activation_error_code) == (
        "Failed",
        "PAYMENT_METHOD_MISSING",
    )
    assert failed.activation_error_message is not None
    assert len(failed.activation_error_message) == 255
    assert failed.activation_last_attempt_at == attempted

    item_id = sf_demo["order_items"]["esim"]
    sf_control.clear_requests()
    await sf.update_activation(
        order_id,
        ActivationUpdate(status="Activated", whmcs_order_id="42"),
        item_service_ids={item_id: "77"},
    )
    assert [(r["method"], r["path"]) for r in _api_requests(sf_control)] == [
        ("PATCH", "/services/data/v60.0/composite/sobjects")
    ]
    done = await sf.read_order(order_id)
    assert (done.activation_status, done.activation_error_code, done.whmcs_order_id) == (
        "Activated",
        None,
        "42",
    )
    assert [item.whmcs_service_id for item in done.items] == ["77"]
    # The engine's own write-back must not look like an activation of the order.
    assert done.status == failed.status


async def test_write_back_to_a_missing_order_is_order_not_found(
    sf: SalesforceClient, sf_demo: dict[str, Any]
) -> None:
    with pytest.raises(BusinessError) as info:
        await sf.update_activation(_missing_order_id(), ActivationUpdate(status="Activating"))
    assert info.value.code is ErrorCode.ORDER_NOT_FOUND


async def test_writes_are_not_retried(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    await sf.auth.token()
    sf_control.clear_requests()
    sf_control.fail(1, 503, path="/services/data")
    with pytest.raises(TransientError):
        await sf.update_activation(sf_demo["orders"]["esim"], ActivationUpdate(status="Activating"))
    assert len(_api_requests(sf_control)) == 1


async def test_catalog_lists_active_entries_with_products(
    sf: SalesforceClient, sf_demo: dict[str, Any]
) -> None:
    portal = sf_demo["pricebooks"]["portal"]
    entries = await sf.read_catalog(portal)
    assert entries and all(entry.pricebook2_id == portal for entry in entries)
    assert all(entry.is_active and entry.product.is_active for entry in entries)
    codes = {entry.product.product_code for entry in entries}
    assert "SIM-DATA-3GB" in codes
    standard = await sf.read_catalog()
    assert standard and all(
        entry.pricebook2_id == sf_demo["pricebooks"]["standard"] for entry in standard
    )


async def test_pricebook_lookup_by_name_is_quoted(
    sf: SalesforceClient, sf_demo: dict[str, Any]
) -> None:
    assert await sf.find_pricebook_id("x' OR Name != 'y") is None


async def test_platform_event_reaches_a_streaming_subscriber_with_the_shared_token(
    sf_emulator: SalesforceEmulatorHandle,
    sf_demo: dict[str, Any],
    sf_control: Control,
    sf_stream_clients: OpenClient,
) -> None:
    auth = _auth(sf_emulator)
    async with _client(sf_emulator, auth) as sf:
        stream = await sf_stream_clients(
            auth.streaming_authenticator(), ssl_context=tls_context(sf_emulator.ca_file)
        )
        channel = "/event/Account_Eligibility_Update__e"
        await stream.subscribe(channel)
        account = sf_demo["accounts"]["CUST-0001"]
        event_id = await sf.publish_event(
            "Account_Eligibility_Update__e", {"Account_Id__c": account}
        )
        message = await asyncio.wait_for(stream.receive(), timeout=5)
    assert event_id
    assert message["channel"] == channel
    assert message["data"]["payload"]["Account_Id__c"] == account
    # REST and streaming shared one token.
    assert len(sf_control.requests(path="/services/oauth2/token")) == 1


async def test_from_settings_uses_the_configured_jwt_flow(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any]
) -> None:
    settings = load_settings(
        sf_token_url=sf_emulator.token_url,
        sf_client_id=sf_emulator.client_id,
        sf_auth_flow="jwt",
        sf_username=sf_emulator.username,
        sf_jwt_key_file=sf_emulator.jwt_private_key_file,
        sf_ca_file=sf_emulator.ca_file,
        sf_api_version=sf_emulator.api_version,
    )
    async with SalesforceClient.from_settings(settings) as client:
        order = await client.read_order(sf_demo["orders"]["esim"])
    assert client.auth.flow == "jwt"
    assert order.id == sf_demo["orders"]["esim"]
