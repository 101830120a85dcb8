"""The dev stack's servers, started from pip-installed binaries, used through real clients."""

from __future__ import annotations

import http.server
import os
import signal
import threading
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from devstack.components import (
    DevContext,
    Ports,
    api,
    jwt_grant_check,
    listener,
    salesforce_emulator,
    whmcs_emulator,
)
from devstack.process import ServiceError, group_alive
from devstack.services import (
    SEARCH_ATTRIBUTES,
    free_port,
    start_postgres,
    start_redis,
    start_temporal,
    temporal_binary,
    temporal_test_server_binary,
)
from devstack.stack_file import merge
from emulators.common.server import ThreadedServer
from emulators.salesforce.app import create_app as create_salesforce_app


def _kill_hard(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_binaries_come_from_the_installed_wheels() -> None:
    assert temporal_binary().name == "temporal"
    assert os.access(temporal_binary(), os.X_OK)
    assert os.access(temporal_test_server_binary(), os.X_OK)


async def test_postgres_serves_asyncpg_and_recovers_after_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    server = start_postgres(data)
    try:
        conn = await asyncpg.connect(server.url)
        await conn.execute("create table kept (v text)")
        await conn.execute("insert into kept values ('before the crash')")
        await conn.close()
    finally:
        _kill_hard(server.pid)

    assert (data / "postmaster.pid").exists(), "a crashed postgres leaves its pid file behind"
    again = start_postgres(data)
    try:
        conn = await asyncpg.connect(again.url)
        assert await conn.fetchval("select v from kept") == "before the crash"
        await conn.close()
    finally:
        again.stop()
    assert not group_alive(again.pid)
    assert not (data / "postmaster.pid").exists()


def test_redis_serves_redis_py_and_keeps_data_across_sigkill(tmp_path: Path) -> None:
    server = start_redis(port=None, data_dir=tmp_path / "redis")
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    client = redis.Redis.from_url(server.url)
    client.set("portal:orders:account:001", "cached")
    client.close()
    _kill_hard(server.pid)

    again = start_redis(port=server.port, data_dir=tmp_path / "redis")
    try:
        client = redis.Redis.from_url(again.url)
        assert client.get("portal:orders:account:001") == b"cached"
        client.close()
    finally:
        again.stop()
    assert not group_alive(again.pid)


def test_redis_on_a_taken_port_fails_naming_the_port(tmp_path: Path) -> None:
    first = start_redis(port=None, data_dir=tmp_path / "a", persist=False)
    try:
        with pytest.raises(ServiceError, match=f"port 127.0.0.1:{first.port} is already in use"):
            start_redis(port=first.port, data_dir=tmp_path / "b", persist=False)
    finally:
        first.stop()


async def _custom_attributes(address: str) -> dict[str, int]:
    client = await Client.connect(address)
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    return dict(response.custom_attributes)


async def _ui_codec_endpoint(ui_url: str) -> str:
    """Where the Web UI's page sends payloads to be decoded ("" for nowhere), as it reads it."""
    async with httpx.AsyncClient(timeout=5) as http:
        endpoint: str = (await http.get(f"{ui_url}/api/v1/settings")).json()["Codec"]["Endpoint"]
    return endpoint


async def test_temporal_registers_search_attributes_restarts_on_its_database_and_names_a_codec(
    tmp_path: Path,
) -> None:
    db = tmp_path / "temporal.db"
    port, ui_port = free_port(), free_port()
    # A database made before two of the attributes existed: they must be added on the next start.
    older = {name: SEARCH_ATTRIBUTES[name] for name in list(SEARCH_ATTRIBUTES)[:3]}
    first = start_temporal(
        port=port,
        ui_port=ui_port,
        db_file=db,
        log_file=tmp_path / "t1.log",
        search_attributes=older,
    )
    assert set(await _custom_attributes(first.address)) >= set(older)
    assert not await _ui_codec_endpoint(first.ui_url), "no codec unless asked: shown as stored"
    _kill_hard(first.pid)

    codec = "http://127.0.0.1:8000/api/codec"
    again = start_temporal(
        port=port,
        ui_port=ui_port,
        db_file=db,
        log_file=tmp_path / "t2.log",
        ui_codec_endpoint=codec,
    )
    try:
        assert set(await _custom_attributes(again.address)) >= set(SEARCH_ATTRIBUTES)
        assert await _ui_codec_endpoint(again.ui_url) == codec
    finally:
        again.stop()
    assert not group_alive(again.pid)


async def _durability(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        names = ("fsync", "synchronous_commit", "full_page_writes")
        return {name: await conn.fetchval(f"SHOW {name}") for name in names}
    finally:
        await conn.close()


async def test_postgres_is_durable_unless_asked_to_be_fast(tmp_path: Path) -> None:
    # The dev stack promises that work in flight survives a restart, the machine's included.
    data = tmp_path / "pg"
    with start_postgres(data) as durable:
        assert await _durability(durable.url) == {
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
        }
    with start_postgres(data, durable=False) as fast:
        assert await _durability(fast.url) == {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }


class _Stranger(http.server.BaseHTTPRequestHandler):
    """A stale server from an earlier run: it answers every health check."""

    def do_GET(self) -> None:
        body = b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_emulator_is_not_ready_while_a_stranger_answers_on_its_port(tmp_path: Path) -> None:
    stranger = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stranger)
    port = stranger.server_address[1]
    threading.Thread(target=stranger.serve_forever, daemon=True).start()
    try:
        context = DevContext(dev_dir=tmp_path, ports=Ports(whmcs=port), stack={})
        planned = whmcs_emulator(context)
        assert planned is not None
        assert httpx.get(f"http://127.0.0.1:{port}/__emulator__/state").status_code == 200
        with pytest.raises(ServiceError, match="whmcs-emulator exited before it was ready"):
            planned.component.launch(tmp_path / "logs")
    finally:
        stranger.shutdown()
        stranger.server_close()


def test_the_listener_is_not_ready_while_a_stranger_serves_metrics_on_its_port(
    tmp_path: Path,
) -> None:
    stranger = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stranger)
    port = stranger.server_address[1]
    threading.Thread(target=stranger.serve_forever, daemon=True).start()
    try:
        ports = Ports(listener_metrics=port)
        stack: dict[str, object] = {
            "temporal": {
                "address": "127.0.0.1:7233",
                "namespace": "default",
                "task_queue": "order-fulfillment",
            },
            "database_url": "postgresql://postgres@127.0.0.1:5433/fulfillment",
            "redis_url": "redis://127.0.0.1:6380/0",
        }
        context = DevContext(dev_dir=tmp_path, ports=ports, stack=stack)
        sf = salesforce_emulator(context)
        assert sf is not None
        merge(stack, sf.stack)
        planned = listener(context)
        assert planned is not None
        # An earlier run's listener, say: its /metrics answers 200 just as ours would.
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
        with pytest.raises(ServiceError, match="listener exited before it was ready"):
            planned.component.launch(tmp_path / "logs")
    finally:
        stranger.shutdown()
        stranger.server_close()


