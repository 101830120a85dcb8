"""StateFile: an emulator restarted from its state file keeps its data."""

from __future__ import annotations

import json

import httpx

from emulators.common.app import create_emulator_app
from emulators.common.emulator import StateFile
from emulators.common.server import ThreadedServer
from tests.integration.emulators._toy import NotesEmulator, notes_routes


def serve_notes(path) -> ThreadedServer:
    emulator = NotesEmulator(seed=3)
    state_file = StateFile(path, debounce=0.05)
    return ThreadedServer(
        create_emulator_app(emulator, notes_routes(emulator), state_file=state_file)
    )


def test_restarted_emulator_resumes_from_its_state_file(tmp_path) -> None:
    path = tmp_path / "notes.json"
    with serve_notes(path) as server:
        note_id = httpx.post(f"{server.base_url}/api", data={"action": "add", "text": "hi"}).json()[
            "id"
        ]
    with serve_notes(path) as server:
        assert httpx.get(f"{server.base_url}/notes").json() == {note_id: "hi"}


def test_state_file_is_written_shortly_after_a_change_without_shutdown(tmp_path) -> None:
    path = tmp_path / "notes.json"
    with serve_notes(path) as server:
        httpx.post(f"{server.base_url}/api", data={"action": "add", "text": "soon"})
        deadline_polls = 200
        while deadline_polls and not (path.exists() and "soon" in path.read_text()):
            deadline_polls -= 1
            httpx.get(f"{server.base_url}/__emulator__/state")
        assert json.loads(path.read_text())["notes"]
        assert not list(tmp_path.glob(".notes.json.*")), "temporary files are replaced, not left"


def test_demo_is_seeded_only_into_an_empty_state(tmp_path) -> None:
    path = tmp_path / "notes.json"
    emulator = NotesEmulator()
    create_emulator_app(emulator, notes_routes(emulator), state_file=StateFile(path), demo=True)
    assert sorted(json.loads(path.read_text())["notes"].values()) == ["first", "second"]
    again = NotesEmulator()
    again.add("mine")
    path.write_text(json.dumps(again.to_state()))
    reloaded = NotesEmulator()
    create_emulator_app(reloaded, notes_routes(reloaded), state_file=StateFile(path), demo=True)
    assert list(reloaded.notes.values()) == ["mine"]
