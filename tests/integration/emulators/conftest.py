"""Fixtures for the shared-machinery tests: a toy emulator served over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from emulators.common.app import create_emulator_app
from emulators.common.server import ThreadedServer
from tests.integration.emulators._toy import NotesEmulator, notes_routes


@pytest.fixture(scope="module")
def notes_server() -> Iterator[ThreadedServer]:
    emulator = NotesEmulator(seed=1)
    with ThreadedServer(create_emulator_app(emulator, notes_routes(emulator))) as server:
        yield server


@pytest.fixture
def notes(notes_server: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=notes_server.base_url, timeout=5) as client:
        client.post("/__emulator__/reset", json={"seed": 1}).raise_for_status()
        yield client
