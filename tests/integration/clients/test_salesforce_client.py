"""The Salesforce client against the Salesforce emulator over real TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from clients.errors import (
    BusinessError,
    ConfigurationError,
    ErrorCode,
    OutcomeUnknownError,
    TransientError,
    UnrecognisedError,
)
from clients.http import tls_context
from clients.retry import RetryPolicy
from clients.salesforce import ActivationUpdate, SalesforceClient
from clients.salesforce_auth import AuthFlow, SalesforceAuth
from clients.salesforce_ids import checksum
from config.settings import load_settings
from domain.errors import WriteOutcome
from domain.order import ActivationStatus
from domain.rules import sim_request
from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle
from tests.fixtures.salesforce_streaming import OpenClient
from tests.integration.clients._control import Control

FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05)
SESSION_REFUSED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def _auth(h: SalesforceEmulatorHandle, flow: AuthFlow = "jwt", **overrides: Any) -> SalesforceAuth:
    options: dict[str, Any] = {
        "client_id": h.client_id,
        "flow": flow,
        "client_secret": SecretStr(h.client_secret),
        "username": h.username,
        "password": SecretStr(h.password),
        "ca_file": h.ca_file,
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
    assert order.sf_order_id == sf_demo["orders"]["esim"]
    assert order.account is not None and order.account.sf_account_id == order.sf_account_id
    assert order.billing_address.city
    assert order.sim.sim_type == "eSIM" and order.sim.eid
    assert [item.sf_order_item_id for item in order.items] == [sf_demo["order_items"]["esim"]]
    assert order.items[0].product.product_type == "SIM"
    requests = _api_requests(sf_control)
    assert len(requests) <= 2, requests
    assert [r["path"] for r in requests] == [
        "/services/oauth2/token",
        "/services/data/v60.0/query/",
    ]


async def test_an_mnp_orders_person_fields_reach_the_sim_request(
    sf_emulator: SalesforceEmulatorHandle, sf: SalesforceClient, sf_demo: dict[str, Any]
) -> None:
    order_id = sf_demo["orders"]["physical_sim"]
    sf_emulator.client().restful(
        f"sobjects/Order/{order_id}",
        method="PATCH",
        json={
            "MNP_Reservation_Number__c": "1234567890",
            "MNP_Expiry_Date__c": "2099-12-31",
            "MNP_Last_Name_Kanji__c": "山田",
            "MNP_First_Name_Kanji__c": "太郎",
            "MNP_Last_Name_Kana__c": "ヤマダ",
            "MNP_First_Name_Kana__c": "タロウ",
            "MNP_Gender__c": "M",
            "MNP_Birthday__c": "1990-04-01",
        },
    )
    order = await sf.read_order(order_id)
    request = sim_request(order)
    assert request is not None and request.mnp is not None
    assert (request.mnp.reservation_number, request.mnp.last_name_kana, request.mnp.gender) == (
        "1234567890",
        "ヤマダ",
        "M",
    )
    assert request.mnp.birthday.isoformat() == "1990-04-01"


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
    assert order.sf_order_id == sf_demo["orders"]["internet"]


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
    auth = _auth(sf_emulator, "password", client_secret=SecretStr("wrong-secret"))
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
    assert order.sf_order_id == sf_demo["orders"]["esim"]
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


async def test_reads_ride_out_a_brief_outage(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    sf_control.fail(1, 503, path="/services/data")
    sf_control.fail(1, 503, path="/services/data")
    order = await sf.read_order(sf_demo["orders"]["esim"])
    assert order.sf_order_id == sf_demo["orders"]["esim"]


async def test_the_api_limit_is_left_to_a_long_backoff_not_a_tight_retry(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    await sf.auth.token()
    sf_control.clear_requests()
    limit = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    sf_control.fail(3, 403, limit, path="/services/data")
    with pytest.raises(TransientError) as info:
        await sf.read_order(sf_demo["orders"]["esim"])
    assert info.value.retry_after is not None and info.value.retry_after >= 300
    # One request: repeating at once would only burn more of the org's daily allowance.
    assert len(_api_requests(sf_control)) == 1
    sf_control.clear_faults()


async def test_api_usage_is_recorded_from_the_reply_header(
    sf: SalesforceClient, sf_demo: dict[str, Any]
) -> None:
    await sf.read_order(sf_demo["orders"]["esim"])
    used = REGISTRY.get_sample_value("fulfillment_salesforce_api_usage", {"kind": "used"})
    limit = REGISTRY.get_sample_value("fulfillment_salesforce_api_usage", {"kind": "limit"})
    assert used is not None and used >= 1
    assert limit is not None and limit > used


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


async def test_one_deadline_bounds_a_call_read_or_write(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    async with _client(sf_emulator, deadline=0.5, retry=RetryPolicy(attempts=1)) as client:
        await client.auth.token()
        sf_control.delay(3000, path="/services/data")
        started = asyncio.get_running_loop().time()
        with pytest.raises(TransientError) as read:
            await client.read_order(sf_demo["orders"]["esim"])
        assert not isinstance(read.value, OutcomeUnknownError)
        # A write that had gone out when the deadline passed may have been applied.
        with pytest.raises(OutcomeUnknownError):
            await client.update_activation(
                sf_demo["orders"]["esim"], ActivationUpdate(status=ActivationStatus.ACTIVATING)
            )
        assert asyncio.get_running_loop().time() - started < 2.5
    sf_control.clear_faults()


async def test_a_cancelled_call_frees_its_thread_for_the_next_one(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    async with _client(sf_emulator, pool_size=1, deadline=60.0) as client:
        await client.auth.token()
        sf_control.delay(20_000, path="/services/data")
        slow = asyncio.create_task(client.read_order(sf_demo["orders"]["esim"]))
        await asyncio.sleep(0.3)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        sf_control.clear_faults()
        # With one thread, the next call runs only once the cancelled one let go of it.
        async with asyncio.timeout(3):
            order = await client.read_order(sf_demo["orders"]["internet"])
    assert order.sf_order_id == sf_demo["orders"]["internet"]


async def test_concurrent_calls_after_expiry_share_one_token_refresh(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    async with _client(sf_emulator, pool_size=8) as client:
        await client.read_order(sf_demo["orders"]["esim"])
        sf_control.expire_tokens()
        sf_control.clear_requests()
        orders = await asyncio.gather(
            *(client.read_order(sf_demo["orders"]["esim"]) for _ in range(24))
        )
    assert len(orders) == 24
    assert len(sf_control.requests(path="/services/oauth2/token")) == 1


async def test_an_outage_of_the_token_endpoint_is_not_multiplied_by_nested_retries(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    sf_control.fail(10, 503, path="/services/oauth2/token")
    async with _client(sf_emulator) as client:
        with pytest.raises(TransientError):
            await client.read_order(sf_demo["orders"]["esim"])
    # Three attempts of the read, one token request each: not three times three.
    assert len(sf_control.requests(path="/services/oauth2/token")) == 3
    sf_control.clear_faults()


async def test_closing_the_rest_client_leaves_the_shared_token_source_open(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    auth = _auth(sf_emulator)
    async with _client(sf_emulator, auth) as client:
        await client.read_order(sf_demo["orders"]["esim"])
    sf_control.expire_tokens()
    # The streaming listener still holds `auth` and must be able to refresh through it.
    token = await auth.token(stale=(await auth.token()).access_token.get_secret_value())
    assert token.access_token.get_secret_value()
    await auth.aclose()


def _order_record(h: SalesforceEmulatorHandle, order_id: str) -> dict[str, Any]:
    record = h.client().restful(f"sobjects/Order/{order_id}")
    assert isinstance(record, dict)
    return record


async def test_activation_write_back_reads_back(
    sf_emulator: SalesforceEmulatorHandle,
    sf: SalesforceClient,
    sf_demo: dict[str, Any],
    sf_control: Control,
) -> None:
    order_id = sf_demo["orders"]["esim"]
    attempted = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    outcome = await sf.update_activation(
        order_id,
        ActivationUpdate(
            status=ActivationStatus.FAILED,
            error_code=ErrorCode.PAYMENT_METHOD_MISSING,
            error_message="no payment method " + "x" * 300,
            attempted_at=attempted,
        ),
    )
    assert outcome is WriteOutcome.APPLIED
    failed = await sf.read_order(order_id)
    assert (failed.activation_status, failed.activation_error_code) == (
        ActivationStatus.FAILED,
        "PAYMENT_METHOD_MISSING",
    )
    record = _order_record(sf_emulator, order_id)
    assert len(record["Activation_Error_Message__c"]) == 255
    assert record["Activation_Last_Attempt_At__c"].startswith("2026-01-02T03:04:05")

    item_id = sf_demo["order_items"]["esim"]
    sf_control.clear_requests()
    await sf.update_activation(
        order_id,
        ActivationUpdate(status=ActivationStatus.ACTIVATED, whmcs_order_id="42"),
        item_service_ids={item_id: "77"},
    )
    assert [(r["method"], r["path"]) for r in _api_requests(sf_control)] == [
        ("PATCH", "/services/data/v60.0/composite/sobjects")
    ]
    done = await sf.read_order(order_id)
    assert (done.activation_status, done.activation_error_code, done.whmcs_order_id) == (
        ActivationStatus.ACTIVATED,
        None,
        42,
    )
    assert [item.whmcs_service_id for item in done.items] == [77]
    # The engine's own write-back must not look like an activation of the order.
    assert done.status == failed.status


@pytest.mark.parametrize("mode", ["status", "reset", "hang"])
async def test_a_lost_write_back_reply_is_outcome_unknown_and_the_read_finds_it_applied(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any], sf_control: Control, mode: str
) -> None:
    order_id = sf_demo["orders"]["esim"]
    item_id = sf_demo["order_items"]["esim"]
    update = ActivationUpdate(status=ActivationStatus.ACTIVATED, whmcs_order_id="42")
    async with _client(sf_emulator, deadline=1.0) as sf:
        await sf.auth.token()
        match: dict[str, Any] = {"method": "PATCH", "path": "/services/data"}
        if mode == "hang":
            match["ms"] = 5000
        sf_control.lose_reply(mode=mode, **match)
        with pytest.raises(OutcomeUnknownError):
            await sf.update_activation(order_id, update, item_service_ids={item_id: "77"})
        assert await sf.activation_applied(order_id, update, {item_id: "77"})
        assert not await sf.activation_applied(order_id, update, {item_id: "78"})
        # Repeating it is harmless: the same values, written again.
        assert (
            await sf.update_activation(order_id, update, item_service_ids={item_id: "77"})
            is WriteOutcome.APPLIED
        )


async def test_a_refused_repeat_of_values_already_there_is_already_done(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    order_id = sf_demo["orders"]["esim"]
    update = ActivationUpdate(status=ActivationStatus.ACTIVATING)
    assert await sf.update_activation(order_id, update) is WriteOutcome.APPLIED
    refused = [
        {"message": "Locked after activation", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION"}
    ]
    sf_control.fail(1, 400, refused, method="PATCH", path="/services/data")
    assert await sf.update_activation(order_id, update) is WriteOutcome.ALREADY_DONE
    # The same refusal of values that are not there is the order's own problem.
    sf_control.fail(1, 400, refused, method="PATCH", path="/services/data")
    with pytest.raises(BusinessError) as info:
        await sf.update_activation(order_id, ActivationUpdate(status=ActivationStatus.FAILED))
    assert info.value.code is ErrorCode.INVALID_ORDER


async def test_the_order_goes_in_the_last_chunk_so_it_reads_activated_only_when_items_are_done(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    order_id = sf_demo["orders"]["esim"]
    item_id = sf_demo["order_items"]["esim"]
    update = ActivationUpdate(status=ActivationStatus.ACTIVATED, whmcs_order_id="42")
    async with _client(sf_emulator, composite_limit=1) as sf:
        await sf.auth.token()
        sf_control.clear_requests()
        # The first chunk goes through, the second fails before doing anything.
        sf_control.http.post(
            f"{sf_control.url}/faults",
            json={"kind": "latency", "ms": 0, "path": "/services/data"},
        ).raise_for_status()
        sf_control.fail(1, 503, method="PATCH", path="/services/data/v60.0/composite/sobjects")
        sf_control.clear_faults()
        assert (
            await sf.update_activation(order_id, update, item_service_ids={item_id: "77"})
            is WriteOutcome.APPLIED
        )
        patches = [r for r in _api_requests(sf_control) if r["method"] == "PATCH"]
        assert len(patches) == 2
    record = _order_record(sf_emulator, order_id)
    assert record["Activation_Status__c"] == "Activated"


async def test_a_lock_inside_a_trigger_is_transient_and_was_not_applied(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    locked = [
        {
            "message": "OrderTrigger: execution of AfterUpdate caused by: "
            "UNABLE_TO_LOCK_ROW, unable to obtain exclusive access to this record",
            "errorCode": "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
        }
    ]
    await sf.auth.token()
    sf_control.fail(1, 400, locked, method="PATCH", path="/services/data")
    with pytest.raises(TransientError) as info:
        await sf.update_activation(
            sf_demo["orders"]["esim"], ActivationUpdate(status=ActivationStatus.ACTIVATING)
        )
    assert not isinstance(info.value, OutcomeUnknownError)


async def test_a_catalog_read_that_meets_a_404_is_not_order_not_found(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    missing = [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]
    sf_control.fail(3, 404, missing, path="/services/data")
    with pytest.raises(UnrecognisedError):
        await sf.read_catalog()
    sf_control.clear_faults()


async def test_write_back_to_a_missing_order_is_order_not_found(
    sf: SalesforceClient, sf_demo: dict[str, Any]
) -> None:
    with pytest.raises(BusinessError) as info:
        await sf.update_activation(
            _missing_order_id(), ActivationUpdate(status=ActivationStatus.ACTIVATING)
        )
    assert info.value.code is ErrorCode.ORDER_NOT_FOUND


async def test_writes_are_not_retried_and_say_who_wrote(
    sf: SalesforceClient,
    sf_demo: dict[str, Any],
    sf_control: Control,
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    await sf.auth.token()
    sf_control.clear_requests()
    sf_control.fail(1, 503, path="/services/data")
    with pytest.raises(OutcomeUnknownError):
        await sf.update_activation(
            sf_demo["orders"]["esim"], ActivationUpdate(status=ActivationStatus.ACTIVATING)
        )
    [request] = _api_requests(sf_control)
    assert request["method"] == "PATCH"


async def test_catalog_lists_active_entries_with_products(
    sf: SalesforceClient, sf_demo: dict[str, Any]
) -> None:
    portal = sf_demo["pricebooks"]["portal"]
    entries = await sf.read_catalog(portal)
    assert entries and all(entry.pricebook_id == portal for entry in entries)
    assert all(entry.is_active and entry.product.is_active for entry in entries)
    codes = {entry.product.product_code for entry in entries}
    assert "SIM-DATA-3GB" in codes
    standard = await sf.read_catalog()
    assert standard and all(
        entry.pricebook_id == sf_demo["pricebooks"]["standard"] for entry in standard
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


async def test_our_write_backs_name_us_in_the_change_events_they_cause(
    sf_emulator: SalesforceEmulatorHandle,
    sf_demo: dict[str, Any],
    sf_stream_clients: OpenClient,
) -> None:
    auth = _auth(sf_emulator)
    async with _client(sf_emulator, auth, client_name="fulfil-test") as sf:
        stream = await sf_stream_clients(
            auth.streaming_authenticator(), ssl_context=tls_context(sf_emulator.ca_file)
        )
        await stream.subscribe("/data/OrderChangeEvent")
        await sf.update_activation(
            sf_demo["orders"]["esim"], ActivationUpdate(status=ActivationStatus.ACTIVATING)
        )
        message = await asyncio.wait_for(stream.receive(), timeout=5)
        await auth.aclose()
    header = message["data"]["payload"]["ChangeEventHeader"]
    assert header["recordIds"] == [sf_demo["orders"]["esim"]]
    assert header["changeOrigin"].endswith(";client=fulfil-test")
    assert "Status" not in header["changedFields"]


async def test_from_settings_uses_the_configured_jwt_flow(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any]
) -> None:
    settings = load_settings(
        sf_token_url=sf_emulator.token_url,
        sf_client_id=sf_emulator.client_id,
        sf_username=sf_emulator.username,
        sf_jwt_key_file=sf_emulator.jwt_private_key_file,
        sf_ca_file=sf_emulator.ca_file,
        sf_api_version=sf_emulator.api_version,
    )
    async with SalesforceClient.from_settings(settings) as client:
        order = await client.read_order(sf_demo["orders"]["esim"])
    assert client.auth.flow == "jwt"
    assert order.sf_order_id == sf_demo["orders"]["esim"]


# -- the order read and the Activating write in one call -----------------------------------------


ACTIVATING = ActivationUpdate(
    status=ActivationStatus.ACTIVATING, attempted_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
)


async def test_the_read_and_the_activating_write_are_one_composite_call(
    sf_emulator: SalesforceEmulatorHandle,
    sf: SalesforceClient,
    sf_demo: dict[str, Any],
    sf_control: Control,
) -> None:
    order_id = sf_demo["orders"]["esim"]
    failed = ActivationUpdate(
        status=ActivationStatus.FAILED, error_code=ErrorCode.INVALID_ORDER, error_message="no EID"
    )
    await sf.update_activation(order_id, failed)
    sf_control.clear_requests()

    marked = await sf.read_order_and_mark(order_id, ACTIVATING)

    assert [(r["method"], r["path"]) for r in _api_requests(sf_control)] == [
        ("POST", "/services/data/v60.0/composite")
    ]
    assert marked.outcome is WriteOutcome.APPLIED and marked.refused is None
    # The snapshot is the order as it was just before the write, items and account included.
    assert marked.order.activation_status is ActivationStatus.FAILED
    assert [item.sf_order_item_id for item in marked.order.items] == [
        sf_demo["order_items"]["esim"]
    ]
    assert marked.order.account is not None and marked.order.sim.eid
    record = _order_record(sf_emulator, order_id)
    assert record["Activation_Status__c"] == "Activating"
    assert record["Activation_Error_Code__c"] is None
    assert record["Activation_Error_Message__c"] is None
    assert record["Activation_Last_Attempt_At__c"].startswith("2026-01-02T03:04:05")
    # Our own write: the change event names our client, so the listener passes it by.
    events = sf_emulator.control("GET", "events?channel=/data/OrderChangeEvent")["events"]
    header = events[-1]["data"]["payload"]["ChangeEventHeader"]
    assert header["changeOrigin"].endswith(";client=order-fulfillment")


async def test_reading_and_marking_a_missing_order_writes_nothing(
    sf: SalesforceClient, sf_demo: dict[str, Any], sf_emulator: SalesforceEmulatorHandle
) -> None:
    before = sf_emulator.control("GET", "events?channel=/data/ChangeEvents")["events"]
    with pytest.raises(BusinessError) as info:
        await sf.read_order_and_mark(_missing_order_id(), ACTIVATING)
    assert info.value.code is ErrorCode.ORDER_NOT_FOUND
    assert sf_emulator.control("GET", "events?channel=/data/ChangeEvents")["events"] == before


async def test_a_lost_reply_of_the_combined_call_is_outcome_unknown_and_a_repeat_is_harmless(
    sf_emulator: SalesforceEmulatorHandle, sf_demo: dict[str, Any], sf_control: Control
) -> None:
    order_id = sf_demo["orders"]["internet"]
    async with _client(sf_emulator, deadline=2.0) as sf:
        await sf.auth.token()
        sf_control.lose_reply(mode="reset", method="POST", path="/services/data/v60.0/composite")
        with pytest.raises(OutcomeUnknownError):
            await sf.read_order_and_mark(order_id, ACTIVATING)
        assert _order_record(sf_emulator, order_id)["Activation_Status__c"] == "Activating"
        again = await sf.read_order_and_mark(order_id, ACTIVATING)
    assert again.outcome is WriteOutcome.APPLIED
    assert again.order.activation_status is ActivationStatus.ACTIVATING


class _Replying(SalesforceClient):
    """The client with Salesforce's reply to the composite given (the emulator has no
    validation rules to refuse a write with)."""

    reply: dict[str, Any]

    async def _write(self, operation: str, call: Any) -> Any:
        return self.reply


def _composite_reply(record: dict[str, Any], mark_status: int, mark_body: Any) -> dict[str, Any]:
    return {
        "compositeResponse": [
            {
                "body": {"totalSize": 1, "done": True, "records": [record]},
                "httpHeaders": {},
                "httpStatusCode": 200,
                "referenceId": "order",
            },
            {
                "body": mark_body,
                "httpHeaders": {},
                "httpStatusCode": mark_status,
                "referenceId": "activating",
            },
        ]
    }


@pytest.mark.parametrize(
    ("error_code", "already_there", "expected"),
    [
        ("FIELD_CUSTOM_VALIDATION_EXCEPTION", False, "refused"),
        ("FIELD_CUSTOM_VALIDATION_EXCEPTION", True, "already_done"),
        ("ENTITY_IS_DELETED", True, "refused"),
        ("UNABLE_TO_LOCK_ROW", False, "transient"),
        ("SOMETHING_NEW", False, "unrecognised"),
    ],
)
async def test_a_write_refused_beside_a_good_read_is_told_apart_from_the_read(
    sf_emulator: SalesforceEmulatorHandle,
    sf_demo: dict[str, Any],
    error_code: str,
    already_there: bool,
    expected: str,
) -> None:
    order_id = sf_demo["orders"]["internet"]
    full = _order_record(sf_emulator, order_id) | {
        "Activation_Status__c": "Activating" if already_there else None,
        "Activation_Error_Code__c": None,
        "Activation_Error_Message__c": None,
        "Account": None,
        "OrderItems": None,
    }
    refusal = [{"errorCode": error_code, "message": "Activation needs an approver"}]
    client = _Replying(_auth(sf_emulator), api_version=sf_emulator.api_version)
    client.reply = _composite_reply(full, 400, refusal)
    try:
        if expected in ("transient", "unrecognised"):
            with pytest.raises(TransientError) as raised:
                await client.read_order_and_mark(order_id, ACTIVATING)
            assert isinstance(raised.value, UnrecognisedError) is (expected == "unrecognised")
            return
        marked = await client.read_order_and_mark(order_id, ACTIVATING)
    finally:
        await client.aclose()
    assert marked.order.sf_order_id == order_id
    if expected == "already_done":
        assert (marked.outcome, marked.refused) == (WriteOutcome.ALREADY_DONE, None)
    else:
        assert marked.outcome is None and marked.refused is not None
        assert marked.refused.code in (ErrorCode.INVALID_ORDER, ErrorCode.ORDER_NOT_FOUND)
