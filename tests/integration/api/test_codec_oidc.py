"""The codec behind single sign-on (API_CODEC_AUTH=oidc), spoken as the Temporal UI speaks it.

The dev server's built-in UI has no sign-in and no standalone UI server is available here, so
the UI's requests are reproduced exactly (headers and body, for decode and encode) with access
tokens minted in the test and a key set served by a small local JWKS endpoint over real HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pydantic import SecretStr

from api.oidc import InvalidOperatorTokenError, OidcVerifier
from config.settings import Settings
from tests.fixtures.api import OPS_TOKEN, SERVICE_TOKEN, Api, serve_api
from tests.fixtures.engine import Engine

UI = "http://localhost:8233"
ISSUER = "https://login.example.jp/realms/ops"
AUDIENCE = "fulfillment-codec"
GROUP = "fulfillment-ops"


@dataclass
class Provider:
    """The identity provider's side: its signing keys and the JWKS endpoint that publishes them."""

    url: str = ""
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    fetches: int = 0

    def new_key(self, kid: str, *, publish: bool = True) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            jwk = json.loads(RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append(jwk | {"kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def token(self, kid: str = "k1", **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "operator-1",
            "iat": now,
            "exp": now + 300,
            "groups": [GROUP, "everyone"],
        } | claims
        return jwt.encode(
            {k: v for k, v in body.items() if v is not None},
            self.keys[kid],
            algorithm="RS256",
            headers={"kid": kid},
        )


@pytest.fixture
def provider() -> Iterator[Provider]:
    served = Provider()
    served.new_key("k1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.fetches += 1
            body = json.dumps(served.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}/protocol/openid-connect/certs"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


def oidc_settings(engine: Engine, jwks_url: str, **more: Any) -> Settings:
    """The engine's settings with the codec behind our test provider."""
    return engine.settings.model_copy(
        update={
            "api_service_token": SecretStr(SERVICE_TOKEN),
            "api_ops_token": SecretStr(OPS_TOKEN),
            "api_codec_auth": "oidc",
            "api_codec_oidc_issuer": ISSUER,
            "api_codec_oidc_audience": AUDIENCE,
            "api_codec_oidc_jwks_url": jwks_url,
        }
        | more
    )


@pytest_asyncio.fixture
async def codec(engine: Engine, provider: Provider) -> AsyncIterator[Api]:
    settings = oidc_settings(engine, provider.url, api_codec_required_claim=f"groups={GROUP}")
    async with serve_api(settings) as served:
        yield served


def ui_headers(token: str | None, namespace: str | None = "default") -> dict[str, str]:
    """What the UI's browser sends with `codec.passAccessToken` on."""
    headers = {"Content-Type": "application/json", "Origin": UI}
    if namespace is not None:
        headers["X-Namespace"] = namespace
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def ui_body(*documents: dict[str, Any]) -> str:
    """A Payloads document as the UI posts it: base64 metadata and data, JSON-encoded."""

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    payloads = [
        {"metadata": {"encoding": b64(b"json/plain")}, "data": b64(json.dumps(doc).encode())}
        for doc in documents
    ]
    return json.dumps({"payloads": payloads})


async def test_a_signed_in_operator_encodes_a_signal_and_decodes_it_back(
    codec: Api, provider: Provider
) -> None:
    token = provider.token()
    signal = ui_body({"reason": "card added", "requested_by": "ops@example.jp"})

    encoded = await codec.http.post("/api/codec/encode", content=signal, headers=ui_headers(token))

    assert encoded.status_code == 200, encoded.text
    assert encoded.headers["access-control-allow-origin"] == UI
    assert "access-control-allow-credentials" not in encoded.headers
    assert "card added" not in encoded.text, "what the UI sends on is encrypted"
    decoded = await codec.http.post(
        "/api/codec/decode", content=encoded.text, headers=ui_headers(token)
    )
    assert decoded.status_code == 200, decoded.text
    (payload,) = decoded.json()["payloads"]
    assert json.loads(base64.b64decode(payload["data"]))["reason"] == "card added"
    assert provider.fetches == 1, "the key set is fetched once and kept"


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "some-other-api"}, "not issued for this API"),
        ({"iss": "https://evil.example/realms/ops"}, "another issuer"),
        ({"groups": ["everyone"]}, f"groups={GROUP}"),
        ({"groups": None}, f"groups={GROUP}"),
        ({"exp": None}, "exp"),
    ],
)
async def test_a_token_that_is_not_a_valid_operators_is_refused_saying_why(
    codec: Api, provider: Provider, claims: dict[str, Any], why: str
) -> None:
    for route in ("/api/codec/decode", "/api/codec/encode"):
        reply = await codec.http.post(
            route, content=ui_body({}), headers=ui_headers(provider.token(**claims))
        )
        assert reply.status_code == 401, reply.text
        assert why in reply.json()["message"]
        assert reply.headers["www-authenticate"] == "Bearer"


