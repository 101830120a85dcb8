"""The toy emulator served for the shared-machinery tests (fault kinds, the request log): one
server per module, reset before each test. A module may serve its own under the same names."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from emulators.common.server import ThreadedServer
from tests.integration.emulators._toy import NotesEmulator, notes_app


@pytest.fixture(scope="module")
def notes_server() -> Iterator[ThreadedServer]:
    with ThreadedServer(notes_app(NotesEmulator(seed=1))) as server:
        yield server


@pytest.fixture
def notes(notes_server: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=notes_server.base_url, timeout=5) as client:
        client.post("/__emulator__/reset", json={"seed": 1}).raise_for_status()
        yield client
