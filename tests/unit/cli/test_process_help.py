"""`fulfillment worker|listener|api|migrate --help` ends with the settings the process needs."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from cli.main import main
from config.settings import API, LISTENER, MIGRATE, WORKER, Settings

PROCESSES = [("worker", WORKER), ("listener", LISTENER), ("api", API), ("migrate", MIGRATE)]
ENV_NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(("command", "required"), PROCESSES)
def test_the_help_ends_with_every_setting_the_process_requires(
    command: str, required: Sequence[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(command, capsys)
    _, _, epilog = text.partition("settings this process needs")
    assert epilog, text
    named = set(ENV_NAME.findall(epilog))
    assert {field.upper() for field in required} <= named
    assert text.rstrip().endswith("docs/configuration.md.")


@pytest.mark.parametrize(("command", "required"), PROCESSES)
def test_every_name_in_the_help_is_a_setting(
    command: str, required: Sequence[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(command, capsys)
    fields = {name.upper() for name in Settings.model_fields}
    unknown = {name for name in ENV_NAME.findall(text) if name not in fields}
    assert unknown == set(), f"{command} --help names settings that do not exist"


def test_the_required_names_come_in_the_tuples_order(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of("worker", capsys)
    epilog = text.partition("settings this process needs")[2]
    positions = [epilog.index(field.upper()) for field in dict.fromkeys(WORKER)]
    assert positions == sorted(positions)
