"""The Freebit client against the Freebit emulator over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from clients.errors import BusinessError, ConfigurationError, ErrorCode, TransientError
from clients.freebit import (
    EsimActivation,
    FreebitAccount,
    FreebitClient,
    MnpReservation,
    PhysicalSimActivation,
)
from clients.retry import RetryPolicy
from config.settings import load_settings
from tests.fixtures.freebit_emulator import FreebitEmulatorHandle
from tests.integration.clients._control import Control, seeded_control

FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05)
TIMEOUT = httpx.Timeout(2.0)
EID = "89049032000000000000000000000123"
FAILING_EID = "89049032000000000000000000000666"


@pytest.fixture
def freebit_control(freebit_emulator: FreebitEmulatorHandle) -> Iterator[Control]:
    with seeded_control(freebit_emulator.control_url) as control:
        yield control


def _client(
    h: FreebitEmulatorHandle,
    *,
    timeout: httpx.Timeout = TIMEOUT,
    retry: RetryPolicy = FAST_RETRY,
    auth_key_max_age: float | None = None,
) -> FreebitClient:
    return FreebitClient(
        h.api_url,
        h.oem_id,
        SecretStr(h.oem_key),
        timeout=timeout,
        retry=retry,
        auth_key_max_age=auth_key_max_age,
    )


@pytest.fixture
async def freebit(freebit_emulator: FreebitEmulatorHandle) -> AsyncIterator[FreebitClient]:
    async with _client(freebit_emulator) as client:
        yield client


async def _until_settled(client: FreebitClient, account: str) -> FreebitAccount:
    """Poll as the activity does (there with durable timers), bounded here by wait_for."""

    async def poll() -> FreebitAccount:
        while True:
            line = await client.get_account(account)
            if line.phase != "pending":
                return line
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout=5)


def _paths(control: Control) -> list[str]:
    return [r["path"].removeprefix("/emptool/api/") for r in control.requests()]


async def test_esim_activation_becomes_active(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    accepted = await freebit.activate_esim(
        EsimActivation(account="09012345678", eid=EID, plan_code="PASI_20G")
    )
    assert accepted.account == "09012345678" and accepted.process_no
    line = await _until_settled(freebit, "09012345678")
    assert (line.phase, line.sim_type, line.eid, line.plan_code) == (
        "active",
        "esim",
        EID,
        "PASI_20G",
    )
    # One authOem for the whole session: the key is cached.
    assert _paths(freebit_control).count("authOem/") == 1


async def test_physical_sim_activation_becomes_active(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.activate_physical_sim(
        PhysicalSimActivation(account="09012345679", plan_code="PASI_3G")
    )
    line = await _until_settled(freebit, "09012345679")
    assert (line.phase, line.sim_type) == ("active", "physical")


async def test_network_rejection_shows_as_failed_state(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.activate_esim(
        EsimActivation(account="09012345670", eid=FAILING_EID, plan_code="PASI_20G")
    )
    line = await _until_settled(freebit, "09012345670")
    assert line.phase == "failed" and line.fail_reason


async def test_refused_request_carries_the_result_code(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    with pytest.raises(BusinessError) as info:
        await freebit.activate_esim(
            EsimActivation(account="09012345671", eid=EID, plan_code="NO_SUCH_PLAN")
        )
    assert info.value.code is ErrorCode.SIM_PROVISIONING_FAILED
    assert info.value.detail is not None and info.value.detail.startswith("resultCode ")


async def test_number_portability_sends_the_reservation(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    request = EsimActivation(
        account="09012345672",
        eid=EID,
        plan_code="PASI_20G",
        add_kind="M",
        mnp=MnpReservation(reserveNumber="1234567890"),
    )
    await freebit.activate_esim(request)
    assert (await _until_settled(freebit, "09012345672")).phase == "active"


async def test_registering_a_line_twice_is_refused(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    request = PhysicalSimActivation(account="09012345673", plan_code="PASI_3G")
    await freebit.activate_physical_sim(request)
    with pytest.raises(BusinessError) as info:
        await freebit.activate_physical_sim(request)
    assert info.value.code is ErrorCode.SIM_PROVISIONING_FAILED


async def test_expired_auth_key_is_renewed_transparently(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    assert (await freebit.get_account("08011110001")).phase == "active"
    freebit_control.expire_tokens()
    freebit_control.clear_requests()
    await freebit.activate_physical_sim(
        PhysicalSimActivation(account="09012345674", plan_code="PASI_3G")
    )
    assert _paths(freebit_control) == ["master/addAcnt/", "authOem/", "master/addAcnt/"]
    assert (await _until_settled(freebit, "09012345674")).phase == "active"


async def test_auth_key_max_age_renews_before_use(
    freebit_emulator: FreebitEmulatorHandle, freebit_control: Control
) -> None:
    async with _client(freebit_emulator, auth_key_max_age=0.0) as client:
        await client.get_account("08011110001")
        await client.get_account("08011110002")
    assert _paths(freebit_control).count("authOem/") == 2


async def test_wrong_oem_key_is_a_configuration_error(
    freebit_emulator: FreebitEmulatorHandle, freebit_control: Control
) -> None:
    async with FreebitClient(
        freebit_emulator.api_url, freebit_emulator.oem_id, SecretStr("wrong-oem-key")
    ) as client:
        with pytest.raises(ConfigurationError) as info:
            await client.get_account("08011110001")
    assert "wrong-oem-key" not in repr(info.value) and "wrong-oem-key" not in str(info.value)
    assert _paths(freebit_control) == ["authOem/"]


async def test_reads_ride_out_a_brief_outage(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.get_account("08011110001")
    freebit_control.fail(2, 503, path="/emptool/api/master/getAcnt/")
    assert (await freebit.get_account("08011110001")).phase == "active"


async def test_activation_is_not_retried_on_an_outage(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.get_account("08011110001")
    freebit_control.clear_requests()
    freebit_control.fail(1, 500, path="/emptool/api/mvno/esim/addAcnt/")
    with pytest.raises(TransientError):
        await freebit.activate_esim(
            EsimActivation(account="09012345675", eid=EID, plan_code="PASI_20G")
        )
    assert _paths(freebit_control) == ["mvno/esim/addAcnt/"]


async def test_a_slow_reply_times_out_as_transient(
    freebit_emulator: FreebitEmulatorHandle, freebit_control: Control
) -> None:
    async with _client(
        freebit_emulator, timeout=httpx.Timeout(0.2), retry=RetryPolicy(attempts=1)
    ) as client:
        await client.get_account("08011110001")
        freebit_control.delay(600, path="/emptool/api/master/getAcnt/")
        with pytest.raises(TransientError) as info:
            await client.get_account("08011110001")
    freebit_control.clear_faults()
    assert "timed out" in str(info.value)


async def test_from_settings_talks_to_the_configured_endpoint(
    freebit_emulator: FreebitEmulatorHandle, freebit_control: Control
) -> None:
    settings = load_settings(
        freebit_base_url=freebit_emulator.api_url,
        freebit_oem_id=freebit_emulator.oem_id,
        freebit_oem_key=freebit_emulator.oem_key,
    )
    async with FreebitClient.from_settings(settings) as client:
        assert (await client.get_account("08011110002")).sim_type == "esim"


AUTH_REFUSED = {"resultCode": "202", "status": {"message": "invalid authKey", "statusCode": "401"}}


async def test_an_auth_key_refused_after_a_refresh_is_transient(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.get_account("08011110001")
    freebit_control.clear_requests()
    freebit_control.fail(2, 200, AUTH_REFUSED, path="/emptool/api/master/addAcnt/")
    with pytest.raises(TransientError) as info:
        await freebit.activate_physical_sim(
            PhysicalSimActivation(account="09012345676", plan_code="PASI_3G")
        )
    assert "after refresh" in str(info.value)
    # One refresh and one repeat, never more: an activation is not retried by the client.
    assert _paths(freebit_control) == ["master/addAcnt/", "authOem/", "master/addAcnt/"]


async def test_a_non_json_reply_is_transient_and_reads_retry_it(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.get_account("08011110001")
    freebit_control.fail(1, 200, "<html>maintenance</html>", path="/emptool/api/master/getAcnt/")
    assert (await freebit.get_account("08011110001")).phase == "active"
    freebit_control.fail(5, 200, "<html>maintenance</html>", path="/emptool/api/master/getAcnt/")
    with pytest.raises(TransientError):
        await freebit.get_account("08011110001")
    freebit_control.clear_faults()


async def test_a_numeric_result_code_is_success_too(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    # The emulator answers with strings; a canned reply carries the numbers the spec describes.
    accepted = {
        "resultCode": 100,
        "status": {"message": "OK", "statusCode": 200},
        "account": "09012345677",
        "processNo": 123456789012,
    }
    freebit_control.fail(1, 200, accepted, path="/emptool/api/master/addAcnt/")
    result = await freebit.activate_physical_sim(
        PhysicalSimActivation(account="09012345677", plan_code="PASI_3G")
    )
    assert result.process_no == "123456789012"
