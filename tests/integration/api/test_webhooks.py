"""The WHMCS webhook over real HTTP: a signed event invalidates that client's billing caches and
nothing else; a forged, stale or unsigned one changes nothing."""

from __future__ import annotations

import json
import secrets
import socket
import time
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from pydantic import SecretStr

from api.routes.webhooks import sign
from clients.cache import CacheKeys
from tests.fixtures.api import Api
from tests.fixtures.engine import Engine

PATH = "/api/webhooks/whmcs"
SECRET = "whmcs-webhook-secret-for-tests"


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings a test changes (parametrize `overrides` to change them)."""
    return {}


@pytest.fixture(autouse=True)
def own_settings(engine: Engine, overrides: dict[str, Any]) -> None:
    # Autouse, so it runs before `api` copies the settings; the prefix keeps other tests' keys
    # out of this one's Redis.
    engine.settings = engine.settings.model_copy(
        update={
            "cache_key_prefix": f"test-{secrets.token_hex(4)}:portal:",
            "whmcs_webhook_secret": SecretStr(SECRET),
        }
        | overrides
    )


@pytest.fixture
async def cached(engine: Engine, redis_client: redis.Redis) -> list[str]:
    """Billing keys of clients 42 and 43, and an order key: what the portal has cached."""
    keys = CacheKeys(engine.settings.cache_key_prefix)
    names = [*keys.for_whmcs_client(42), *keys.for_whmcs_client(43), keys.orders_detail("801X")]
    for name in names:
        await redis_client.set(name, "cached")
    return names


def signed(
    payload: Any, *, secret: str = SECRET, at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    timestamp = str(int(time.time() if at is None else at))
    return body, {
        "Content-Type": "application/json",
        "X-WHMCS-Timestamp": timestamp,
        "X-WHMCS-Signature": sign(secret, timestamp, body),
    }


async def post(api: Api, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await api.http.post(PATH, content=body, headers=headers)


async def remaining(client: redis.Redis, names: list[str]) -> list[str]:
    return [name for name in names if await client.exists(name)]


async def test_a_signed_event_deletes_exactly_that_clients_billing_keys(
    api: Api, engine: Engine, redis_client: redis.Redis, cached: list[str]
) -> None:
    reply = await post(api, *signed({"event": "InvoicePaid", "client_id": 42}))

    assert reply.status_code == 202
    assert reply.json() == {"client_id": 42, "keys": 3, "deferred": False}
    keys = CacheKeys(engine.settings.cache_key_prefix)
    assert await remaining(redis_client, cached) == [
        *keys.for_whmcs_client(43),
        keys.orders_detail("801X"),
    ]


async def test_a_client_id_sent_as_text_by_a_php_hook_is_taken(
    api: Api, redis_client: redis.Redis, cached: list[str]
) -> None:
    body, headers = signed({"event": "ClientEdit", "client_id": "43", "extra": {"a": 1}})
    assert (await post(api, body, headers)).status_code == 202
    assert len(await remaining(redis_client, cached)) == 4


def _forged() -> tuple[bytes, dict[str, str]]:
    return signed({"event": "InvoicePaid", "client_id": 42}, secret="not-the-secret")


# Two seconds past the 300 s tolerance: the header carries whole seconds, so one second past it
# can truncate back inside the window (seen in CI for the future case).
def _stale() -> tuple[bytes, dict[str, str]]:
    return signed({"event": "InvoicePaid", "client_id": 42}, at=time.time() - 302)


def _future() -> tuple[bytes, dict[str, str]]:
    return signed({"event": "InvoicePaid", "client_id": 42}, at=time.time() + 302)


def _unsigned() -> tuple[bytes, dict[str, str]]:
    body, headers = signed({"event": "InvoicePaid", "client_id": 42})
    del headers["X-WHMCS-Signature"]
    return body, headers


def _no_timestamp() -> tuple[bytes, dict[str, str]]:
    body, headers = signed({"event": "InvoicePaid", "client_id": 42})
    del headers["X-WHMCS-Timestamp"]
    return body, headers


def _body_swapped() -> tuple[bytes, dict[str, str]]:
    # A genuine signature for client 43, on a body naming client 42.
    _, headers = signed({"event": "InvoicePaid", "client_id": 43})
    return json.dumps({"event": "InvoicePaid", "client_id": 42}).encode(), headers


def _timestamp_moved() -> tuple[bytes, dict[str, str]]:
    # An old capture with its timestamp edited into the window.
    body, headers = signed({"event": "InvoicePaid", "client_id": 42}, at=time.time() - 3600)
    headers["X-WHMCS-Timestamp"] = str(int(time.time()))
    return body, headers


@pytest.mark.parametrize(
    "attempt",
    [_forged, _stale, _future, _unsigned, _no_timestamp, _body_swapped, _timestamp_moved],
)
async def test_a_forged_stale_or_unsigned_request_is_401_and_deletes_nothing(
    api: Api, redis_client: redis.Redis, cached: list[str], attempt: Any
) -> None:
    reply = await post(api, *attempt())

    assert reply.status_code == 401
    assert reply.json()["code"] == "unauthorized"
    assert await remaining(redis_client, cached) == cached


@pytest.mark.parametrize(
    "payload",
    [
        {"event": "InvoicePaid", "client_id": 0},
        {"event": "InvoicePaid", "client_id": -4},
        {"event": "InvoicePaid", "client_id": "abc"},
        {"event": "InvoicePaid", "client_id": True},
        {"event": "InvoicePaid", "client_id": 4.5},
        {"event": "InvoicePaid"},
        {"client_id": 42},
        [42],
        b"not json",
    ],
)
async def test_a_signed_but_invalid_body_is_422_and_deletes_nothing(
    api: Api, redis_client: redis.Redis, cached: list[str], payload: Any
) -> None:
    reply = await post(api, *signed(payload))

    assert reply.status_code == 422
    assert reply.json()["code"] == "invalid_request"
    assert await remaining(redis_client, cached) == cached


@pytest.mark.parametrize("overrides", [{"whmcs_webhook_secret": None}])
async def test_without_a_secret_the_webhook_is_503(
    api: Api, redis_client: redis.Redis, cached: list[str]
) -> None:
    reply = await post(api, *signed({"event": "InvoicePaid", "client_id": 42}))
    assert reply.status_code == 503
    assert await remaining(redis_client, cached) == cached


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("overrides", [{"redis_url": f"redis://127.0.0.1:{_closed_port()}/0"}])
async def test_with_redis_down_the_keys_wait_in_the_outbox_and_the_webhook_is_accepted(
    api: Api, engine: Engine
) -> None:
    reply = await post(api, *signed({"event": "InvoiceCreated", "client_id": 42}))

    assert reply.status_code == 202
    assert reply.json() == {"client_id": 42, "keys": 3, "deferred": True}
    connection = await asyncpg.connect(engine.settings.database_url)
    try:
        rows = await connection.fetch("SELECT keys, reason FROM cache_invalidation_outbox")
    finally:
        await connection.close()
    keys = CacheKeys(engine.settings.cache_key_prefix)
    assert [sorted(r["keys"]) for r in rows] == [sorted(keys.for_whmcs_client(42))]
    assert rows[0]["reason"] == "whmcs webhook InvoiceCreated"


async def test_the_schema_documents_the_signed_body(api: Api) -> None:
    operation = (await api.http.get("/api/openapi.json")).json()["paths"][PATH]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"event", "client_id"} <= set(body["properties"])
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"X-WHMCS-Timestamp", "X-WHMCS-Signature"}


async def test_a_replay_inside_the_window_gets_the_first_answer_and_acts_no_more(
    api: Api, engine: Engine, redis_client: redis.Redis, cached: list[str]
) -> None:
    body, headers = signed({"event": "InvoicePaid", "client_id": 42})
    first = await post(api, body, headers)
    keys = CacheKeys(engine.settings.cache_key_prefix)
    # The portal caches client 42 again; a captured copy of the request comes back.
    for name in keys.for_whmcs_client(42):
        await redis_client.set(name, "cached again")

    replays = [await post(api, body, headers) for _ in range(3)]

    assert [reply.status_code for reply in replays] == [202, 202, 202]
    assert all(reply.json() == first.json() for reply in replays)
    assert len(await remaining(redis_client, keys.for_whmcs_client(42))) == 3, "not acted on"
    # A new request (a new signature) for the same client acts as usual.
    later = signed({"event": "InvoicePaid", "client_id": 42}, at=time.time() + 1)
    assert (await post(api, *later)).status_code == 202
    assert await remaining(redis_client, keys.for_whmcs_client(42)) == []
