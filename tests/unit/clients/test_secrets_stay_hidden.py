"""Secrets never show in reprs, exception text or error details of the clients."""

from __future__ import annotations

import socket

import pytest
from pydantic import SecretStr

from clients.errors import TransientError
from clients.freebit import FreebitClient
from clients.retry import NO_RETRY
from clients.salesforce import SalesforceClient
from clients.salesforce_auth import SalesforceAuth, SalesforceToken
from clients.whmcs import WhmcsClient
from domain.billing import PayMethod

SECRET = "s3cr3t-value-that-must-not-leak"


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_token_and_client_reprs_hide_secrets() -> None:
    token = SalesforceToken(SecretStr(SECRET), "https://example.my.salesforce.com")
    auth = SalesforceAuth(
        "https://login.example.com/services/oauth2/token",
        client_id="client",
        flow="password",
        client_secret=SecretStr(SECRET),
        username="user@example.com",
        password=SecretStr(SECRET),
    )
    shown = [
        repr(token),
        str(token),
        repr(auth),
        repr(auth.streaming_authenticator()),
        repr(SalesforceClient(auth)),
        repr(
            WhmcsClient(
                "http://127.0.0.1:1/includes/api.php",
                "id",
                SecretStr(SECRET),
                access_key=SecretStr(SECRET),
            )
        ),
        repr(FreebitClient("http://127.0.0.1:1/emptool/api/", "oem", SecretStr(SECRET))),
    ]
    assert all(SECRET not in text for text in shown), shown


def test_card_data_in_a_pay_method_reply_is_never_kept() -> None:
    # The engine needs to know that a method exists, never its card data.
    method = PayMethod.model_validate(
        {"id": 1, "type": "RemoteCreditCard", "card_last_four": "4242", "expiry_date": "12/30"}
    )
    assert "4242" not in repr(method.model_dump()) and "12/30" not in repr(method)


async def test_whmcs_connection_error_does_not_carry_credentials(closed_port: int) -> None:
    async with WhmcsClient(
        f"http://127.0.0.1:{closed_port}/includes/api.php",
        "identifier",
        SecretStr(SECRET),
        access_key=SecretStr(SECRET),
        retry=NO_RETRY,
    ) as client:
        with pytest.raises(TransientError) as info:
            await client.get_client(1)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_freebit_connection_error_does_not_carry_the_oem_key(closed_port: int) -> None:
    async with FreebitClient(
        f"http://127.0.0.1:{closed_port}/emptool/api/", "oem", SecretStr(SECRET), retry=NO_RETRY
    ) as client:
        with pytest.raises(TransientError) as info:
            await client.find_line("09012345678")
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
