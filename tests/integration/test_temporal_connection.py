"""`connect_temporal` against a real Temporal server: in clear text, and through TLS.

The dev server speaks only clear text, so for TLS a terminating proxy (the way a load balancer
or an ingress fronts a cluster) sits between the client and it, with a certificate for a name
that is not the address dialled and, when asked, a demand for a client certificate: what the
settings say is then what the handshake does, or the connection fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings, load_settings
from temporal_connection.connection import connect_temporal

SERVER_NAME = "temporal.fulfillment.test"


@pytest.fixture
def dev_server_address(temporal_env: WorkflowEnvironment) -> str:
    return temporal_env.client.service_client.config.target_host


def _settings(**values: Any) -> Settings:
    # Explicit values only: a developer's TEMPORAL_* environment must not leak into the test.
    defaults: dict[str, Any] = {
        "temporal_payload_keys": None,
        "temporal_payload_keys_file": None,
        "temporal_tls": False,
        "temporal_tls_ca_file": None,
        "temporal_tls_cert_file": None,
        "temporal_tls_key_file": None,
        "temporal_tls_server_name": None,
        "temporal_api_key": None,
    }
    return load_settings(**{**defaults, **values})


async def test_without_tls_connect_temporal_reaches_the_dev_server(
    dev_server_address: str,
) -> None:
    client = await connect_temporal(_settings(temporal_address=dev_server_address))
    assert await client.service_client.check_health()
    info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    assert info.server_version


async def test_tls_on_against_a_clear_text_server_fails_instead_of_falling_back(
    dev_server_address: str,
) -> None:
    settings = _settings(temporal_address=dev_server_address, temporal_tls=True)
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(connect_temporal(settings), timeout=30)


@dataclass
class TlsFront:
    """A TLS-terminating proxy in front of the dev server; records the client certificates."""

    address: str
    ca_file: Path
    client_cert: Path
    client_key: Path
    peer_certificates: list[dict[str, Any]] = field(default_factory=list)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def _tls_front(
    directory: Path, upstream: str, *, require_client_certificate: bool
) -> AsyncIterator[TlsFront]:
    authority = trustme.CA()
    ca_file = directory / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server_cert = authority.issue_cert(SERVER_NAME)
    client = authority.issue_cert("fulfillment-worker")
    client_cert, client_key = directory / "client.pem", directory / "client.key"
    client.cert_chain_pems[0].write_to_path(str(client_cert))
    client.private_key_pem.write_to_path(str(client_key))

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(context)
    # gRPC runs over HTTP/2: the client insists on h2 being agreed in the handshake.
    context.set_alpn_protocols(["h2"])
    if require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
        authority.configure_trust(context)

    upstream_host, _, upstream_port = upstream.rpartition(":")
    front = TlsFront("", ca_file, client_cert, client_key)
    tasks: set[asyncio.Task[None]] = set()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        if peer:
            front.peer_certificates.append(peer)
        up_reader, up_writer = await asyncio.open_connection(upstream_host, int(upstream_port))
        both = [
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ]
        tasks.update(both)
        await asyncio.gather(*both)

    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    # Dialled by address: the certificate names only SERVER_NAME, as behind a load balancer.
    front.address = f"127.0.0.1:{port}"
    try:
        yield front
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest_asyncio.fixture
async def mtls_front(tmp_path: Path, dev_server_address: str) -> AsyncIterator[TlsFront]:
    async with _tls_front(tmp_path, dev_server_address, require_client_certificate=True) as front:
        yield front


@pytest_asyncio.fixture
async def tls_front(tmp_path: Path, dev_server_address: str) -> AsyncIterator[TlsFront]:
    async with _tls_front(tmp_path, dev_server_address, require_client_certificate=False) as front:
        yield front


async def test_mutual_tls_with_a_server_name_and_private_ca_reaches_temporal(
    mtls_front: TlsFront,
) -> None:
    settings = _settings(
        temporal_address=mtls_front.address,
        temporal_tls=True,
        temporal_tls_ca_file=mtls_front.ca_file,
        temporal_tls_server_name=SERVER_NAME,
        temporal_tls_cert_file=mtls_front.client_cert,
        temporal_tls_key_file=mtls_front.client_key,
    )
    client = await asyncio.wait_for(connect_temporal(settings), timeout=30)
    assert await client.service_client.check_health()
    # The front saw (and verified) the certificate TEMPORAL_TLS_CERT_FILE names.
    presented = {name for peer in mtls_front.peer_certificates for name in peer["subjectAltName"]}
    assert presented == {("DNS", "fulfillment-worker")}


async def test_without_the_client_certificate_a_mutual_tls_front_refuses(
    mtls_front: TlsFront,
) -> None:
    settings = _settings(
        temporal_address=mtls_front.address,
        temporal_tls=True,
        temporal_tls_ca_file=mtls_front.ca_file,
        temporal_tls_server_name=SERVER_NAME,
    )
    with pytest.raises(RuntimeError):
        client = await asyncio.wait_for(connect_temporal(settings), timeout=30)
        # TLS 1.3 lets the client finish its handshake before the server checks the
        # certificate; the refusal then arrives with the first call.
        await client.service_client.check_health(timeout=timedelta(seconds=10))


async def test_a_certificate_for_another_name_is_not_trusted(tls_front: TlsFront) -> None:
    settings = _settings(
        temporal_address=tls_front.address,
        temporal_tls=True,
        temporal_tls_ca_file=tls_front.ca_file,
        # No TEMPORAL_TLS_SERVER_NAME: the address's 127.0.0.1 is not on the certificate.
    )
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(connect_temporal(settings), timeout=30)


async def test_an_api_key_over_tls_reaches_temporal(tls_front: TlsFront) -> None:
    # The dev server ignores the key; what is shown is that a key rides along over TLS.
    settings = _settings(
        temporal_address=tls_front.address,
        temporal_tls=True,
        temporal_tls_ca_file=tls_front.ca_file,
        temporal_tls_server_name=SERVER_NAME,
        temporal_api_key="cloud-api-key",
    )
    client = await asyncio.wait_for(connect_temporal(settings), timeout=30)
    assert await client.service_client.check_health()
    assert client.api_key == "cloud-api-key"