def test_the_api_is_not_ready_while_a_stranger_answers_health_on_its_port(tmp_path: Path) -> None:
    stranger = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stranger)
    port = stranger.server_address[1]
    threading.Thread(target=stranger.serve_forever, daemon=True).start()
    try:
        stack: dict[str, object] = {
            "temporal": {
                "address": "127.0.0.1:7233",
                "namespace": "default",
                "task_queue": "order-fulfillment",
            },
            "database_url": "postgresql://postgres@127.0.0.1:5433/fulfillment",
            "redis_url": "redis://127.0.0.1:6380/0",
            "api": {"service_token": "dev-service", "ops_token": "dev-ops"},
        }
        planned = api(DevContext(dev_dir=tmp_path, ports=Ports(api=port), stack=stack))
        assert planned is not None
        # An earlier run's API, say: its /api/health answers 200 just as ours would.
        assert httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200
        with pytest.raises(ServiceError, match="api exited before it was ready"):
            planned.component.launch(tmp_path / "logs")
    finally:
        stranger.shutdown()
        stranger.server_close()


def test_salesforce_readiness_fails_at_once_when_the_emulator_refuses_the_dev_key(
    tmp_path: Path,
) -> None:
    sf = salesforce_emulator(DevContext(dev_dir=tmp_path / "dev", ports=Ports(), stack={}))
    assert sf is not None
    section = sf.stack["salesforce"]
    # An emulator that trusts some other key pair (another checkout's .dev/certs, say).
    app = create_salesforce_app(certs_dir=tmp_path / "other-certs")
    with ThreadedServer(
        app, ssl_certfile=app.state.ssl_certfile, ssl_keyfile=app.state.ssl_keyfile
    ) as server:
        check = jwt_grant_check(
            f"{server.base_url}/services/oauth2/token",
            client_id=section["client_id"],
            username=section["username"],
            key_file=Path(section["jwt_key_file"]),
            ca_file=Path(app.state.ca_file),
        )
        with pytest.raises(ServiceError, match="refuses the dev stack's JWT key"):
            check()
    trusting = create_salesforce_app(certs_dir=tmp_path / "dev" / "certs")
    with ThreadedServer(
        trusting, ssl_certfile=trusting.state.ssl_certfile, ssl_keyfile=trusting.state.ssl_keyfile
    ) as server:
        check = jwt_grant_check(
            f"{server.base_url}/services/oauth2/token",
            client_id=section["client_id"],
            username=section["username"],
            key_file=Path(section["jwt_key_file"]),
            ca_file=Path(section["ca_file"]),
        )
        assert check() is True
