"""`fulfillment --version`: the package version, plus the commit in a git checkout."""

from __future__ import annotations

import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

import workers.versioning
from cli.main import main

REPO = Path(__file__).resolve().parents[3]


def version_output(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code in (0, None)
    out, err = capsys.readouterr()
    assert err == ""
    return out


def test_the_version_names_the_package_version_and_the_checkouts_commit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = version_output(capsys)
    assert re.fullmatch(r"fulfillment \S+\n", out), out
    version = metadata.version("order-fulfillment")
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    if head.returncode == 0:
        assert out == f"fulfillment {version}+{head.stdout.strip()}\n"
    else:
        assert out == f"fulfillment {version}\n"


def test_outside_a_checkout_it_is_the_package_version_alone(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers.versioning, "_commit", lambda: None)
    assert version_output(capsys) == f"fulfillment {metadata.version('order-fulfillment')}\n"


def test_it_ignores_the_workers_build_id_and_malformed_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers.versioning, "_commit", lambda: "0123456789ab")
    monkeypatch.setenv("WORKER_BUILD_ID", "operators-own-label")
    monkeypatch.setenv("API_PORT", "not-a-port")
    assert version_output(capsys) == (
        f"fulfillment {metadata.version('order-fulfillment')}+0123456789ab\n"
    )


def test_the_help_offers_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--version" in capsys.readouterr().out
