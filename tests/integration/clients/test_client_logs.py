"""What the WHMCS and Freebit clients log, through the real logging setup, carries no secret
and no whole phone number.

Logging is configured as a process does it but without naming any secret value to the redactor,
so a value the clients themselves put into a log line (or into an exception that gets logged)
would show up here.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from clients.errors import ClientError
from clients.freebit import FreebitClient
from clients.retry import RetryPolicy
from clients.whmcs import WhmcsClient
from config.logging import configure_logging, get_logger
from domain.billing import BillingLine, BillingOrder
from domain.sim import SimRequest, SimType
from tests.fixtures.freebit_emulator import FreebitEmulatorHandle
from tests.fixtures.whmcs_emulator import WhmcsEmulatorHandle
from tests.integration.clients._control import seeded_control

FAST_RETRY = RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02)
log = get_logger(__name__)


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


async def test_whmcs_client_logs_no_credentials(
    whmcs_emulator: WhmcsEmulatorHandle, log_output: io.StringIO
) -> None:
    whmcs_emulator.seed_demo()
    async with WhmcsClient(
        whmcs_emulator.api_url,
        whmcs_emulator.identifier,
        SecretStr(whmcs_emulator.secret),
        access_key=SecretStr(whmcs_emulator.access_key),
        retry=FAST_RETRY,
    ) as client:
        await client.add_order(
            BillingOrder(
                sf_order_id="801000000000001AAA",
                whmcs_client_id=1,
                payment_method="stripe",
                lines=(
                    BillingLine(
                        sf_order_item_id="802000000000001AAA",
                        whmcs_product_id=1,
                        billing_cycle="monthly",
                    ),
                ),
            )
        )
    async with WhmcsClient(
        whmcs_emulator.api_url, whmcs_emulator.identifier, SecretStr(whmcs_emulator.secret + "x")
    ) as refused:
        with pytest.raises(ClientError) as info:
            await refused.get_client(1)
    log.error("whmcs.call_failed", error=info.value, exc_info=info.value)

    text = log_output.getvalue()
    assert "whmcs.order_added" in text and "Authentication Failed" in text
    for secret in (whmcs_emulator.secret, whmcs_emulator.access_key):
        assert secret not in text


async def test_freebit_client_logs_no_oem_key_auth_key_or_whole_phone_number(
    freebit_emulator: FreebitEmulatorHandle, log_output: io.StringIO
) -> None:
    with seeded_control(freebit_emulator.control_url) as control:
        async with FreebitClient(
            freebit_emulator.api_url,
            freebit_emulator.oem_id,
            SecretStr(freebit_emulator.oem_key),
            retry=FAST_RETRY,
        ) as client:
            await client.find_line("08011110001")
            issued = set(control.state()["auth_keys"])
            control.expire_tokens()
            await client.register_line(
                SimRequest(
                    sf_order_id="801000000000001AAA",
                    sim_type=SimType.PHYSICAL,
                    phone_number="09012345678",
                    plan_code="PASI_3G",
                )
            )
            issued |= set(control.state()["auth_keys"])
        async with FreebitClient(
            freebit_emulator.api_url, freebit_emulator.oem_id, SecretStr("wrong-oem-key")
        ) as refused:
            with pytest.raises(ClientError) as info:
                await refused.find_line("08011110001")
        log.error("freebit.call_failed", error=info.value, exc_info=info.value)

    text = log_output.getvalue()
    assert "freebit.auth_key_refused" in text and "freebit.line_requested" in text
    assert len(issued) == 2
    for secret in (freebit_emulator.oem_key, "wrong-oem-key", *issued):
        assert secret not in text
    # The line's phone number is personal data: only its last four digits are logged.
    assert "09012345678" not in text and "*******5678" in text
