"""The Freebit client against the Freebit emulator over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date
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
)
from clients.freebit import FreebitClient
from clients.retry import RetryPolicy
from config.settings import load_settings
from domain.errors import WriteOutcome
from domain.sim import MnpTransfer, SimActivation, SimPhase, SimRequest, SimType
from tests.fixtures.freebit_emulator import FreebitEmulatorHandle
from tests.integration.clients._control import Control, seeded_control

FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05)
TIMEOUT = httpx.Timeout(2.0)
EID = "89049032000000000000000000000123"
FAILING_EID = "89049032000000000000000000000666"
SF_ORDER = "801000000000001AAA"


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
async def freebit(
    freebit_emulator: FreebitEmulatorHandle, freebit_control: Control
) -> AsyncIterator[FreebitClient]:
    async with _client(freebit_emulator) as client:
        yield client


def esim(account: str, **overrides: object) -> SimRequest:
    fields: dict[str, object] = {
        "sf_order_id": SF_ORDER,
        "sim_type": SimType.ESIM,
        "phone_number": account,
        "plan_code": "PASI_20G",
        "eid": EID,
    }
    return SimRequest.model_validate(fields | overrides)


def physical(account: str, **overrides: object) -> SimRequest:
    return esim(account, sim_type=SimType.PHYSICAL, eid=None, plan_code="PASI_3G", **overrides)


MNP = MnpTransfer(
    reservation_number="1234567890",
    expiry_date=date(2099, 12, 31),
    last_name_kanji="山田",
    first_name_kanji="太郎",
    last_name_kana="ヤマダ",
    first_name_kana="タロウ",
    gender="M",
    birthday=date(1990, 4, 1),
)


async def _until_settled(client: FreebitClient, account: str) -> SimActivation:
    """Poll as the activity does (there with durable timers), bounded here by wait_for."""

    async def poll() -> SimActivation:
        while True:
            line = await client.find_line(account)
            if line is not None and line.phase.is_final:
                return line
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout=5)


def _paths(control: Control) -> list[str]:
    return [r["path"].removeprefix("/emptool/api/") for r in control.requests()]


async def test_esim_registration_becomes_active(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    assert await freebit.register_line(esim("09012345678")) is WriteOutcome.APPLIED
    line = await _until_settled(freebit, "09012345678")
    assert (line.phase, line.sim_type, line.state) == (SimPhase.ACTIVE, SimType.ESIM, "active")
    # One authOem for the whole session: the key is cached.
    assert _paths(freebit_control).count("authOem/") == 1


async def test_physical_sim_registration_becomes_active(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.register_line(physical("09012345679"))
    line = await _until_settled(freebit, "09012345679")
    assert (line.phase, line.sim_type) == (SimPhase.ACTIVE, SimType.PHYSICAL)


async def test_network_rejection_shows_as_failed_phase(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.register_line(esim("09012345670", eid=FAILING_EID))
    line = await _until_settled(freebit, "09012345670")
    assert line.phase is SimPhase.FAILED and line.fail_reason


async def test_an_unknown_line_is_none(freebit: FreebitClient) -> None:
    assert await freebit.find_line("09099999999") is None


async def test_refused_request_carries_the_result_code(freebit: FreebitClient) -> None:
    with pytest.raises(BusinessError) as info:
        await freebit.register_line(esim("09012345671", plan_code="NO_SUCH_PLAN"))
    assert info.value.code is ErrorCode.SIM_PROVISIONING_FAILED
    assert info.value.detail is not None and info.value.detail.startswith("resultCode ")


@pytest.mark.parametrize("request_for", [esim, physical])
async def test_number_portability_sends_the_reservation_and_the_person(
    freebit: FreebitClient, freebit_control: Control, request_for: Callable[..., SimRequest]
) -> None:
    await freebit.register_line(request_for("09012345672", mnp=MNP))
    assert (await _until_settled(freebit, "09012345672")).phase is SimPhase.ACTIVE
    [sent] = [r for r in freebit_control.requests() if "addAcnt" in r["path"]]
    assert sent["status"] == 200


@pytest.mark.parametrize("mode", ["status", "reset", "hang"])
async def test_a_lost_registration_reply_is_outcome_unknown_and_the_read_finds_the_line(
    freebit_emulator: FreebitEmulatorHandle, freebit_control: Control, mode: str
) -> None:
    async with _client(freebit_emulator, timeout=httpx.Timeout(1.0)) as freebit:
        await freebit.find_line("08011110001")
        match: dict[str, Any] = {"path": "/emptool/api/mvno/esim/addAcnt/"}
        if mode == "hang":
            match["ms"] = 5000
        freebit_control.lose_reply(mode=mode, **match)
        with pytest.raises(OutcomeUnknownError):
            await freebit.register_line(esim("09012345680"))
        line = await freebit.find_line("09012345680")
        assert line is not None and line.sim_type is SimType.ESIM
        # The activity's repeat is then recognised as done, and no second line is made.
        assert await freebit.register_line(esim("09012345680")) is WriteOutcome.ALREADY_DONE
    registrations = [r for r in freebit_control.requests() if "addAcnt" in r["path"]]
    assert len(registrations) == 2


async def test_a_lost_physical_sim_registration_reply_then_a_repeat_is_already_done(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.find_line("08011110001")
    freebit_control.lose_reply(mode="reset", path="/emptool/api/master/addAcnt/")
    with pytest.raises(OutcomeUnknownError):
        await freebit.register_line(physical("09012345681", mnp=MNP))
    line = await freebit.find_line("09012345681")
    assert line is not None and line.sim_type is SimType.PHYSICAL
    assert await freebit.register_line(physical("09012345681", mnp=MNP)) is (
        WriteOutcome.ALREADY_DONE
    )


async def test_registering_the_number_on_another_sim_is_refused(freebit: FreebitClient) -> None:
    await freebit.register_line(physical("09012345673"))
    assert await freebit.register_line(physical("09012345673")) is WriteOutcome.ALREADY_DONE
    with pytest.raises(BusinessError) as info:
        await freebit.register_line(esim("09012345673"))
    assert info.value.code is ErrorCode.SIM_PROVISIONING_FAILED
    assert "another SIM" in info.value.message


@pytest.mark.parametrize("kind", ["esim", "physical"])
async def test_a_line_whose_activation_failed_is_reissued_once_the_cause_is_cleared(
    freebit: FreebitClient, freebit_control: Control, kind: str
) -> None:
    number = "09012345690" if kind == "esim" else "09012345691"
    request = esim(number, eid=FAILING_EID) if kind == "esim" else physical(number)
    if kind == "physical":
        freebit_control.configure(failing_accounts=[number])
    assert await freebit.register_line(request) is WriteOutcome.APPLIED
    failed = await _until_settled(freebit, number)
    assert failed.phase is SimPhase.FAILED
    # The cause is cleared at Freebit; the same request again re-issues the line (addKind R).
    freebit_control.configure(failing_eids=[], failing_accounts=[])
    assert await freebit.register_line(request) is WriteOutcome.APPLIED
    assert (await _until_settled(freebit, number)).phase is SimPhase.ACTIVE
    registrations = [r for r in freebit_control.requests() if "addAcnt" in r["path"]]
    assert len(registrations) == 3  # new, refused as existing, re-issue
    # One line, active; repeating now is done, not another re-issue.
    assert await freebit.register_line(request) is WriteOutcome.ALREADY_DONE


async def test_an_esim_line_on_another_eid_is_another_sims(freebit: FreebitClient) -> None:
    await freebit.register_line(esim("09012345692"))
    await _until_settled(freebit, "09012345692")
    with pytest.raises(BusinessError) as info:
        await freebit.register_line(
            esim("09012345692", eid="8904903200000000000000000000" + "4444")
        )
    assert info.value.code is ErrorCode.SIM_PROVISIONING_FAILED
    assert "another SIM (eSIM, EID ending 0123, active)" in info.value.message
    assert "retry" in info.value.message


async def test_expired_auth_key_is_renewed_transparently(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    assert await freebit.find_line("08011110001") is not None
    freebit_control.expire_tokens()
    freebit_control.clear_requests()
    await freebit.register_line(physical("09012345674"))
    assert _paths(freebit_control) == ["master/addAcnt/", "authOem/", "master/addAcnt/"]
    assert (await _until_settled(freebit, "09012345674")).phase is SimPhase.ACTIVE


async def test_concurrent_calls_after_key_expiry_share_one_refresh(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.find_line("08011110001")
    freebit_control.expire_tokens()
    freebit_control.clear_requests()
    lines = await asyncio.gather(*(freebit.find_line("08011110001") for _ in range(20)))
    assert all(line is not None for line in lines)
    assert _paths(freebit_control).count("authOem/") == 1


async def test_an_outage_of_auth_oem_is_not_multiplied_by_nested_retries(
    freebit_emulator: FreebitEmulatorHandle, freebit_control: Control
) -> None:
    freebit_control.fail(10, 503, path="/emptool/api/authOem/")
    async with _client(freebit_emulator) as client:
        with pytest.raises(TransientError):
            await client.find_line("08011110001")
    # Three attempts of the read, each one authOem: not three times three.
    assert _paths(freebit_control).count("authOem/") == 3
    freebit_control.clear_faults()


async def test_auth_key_max_age_renews_before_use(
    freebit_emulator: FreebitEmulatorHandle, freebit_control: Control
) -> None:
    async with _client(freebit_emulator, auth_key_max_age=0.0) as client:
        await client.find_line("08011110001")
        await client.find_line("08011110002")
    assert _paths(freebit_control).count("authOem/") == 2


async def test_wrong_oem_key_is_a_configuration_error(
    freebit_emulator: FreebitEmulatorHandle, freebit_control: Control
) -> None:
    async with FreebitClient(
        freebit_emulator.api_url, freebit_emulator.oem_id, SecretStr("wrong-oem-key")
    ) as client:
        with pytest.raises(ConfigurationError) as info:
            await client.find_line("08011110001")
    assert "wrong-oem-key" not in repr(info.value) and "wrong-oem-key" not in str(info.value)
    assert _paths(freebit_control) == ["authOem/"]


async def test_reads_ride_out_a_brief_outage(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.find_line("08011110001")
    freebit_control.fail(2, 503, path="/emptool/api/master/getAcnt/")
    line = await freebit.find_line("08011110001")
    assert line is not None and line.phase is SimPhase.ACTIVE


async def test_a_server_error_to_a_registration_is_outcome_unknown_and_not_repeated(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.find_line("08011110001")
    freebit_control.clear_requests()
    freebit_control.fail(1, 500, path="/emptool/api/mvno/esim/addAcnt/")
    with pytest.raises(OutcomeUnknownError):
        await freebit.register_line(esim("09012345675"))
    assert _paths(freebit_control) == ["mvno/esim/addAcnt/"]
    # Freebit failed before registering: the follow-up read finds no line.
    assert await freebit.find_line("09012345675") is None


async def test_a_slow_reply_times_out_as_transient(
    freebit_emulator: FreebitEmulatorHandle, freebit_control: Control
) -> None:
    async with _client(
        freebit_emulator, timeout=httpx.Timeout(0.2), retry=RetryPolicy(attempts=1)
    ) as client:
        await client.find_line("08011110001")
        freebit_control.delay(600, path="/emptool/api/master/getAcnt/")
        with pytest.raises(TransientError) as info:
            await client.find_line("08011110001")
    freebit_control.clear_faults()
    assert "timed out" in str(info.value)


async def test_a_cancelled_call_does_not_block_the_next_one(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.find_line("08011110001")
    freebit_control.delay(20_000, path="/emptool/api/master/getAcnt/")
    slow = asyncio.create_task(freebit.find_line("08011110001"))
    await asyncio.sleep(0.2)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    freebit_control.clear_faults()
    async with asyncio.timeout(3):
        assert await freebit.find_line("08011110002") is not None


async def test_from_settings_talks_to_the_configured_endpoint(
    freebit_emulator: FreebitEmulatorHandle, freebit_control: Control
) -> None:
    settings = load_settings(
        freebit_base_url=freebit_emulator.api_url,
        freebit_oem_id=freebit_emulator.oem_id,
        freebit_oem_key=freebit_emulator.oem_key,
    )
    async with FreebitClient.from_settings(settings) as client:
        line = await client.find_line("08011110002")
        assert line is not None and line.sim_type is SimType.ESIM


AUTH_REFUSED = {"resultCode": "202", "status": {"message": "invalid authKey", "statusCode": "401"}}


async def test_an_auth_key_refused_after_a_refresh_is_transient(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.find_line("08011110001")
    freebit_control.clear_requests()
    freebit_control.fail(2, 200, AUTH_REFUSED, path="/emptool/api/master/addAcnt/")
    with pytest.raises(TransientError) as info:
        await freebit.register_line(physical("09012345676"))
    assert "after refresh" in str(info.value)
    # One refresh and one repeat, never more: a registration is not retried by the client.
    assert _paths(freebit_control) == ["master/addAcnt/", "authOem/", "master/addAcnt/"]


async def test_a_non_json_reply_is_transient_and_reads_retry_it(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    await freebit.find_line("08011110001")
    freebit_control.fail(1, 200, "<html>maintenance</html>", path="/emptool/api/master/getAcnt/")
    assert await freebit.find_line("08011110001") is not None
    freebit_control.fail(5, 200, "<html>maintenance</html>", path="/emptool/api/master/getAcnt/")
    with pytest.raises(TransientError):
        await freebit.find_line("08011110001")
    freebit_control.clear_faults()


async def test_an_unknown_line_state_is_not_taken_for_in_progress(
    freebit: FreebitClient, freebit_control: Control
) -> None:
    reply = {
        "resultCode": "100",
        "status": {"message": "OK", "statusCode": "200"},
        "responseDatas": [{"kind": "MVNO", "account": "08011110001", "state": "suspended"}],
    }
    freebit_control.fail(1, 200, reply, path="/emptool/api/master/getAcnt/")
    line = await freebit.find_line("08011110001")
    assert line is not None
    assert (line.phase, line.state) == (SimPhase.UNKNOWN, "suspended")
    assert not line.phase.is_final


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
    assert await freebit.register_line(physical("09012345677")) is WriteOutcome.APPLIED
