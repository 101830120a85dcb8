"""`fulfillment openapi` prints the schema exactly as docs/openapi.json holds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def test_the_command_prints_the_committed_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openapi"]) == 0
    assert capsys.readouterr().out == COMMITTED.read_text("utf-8")
