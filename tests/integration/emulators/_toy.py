"""A minimal emulator used to test the shared machinery without any real protocol."""

from __future__ import annotations

import random
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulators.common.app import create_emulator_app
from emulators.common.emulator import Emulator


class NotesEmulator(Emulator):
    name = "notes"

    def __init__(self, *, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.notes: dict[str, str] = {}
        self.tokens: set[str] = set()
        self.sessions = 0
        self.random = random.Random(seed)

    def to_state(self) -> dict[str, Any]:
        return {"notes": dict(self.notes), "tokens": sorted(self.tokens)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.notes = dict(state["notes"])
        self.tokens = set(state["tokens"])

    def seed(self, payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("dataset") == "demo":
            texts = ["first", "second"]
        elif "records" in payload:
            texts = list(payload["records"])
        else:
            raise ValueError("unknown seed payload")
        return {"ids": [self.add(text) for text in texts]}

    def is_empty(self) -> bool:
        return not self.notes

    def add(self, text: str) -> str:
        note_id = f"n{self.random.randrange(10**6):06d}"
        self.notes[note_id] = text
        return note_id

    def expire_tokens(self) -> int:
        count = len(self.tokens)
        self.tokens.clear()
        return count

    def drop_sessions(self) -> int:
        count, self.sessions = self.sessions, 0
        return count


def notes_routes(emulator: NotesEmulator) -> list[BaseRoute]:
    async def api(request: Request) -> Response:
        form = await request.form()
        action = form.get("action")
        if action == "add":
            return JSONResponse({"id": emulator.add(str(form.get("text", "")))})
        if action == "token":
            token = f"t{len(emulator.tokens) + 1}"
            emulator.tokens.add(token)
            emulator.sessions += 1
            return JSONResponse({"token": token})
        if action == "whoami":
            if form.get("token") not in emulator.tokens:
                return JSONResponse({"error": "invalid token"}, status_code=401)
            return JSONResponse({"ok": True})
        return JSONResponse({"error": "unknown action"}, status_code=400)

    async def list_notes(request: Request) -> Response:
        return JSONResponse(emulator.notes)

    return [Route("/api", api, methods=["POST"]), Route("/notes", list_notes, methods=["GET"])]


def notes_app(emulator: NotesEmulator) -> Starlette:
    """The toy emulator in the shared app shell (control API, faults, request log), with a REST
    write on the same path as the GET listing, as Salesforce REST reads and writes share paths."""

    async def add_by_rest(request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"id": emulator.add(str(body["text"]))}, status_code=201)

    routes = [*notes_routes(emulator), Route("/notes", add_by_rest, methods=["POST"])]
    return create_emulator_app(emulator, routes)