async def test_forged_unsigned_and_shared_secret_tokens_are_refused(
    codec: Api, provider: Provider
) -> None:
    provider.new_key("forger", publish=False)
    genuine = provider.token()
    forged = jwt.encode(
        jwt.decode(genuine, options={"verify_signature": False}),
        provider.keys["forger"],
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    claims = jwt.decode(genuine, options={"verify_signature": False})
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"kid": "k1"})
    shared = jwt.encode(claims, "a-shared-secret-of-32-bytes-long!!", algorithm="HS256")
    for token, why in (
        (forged, "signature does not verify"),
        (unsigned, "not accepted"),
        (shared, "not accepted"),
        ("not-a-jwt", "not a JWT"),
        (OPS_TOKEN, "not a JWT"),
    ):
        reply = await codec.http.post(
            "/api/codec/decode", content=ui_body({}), headers=ui_headers(token)
        )
        assert reply.status_code == 401, (why, reply.text)
        assert why in reply.json()["message"]
    missing = await codec.http.post(
        "/api/codec/decode", content=ui_body({}), headers=ui_headers(None)
    )
    assert missing.status_code == 401


@pytest.mark.parametrize("namespace", ["production-other", None])
async def test_the_codec_serves_our_namespace_only(
    codec: Api, provider: Provider, namespace: str | None
) -> None:
    reply = await codec.http.post(
        "/api/codec/decode",
        content=ui_body({}),
        headers=ui_headers(provider.token(), namespace=namespace),
    )
    assert reply.status_code == 403
    assert "'default'" in reply.json()["message"]


async def test_the_preflight_is_answered_for_the_ui_only_and_without_credentials(
    codec: Api,
) -> None:
    asked = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    ours = await codec.http.options("/api/codec/encode", headers={"Origin": UI} | asked)
    assert ours.status_code == 200
    assert ours.headers["access-control-allow-origin"] == UI
    assert "access-control-allow-credentials" not in ours.headers
    stranger = await codec.http.options(
        "/api/codec/encode", headers={"Origin": "https://evil.example"} | asked
    )
    assert "access-control-allow-origin" not in stranger.headers


async def test_a_provider_that_cannot_be_reached_is_a_503_not_a_refusal(
    engine: Engine, provider: Provider
) -> None:
    async with serve_api(oidc_settings(engine, "http://127.0.0.1:9/certs")) as served:
        reply = await served.http.post(
            "/api/codec/decode", content=ui_body({}), headers=ui_headers(provider.token())
        )
    assert reply.status_code == 503
    assert "identity provider" in reply.json()["message"]


async def test_a_rotated_key_is_fetched_on_its_first_token_and_forged_key_ids_are_rate_limited(
    provider: Provider,
) -> None:
    async with httpx.AsyncClient() as http:
        verifier = OidcVerifier(
            issuer=ISSUER,
            audience=AUDIENCE,
            jwks_url=provider.url,
            required_claim=None,
            http=http,
            refresh_interval=0.5,
        )
        await verifier.verify(provider.token("k1"))
        # The provider rotates: a token under the new key before the key set says so.
        provider.new_key("k2", publish=False)
        with pytest.raises(InvalidOperatorTokenError, match="unknown key"):
            await verifier.verify(provider.token("k2"))
        provider.published.append("k2")
        await asyncio.sleep(0.6)
        assert (await verifier.verify(provider.token("k2")))["sub"] == "operator-1"
        # A burst of made-up key ids costs the provider at most one fetch per interval. The
        # keys are made first: making 20 RSA keys on a loaded machine outlasts an interval.
        forged = []
        for n in range(20):
            provider.new_key(f"made-up-{n}", publish=False)
            forged.append(provider.token(f"made-up-{n}"))
        fetched = provider.fetches
        began = time.monotonic()
        for token in forged:
            with pytest.raises(InvalidOperatorTokenError):
                await verifier.verify(token)
        intervals = int((time.monotonic() - began) / 0.5)
        assert provider.fetches - fetched <= 1 + intervals
