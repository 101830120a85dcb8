"""The dev stack's Salesforce emulator hands the engine a JWT key that the emulator trusts."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from config.settings import SALESFORCE, load_settings
from devstack.components import DevContext, Ports, salesforce_emulator
from devstack.stack_file import stack_env
from emulators.salesforce.app import create_app
from emulators.salesforce.auth import OAuthError, TokenEndpoint


def plan(dev_dir: Path) -> dict[str, str]:
    planned = salesforce_emulator(DevContext(dev_dir=dev_dir, ports=Ports(), stack={}))
    assert planned is not None
    section: dict[str, str] = dict(planned.stack["salesforce"])
    return section


def assertion(sf: dict[str, str], key_pem: str) -> str:
    claims = {
        "iss": sf["client_id"],
        "sub": sf["username"],
        "aud": sf["instance_url"],
        "exp": int(time.time()) + 60,
    }
    return jwt.encode(claims, key_pem, algorithm="RS256")


def token_endpoint(dev_dir: Path) -> TokenEndpoint:
    # The emulator exactly as `fulfillment emulate salesforce --certs-dir .dev/certs` builds it.
    endpoint: TokenEndpoint = create_app(certs_dir=dev_dir / "certs").state.emulator.tokens
    return endpoint


def test_stack_json_names_jwt_and_a_private_key_the_emulator_trusts(tmp_path: Path) -> None:
    sf = plan(tmp_path)
    assert sf["auth_flow"] == "jwt"
    key_file = Path(sf["jwt_key_file"])
    assert key_file.is_relative_to(tmp_path), "the key pair is kept under .dev/"
    assert key_file.stat().st_mode & 0o077 == 0, "the private key is the owner's only"

    endpoint = token_endpoint(tmp_path)
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}
    signed = assertion(sf, key_file.read_text())
    assert endpoint.authenticate({**grant, "assertion": signed}, None, sf["instance_url"])

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(OAuthError):
        endpoint.authenticate(
            {**grant, "assertion": assertion(sf, stranger.decode())}, None, sf["instance_url"]
        )


def test_the_key_pair_survives_a_restart_of_the_stack(tmp_path: Path) -> None:
    first = Path(plan(tmp_path)["jwt_key_file"]).read_bytes()
    assert Path(plan(tmp_path)["jwt_key_file"]).read_bytes() == first


def test_the_engine_accepts_the_salesforce_settings_the_dev_stack_writes(tmp_path: Path) -> None:
    env = stack_env({"salesforce": plan(tmp_path)})
    assert env["SF_AUTH_FLOW"] == "jwt"
    settings = load_settings(require=SALESFORCE, **{name.lower(): v for name, v in env.items()})
    assert settings.sf_auth_flow == "jwt"
    assert settings.sf_jwt_key_file == Path(env["SF_JWT_KEY_FILE"])
