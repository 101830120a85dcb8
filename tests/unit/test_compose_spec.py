"""The compose files follow the Compose Specification, as the `compose-spec` package models it.

Docker cannot run here, so `docker compose config` cannot check them. The `compose-spec` package
(bindings to the Rust compose_spec crate) parses a file strictly: an unknown key, a condition or a
duration Compose would refuse, a secret or volume used but not defined, each fails.

Two things of the files are YAML, not the specification, and PyYAML reads them first: the merge
keys (`<<: *engine`, nested; the package's own merge option leaves the nested ones in) and
Compose's merge tags (`!override`, read as the plain node they tag).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = ["docker-compose.yml", "deploy/compose.temporal-external.yml"]


class _Loader(yaml.SafeLoader):
    """Reads compose's merge tags (`!override`, `!reset`) as the plain nodes they tag."""


def _tagged(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_multi_constructor("!", _tagged)


def _validated(text: str) -> PyCompose:
    data = yaml.load(text, _Loader)  # noqa: S506 - a SafeLoader with one constructor more
    compose = PyCompose.from_json(json.dumps(data))
    compose.validate()
    return compose


@pytest.mark.parametrize("relative", COMPOSE_FILES)
def test_the_compose_file_follows_the_compose_specification(relative: str) -> None:
    compose = _validated((ROOT / relative).read_text())
    assert len(compose) > 0


def test_the_engine_and_the_emulators_build_their_own_targets_of_the_one_dockerfile() -> None:
    services = _validated((ROOT / "docker-compose.yml").read_text()).to_dict()["services"]
    targets = {name: s["build"]["target"] for name, s in services.items() if "build" in s}
    assert set(targets.values()) == {"production", "emulators"}
    for name, target in targets.items():
        emulator = services[name].get("profiles") == ["emulators"]
        assert target == ("emulators" if emulator else "production"), name


@pytest.mark.parametrize(
    "mistake",
    [
        "    restrt: always\n",
        "    stop_grace_period: 45q\n",
        "    depends_on:\n      db: {condition: service_healthyy}\n",
        "    secrets: [undefined]\n",
        "    healthcheck: {test: [CMD, 'true'], intervl: 5s}\n",
    ],
)
def test_the_check_refuses_what_compose_would_refuse(mistake: str) -> None:
    # The check is only worth having if it is strict: each of these is a typo Compose rejects.
    base = "services:\n  db:\n    image: postgres:16\n  app:\n    image: app\n"
    _validated(base)
    with pytest.raises(ValueError):
        _validated(base + mistake)


def test_the_files_state_the_compose_version_they_need() -> None:
    base = (ROOT / "docker-compose.yml").read_text()
    assert "Docker Compose 2.26 or later" in base.split("\n\n")[0]
    external = (ROOT / "deploy/compose.temporal-external.yml").read_text()
    assert "!override" in external and "2.24.4 or later" in external.split("\nservices:")[0]
