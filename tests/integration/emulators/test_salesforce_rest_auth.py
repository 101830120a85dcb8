"""The OAuth token endpoint and session checks, driven the way simple-salesforce drives them."""

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceExpiredSession
from simple_salesforce.login import token_login


def _content(error: Any) -> Any:
    """The decoded error body simple-salesforce keeps on its exception."""
    return error.content


def _password_form(h: Any, **overrides: str) -> dict[str, str]:
    form = {
        "grant_type": "password",
        "client_id": h.client_id,
        "client_secret": h.client_secret,
        "username": h.username,
        "password": h.password,
    }
    form.update(overrides)
    return form


def _jwt_assertion(h: Any, *, key: bytes | None = None, minutes: int = 3, **claims: str) -> str:
    # Built exactly as simple-salesforce's SalesforceLogin builds it (note the string `exp`).
    expiration = datetime.now(UTC) + timedelta(minutes=minutes)
    payload = {
        "iss": h.client_id,
        "sub": h.username,
        "aud": "https://login.salesforce.com",
        "exp": f"{expiration.timestamp():.0f}",
    }
    payload.update(claims)
    return jwt.encode(payload, key or Path(h.jwt_private_key_file).read_bytes(), algorithm="RS256")


def test_password_grant_returns_the_salesforce_token_reply(sf_emulator):
    reply = sf_emulator.http().post(sf_emulator.token_url, data=_password_form(sf_emulator))
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {
        "access_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
    }
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == sf_emulator.instance_url
    assert body["id"].startswith(f"{sf_emulator.instance_url}/id/00D")
    assert body["issued_at"].isdigit()


def test_a_token_from_token_login_drives_simple_salesforce(sf_emulator):
    sf = sf_emulator.client()
    assert sf.query("SELECT Id, Name FROM Pricebook2 WHERE IsStandard = true")["totalSize"] == 1


@pytest.mark.parametrize(
    ("overrides", "error", "description"),
    [
        ({"password": "wrong"}, "invalid_grant", "authentication failure"),
        ({"username": "someone@else"}, "invalid_grant", "authentication failure"),
        ({"client_id": "nope"}, "invalid_client_id", "client identifier invalid"),
        ({"client_secret": "nope"}, "invalid_client", "invalid client credentials"),
        (
            {"grant_type": "authorization_code"},
            "unsupported_grant_type",
            "grant type not supported",
        ),
    ],
)
def test_wrong_credentials_get_the_real_error_json(sf_emulator, overrides, error, description):
    reply = sf_emulator.http().post(
        sf_emulator.token_url, data=_password_form(sf_emulator, **overrides)
    )
    assert reply.status_code == 400
    assert reply.json() == {"error": error, "error_description": description}
    with pytest.raises(SalesforceAuthenticationFailed) as caught:
        token_login(
            sf_emulator.token_url,
            _password_form(sf_emulator, **overrides),
            "login",
            sf_emulator.client_id,
            None,
            None,
            sf_emulator.http(),
        )
    assert caught.value.code == error


def test_client_credentials_grant_with_basic_auth(sf_emulator):
    encoded = base64.b64encode(f"{sf_emulator.client_id}:{sf_emulator.client_secret}".encode())
    token, instance = token_login(
        sf_emulator.token_url,
        {"grant_type": "client_credentials"},
        "mydomain",
        sf_emulator.client_id,
        {"Authorization": f"Basic {encoded.decode()}"},
        None,
        sf_emulator.http(),
    )
    assert token and instance == sf_emulator.instance_url.removeprefix("https://")
    bad = base64.b64encode(f"{sf_emulator.client_id}:wrong".encode()).decode()
    reply = sf_emulator.http().post(
        sf_emulator.token_url,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {bad}"},
    )
    assert reply.json()["error"] == "invalid_client"


def test_jwt_bearer_grant_verifies_signature_issuer_subject_audience_and_expiry(sf_emulator):
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    http = sf_emulator.http()

    def post(assertion: str) -> Any:
        return http.post(sf_emulator.token_url, data={"grant_type": grant, "assertion": assertion})

    assert post(_jwt_assertion(sf_emulator)).status_code == 200
    assert post(_jwt_assertion(sf_emulator, aud=sf_emulator.instance_url)).status_code == 200
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cases = [
        (_jwt_assertion(sf_emulator, key=stranger), "invalid_grant"),
        (_jwt_assertion(sf_emulator, iss="someone-else"), "invalid_client_id"),
        (_jwt_assertion(sf_emulator, sub="nobody@example.com"), "invalid_grant"),
        (_jwt_assertion(sf_emulator, aud="https://evil.example"), "invalid_grant"),
        (_jwt_assertion(sf_emulator, minutes=-5), "invalid_grant"),
    ]
    for assertion, error in cases:
        reply = post(assertion)
        assert (reply.status_code, reply.json()["error"]) == (400, error)


def test_expired_tokens_get_invalid_session_id(sf_emulator):
    sf = sf_emulator.client()
    sf.query("SELECT Id FROM Account")
    assert sf_emulator.control("POST", "tokens/expire")["expired"] >= 1
    with pytest.raises(SalesforceExpiredSession) as caught:
        sf.query("SELECT Id FROM Account")
    assert caught.value.status == 401
    assert _content(caught.value) == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]
    assert sf_emulator.client().query("SELECT Id FROM Account")["totalSize"] == 0


def test_missing_or_unknown_bearer_token_is_refused(sf_emulator):
    http = sf_emulator.http()
    base = f"{sf_emulator.instance_url}/services/data/v60.0/sobjects/"
    assert http.get(base).status_code == 401
    reply = http.get(base, headers={"Authorization": "Bearer 00Dxx!made-up"})
    assert reply.status_code == 401
    assert reply.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    versions = http.get(f"{sf_emulator.instance_url}/services/data/")
    assert versions.status_code == 200
    assert {
        "label": "Spring '24",
        "url": "/services/data/v60.0",
        "version": "60.0",
    } in versions.json()
