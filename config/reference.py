"""`docs/configuration.md`, generated from the `Settings` model so it cannot drift.

    .venv/bin/python -m config.reference > docs/configuration.md

Each setting's text is the comment written above its field in `config/settings.py`; the test
suite fails when the committed page differs from what this prints.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from pathlib import Path

from pydantic import SecretStr

from config import settings as settings_module
from config.settings import API, LISTENER, MIGRATE, WORKER, Settings, env_name

_PROCESSES = {"worker": WORKER, "listener": LISTENER, "api": API, "migrate": MIGRATE}
_FIELD = re.compile(r"^    (\w+): ")


def _is_section(comment: list[str]) -> bool:
    # "# Temporal", "# HTTP API and metrics": a short title, not a sentence about a field.
    return len(comment) == 1 and len(comment[0].split()) <= 5 and "." not in comment[0]


def field_comments() -> tuple[dict[str, str], dict[str, str]]:
    """The comment block above each field of `Settings` (joined into one sentence), and the
    section title each field falls under."""
    source = inspect.getsource(settings_module.Settings).splitlines()
    comments: dict[str, str] = {}
    sections: dict[str, str] = {}
    section = ""
    pending: list[str] = []
    for line in source:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD.match(line)
        if match and match.group(1) in Settings.model_fields:
            if _is_section(pending):
                section = pending[0].rstrip(":")
            elif pending:
                if _is_section(pending[:1]) and ":" not in pending[0]:
                    section, pending = pending[0], pending[1:]
                comments[match.group(1)] = " ".join(pending)
            sections[match.group(1)] = section
            pending = []
        elif not stripped:
            pending = []
    return comments, sections


def _type(annotation: object) -> str:
    text = str(annotation).replace("typing.", "").replace("pydantic.types.", "")
    text = re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = text.replace("pathlib.Path", "path").replace("SecretStr", "secret")
    optional = text.endswith(" | None")
    text = text.removesuffix(" | None").replace(" | ", " or ")
    return f"{text} (optional)" if optional else text


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.is_required():
        return "required"
    value = field.default
    if value is None:
        return "—"
    if isinstance(value, SecretStr):
        return "(secret)"
    text = str(value)
    return f"`{text}`" if text else '`""`'


def render() -> str:
    comments, sections = field_comments()
    lines = [
        "# Configuration",
        "",
        "Generated from `config/settings.py` by `python -m config.reference`; do not edit by hand",
        "(the tests fail when this page and the settings model differ). Every setting is an",
        "environment variable (or a line of `.env`); a missing or malformed one stops the process",
        "at start with one line naming it. Secrets are never logged.",
        "",
        "| variable | type | default | needed by | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    shown = ""
    for name, field in Settings.model_fields.items():
        if sections.get(name) and sections[name] != shown:
            shown = sections[name]
            lines.append(f"| **{shown}** | | | | |")
        needed = [process for process, names in _PROCESSES.items() if name in names]
        secret = "SecretStr" in str(field.annotation)
        meaning = comments.get(name, "")
        if secret:
            meaning = ("Secret. " + meaning).strip()
        lines.append(
            f"| `{env_name(name)}` | {_type(typing.get_type_hints(Settings)[name])} | "
            f"{_default(name)} | {', '.join(needed) or '—'} | {meaning} |"
        )
    return "\n".join(lines) + "\n"


PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

if __name__ == "__main__":
    sys.stdout.write(render())
