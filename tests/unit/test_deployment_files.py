"""docker-compose.yml stays valid and consistent with the code (Docker itself cannot run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cli.main import build_parser
from config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _subcommands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return set(sub.choices)  # type: ignore[arg-type]


def test_engine_services_run_existing_cli_subcommands() -> None:
    services = _compose()["services"]
    engine = {
        name: s for name, s in services.items() if s.get("image") == "order-fulfillment:latest"
    }
    assert engine, "no engine service in docker-compose.yml"
    for name, service in engine.items():
        assert service["command"][0] in _subcommands(), name


def test_engine_environment_names_are_settings() -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name, service in _compose()["services"].items():
        if service.get("image") != "order-fulfillment:latest":
            continue
        assert set(service["environment"]) <= known, name


def test_compose_registers_every_custom_search_attribute() -> None:
    from devstack.services import SEARCH_ATTRIBUTES

    command = " ".join(_compose()["services"]["temporal-search-attributes"]["command"])
    for name in SEARCH_ATTRIBUTES:
        assert name in command


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    packages = [
        p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name != "tests"
    ]
    for package in packages:
        assert f"COPY {package} {package}" in dockerfile, package
