"""ThreadedServer: starts fast on a free port, serves HTTP and HTTPS, stops cleanly."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest
import trustme

from emulators.common.app import create_emulator_app
from emulators.common.server import ThreadedServer
from tests.integration.emulators._toy import NotesEmulator, notes_routes


def test_threaded_server_starts_within_a_second_on_a_free_port_and_stops() -> None:
    emulator = NotesEmulator()
    started = time.monotonic()
    server = ThreadedServer(create_emulator_app(emulator, notes_routes(emulator))).start()
    try:
        assert time.monotonic() - started < 1.0
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        reply = httpx.post(f"{server.base_url}/api", data={"action": "add", "text": "x"})
        assert reply.status_code == 200
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/notes", timeout=1)


def test_threaded_server_serves_tls_when_given_a_certificate(tmp_path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    emulator = NotesEmulator()
    app = create_emulator_app(emulator, notes_routes(emulator))
    with ThreadedServer(app, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)) as server:
        assert server.base_url.startswith("https://")
        reply = httpx.get(
            f"{server.base_url}/notes", verify=ssl.create_default_context(cafile=str(cafile))
        )
        assert reply.status_code == 200
