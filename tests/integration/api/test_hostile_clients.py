"""The API under hostile and careless clients, over real HTTP against uvicorn: what they send is
refused with the right status, counted, and never grows the metrics or leaks internals."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr
from structlog.testing import capture_logs

from api.server import HeaderTimeoutH11Protocol
from tests.fixtures.api import Api, serve_api
from tests.fixtures.engine import Engine

ORDER = "801000000000001AAA"


@pytest_asyncio.fixture
async def failing(api: Api, engine: Engine) -> AsyncIterator[Api]:
    """The API with one more route, one that raises (an unexpected bug)."""

    def prepare(app: FastAPI) -> None:
        @app.get("/api/public/boom")
        async def boom() -> None:
            raise RuntimeError("a bug")

    async with serve_api(engine.settings, prepare) as served:
        yield served


@pytest_asyncio.fixture
async def webhook(engine: Engine) -> AsyncIterator[Api]:
    """The API with the WHMCS webhook configured: a route that reads its body before anything."""
    settings = engine.settings.model_copy(
        update={"whmcs_webhook_secret": SecretStr("webhook-secret-for-tests-0123456789")}
    )
    async with serve_api(settings) as served:
        yield served


async def raw(api: Api, request: bytes, *, read_for: float = 5.0) -> bytes:
    """Send bytes as they are on a new connection; what comes back before it closes (the
    server may answer, and close, before it has read all that was sent)."""
    address = urlsplit(api.base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            for start in range(0, len(request), 16_384):
                writer.write(request[start : start + 16_384])
                await writer.drain()

    sending = asyncio.create_task(send())
    try:
        async with asyncio.timeout(read_for):
            answer = b""
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(65_536):
                    answer += chunk
            return answer
    finally:
        sending.cancel()
        writer.close()


def samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


async def test_made_up_methods_and_paths_never_grow_the_metrics(api: Api) -> None:
    async def probe(batch: range) -> None:
        for n in batch:
            await api.http.request(f"MFOO{n}", "/api/public/services/catalog")
            await api.http.get(f"/api/nowhere/{n}")

    def series(text: str) -> set[str]:
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith("fulf")}

    await probe(range(5))
    await api.http.get("/metrics")  # the scrape counts itself from the second one on
    before = series((await api.http.get("/metrics")).text)
    await probe(range(5, 200))
    text = (await api.http.get("/metrics")).text
    requests = samples(text, "fulfillment_api_requests_total")
    assert not [line for line in requests if "MFOO" in line or "/api/nowhere/" in line]
    assert any('method="OTHER"' in line for line in requests)
    assert any('route="unmatched"' in line for line in requests)
    assert series(text) == before, "the same series counting up, not new ones"


async def test_every_response_is_counted_errors_and_early_refusals_included(
    failing: Api,
) -> None:
    with capture_logs():
        crashed = await failing.http.get("/api/public/boom")
    too_big = await failing.http.post(
        "/api/codec/decode", content=b"x" * 300_000, headers={"Content-Type": "application/json"}
    )
    text = (await failing.http.get("/metrics")).text
    assert (crashed.status_code, too_big.status_code) == (500, 413)
    assert 'route="/api/public/boom",status="500"' in text
    assert re.search(r'method="POST",route="unmatched",status="413"\} [1-9]', text)


async def test_control_characters_are_bad_input_not_a_server_error(api: Api) -> None:
    retry = f"/api/ops/fulfillments/{ORDER}/retry"
    nul_reason = await api.http.post(retry, json={"reason": "card\x00added"}, headers=api.ops())
    nul_who = await api.http.post(
        retry, json={"reason": "card added"}, headers=api.ops(who="ops\x01@example.jp")
    )
    assert (nul_reason.status_code, nul_who.status_code) == (422, 422)
    assert nul_reason.json()["code"] == "invalid_request"


async def test_a_crafted_page_cursor_is_bad_input_not_an_outage(api: Api) -> None:
    import base64

    crafted = base64.urlsafe_b64encode(f"0001-01-01T00:00:00+14:00|{ORDER}".encode()).decode()
    reply = await api.http.get(
        "/api/ops/fulfillments", params={"cursor": crafted.rstrip("=")}, headers=api.ops()
    )
    assert reply.status_code == 422
    assert "Postgres" not in reply.text and "DataError" not in reply.text


async def test_a_chunked_body_over_the_cap_is_a_413_logged_as_one_line(webhook: Api) -> None:
    chunk = b"x" * 65_536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
    with capture_logs() as logs:
        answer = await raw(
            webhook,
            b"POST /api/webhooks/whmcs HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + body,
        )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert not [entry for entry in logs if entry.get("log_level") == "error"]


async def test_a_client_gone_mid_body_is_not_an_error(webhook: Api) -> None:
    with capture_logs() as logs:
        address = urlsplit(webhook.base_url)
        _, writer = await asyncio.open_connection(address.hostname, address.port)
        writer.write(
            b"POST /api/webhooks/whmcs HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        await asyncio.sleep(0.5)
    assert not [entry for entry in logs if entry.get("log_level") == "error"]
    assert [entry for entry in logs if entry.get("event") == "api.client_disconnected"]


async def test_slow_clients_are_cut_off(webhook: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HeaderTimeoutH11Protocol, "header_timeout", 1.0)
    # Headers that never finish: the connection is closed, not held.
    started = asyncio.get_running_loop().time()
    held = await raw(webhook, b"GET /api/health HTTP/1.1\r\nHost: local", read_for=15)
    assert held == b"" and asyncio.get_running_loop().time() - started < 10
    # A declared body that never arrives: 408 once it stops arriving (10 s).
    stalled = await raw(
        webhook,
        b"POST /api/webhooks/whmcs HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        read_for=20,
    )
    assert stalled.startswith(b"HTTP/1.1 408 ")


async def test_no_redirect_echoes_the_host_header(api: Api) -> None:
    reply = await api.http.post(
        f"/api/ops/fulfillments/{ORDER}/retry/",
        json={"reason": "x"},
        headers=api.ops() | {"Host": "evil.example"},
    )
    assert reply.status_code == 404
    assert "location" not in reply.headers


async def test_error_bodies_name_no_internals(api: Api) -> None:
    garbage = await api.http.post(
        "/api/codec/decode", content=b"{not json", headers=api.ops() | {"X-Namespace": "default"}
    )
    foreign = await api.http.post(
        "/api/codec/decode",
        json={
            "payloads": [
                {
                    "metadata": {
                        "encoding": "YmluYXJ5L2VuY3J5cHRlZA==",
                        "encryption-key-id": "c29tZW9uZS1lbHNl",
                    },
                    "data": "AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                }
            ]
        },
        headers=api.ops(),
    )
    assert garbage.json() == {"code": "bad_request", "message": "not a Payloads document"}
    assert foreign.status_code == 400
    assert "known ids" not in foreign.text and "test-key" not in foreign.text


async def test_headers_a_careful_client_expects(api: Api) -> None:
    unauthorized = await api.http.get(f"/api/orders/{ORDER}/fulfillment")
    assert unauthorized.status_code == 401
    assert unauthorized.headers["cache-control"] == "no-store"
    assert unauthorized.headers["x-content-type-options"] == "nosniff"
    health = await api.http.head("/api/health")
    assert (health.status_code, health.content) == (200, b"")
    assert health.headers["x-content-type-options"] == "nosniff"
    twice = await raw(
        api,
        b"GET /api/ops/dead-letters HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
    )
    assert twice.startswith(b"HTTP/1.1 400 ")
    assert (await api.http.get("/api/docs")).status_code == 404, "off unless API_DOCS"
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        assert (await http.get("/api/openapi.json")).status_code == 200
