"""`fulfillment emulate …` run as a real process: start, serve, stop, resume from a state file."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from devstack.process import free_port
from emulators.cli import main

SETTINGS = json.dumps({"identifier": "cli-id", "secret": "cli-secret"})


@contextmanager
def emulate(
    *args: str, stop: signal.Signals = signal.SIGTERM, tls_ca: Path | None = None
) -> Iterator[str]:
    """Run `fulfillment emulate <args>` in a child process; yield its base URL once it serves."""
    port = free_port()
    code = "import sys; from emulators.cli import main; sys.exit(main(sys.argv[1:]))"
    # The Salesforce emulator also serves its Pub/Sub API: on a free port too, not 8704.
    pubsub = ("--pubsub-port", str(free_port())) if args[:1] == ("salesforce",) else ()
    process = subprocess.Popen(
        [sys.executable, "-c", code, "emulate", *args, "--port", str(port), *pubsub],
        cwd=Path(__file__).resolve().parents[3],
        stderr=subprocess.PIPE,
    )
    base_url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 5
    try:
        while True:
            try:
                verify = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else True
                httpx.get(f"{base_url}/__emulator__/state", timeout=0.5, verify=verify)
                break
            except (httpx.TransportError, FileNotFoundError) as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(output) from exc
                time.sleep(0.05)
        yield base_url
    finally:
        process.send_signal(stop)
        returncode = process.wait(timeout=10)
        stderr = process.stderr.read().decode() if process.stderr else ""
    assert returncode == 0, stderr
    assert "Traceback" not in stderr, stderr


def whmcs_call(base_url: str, action: str, **fields: object) -> dict[str, object]:
    form = {
        "action": action,
        "identifier": "cli-id",
        "secret": "cli-secret",
        "responsetype": "json",
    }
    reply = httpx.post(f"{base_url}/includes/api.php", data={**form, **fields})
    body: dict[str, object] = reply.json()
    return body


def test_whmcs_restarted_from_its_state_file_keeps_its_data(tmp_path: Path) -> None:
    state = tmp_path / "whmcs.json"
    args = ("whmcs", "--state-file", str(state), "--demo", "--seed", "3", "--settings", SETTINGS)
    with emulate(*args) as url:
        added = whmcs_call(url, "AddOrder", clientid=1, paymentmethod="stripe", **{"pid[0]": 1})
        assert added["result"] == "success"
    with emulate(*args, stop=signal.SIGINT) as url:
        orders = whmcs_call(url, "GetOrders")
        assert orders["totalresults"] == 1
        details = whmcs_call(url, "GetClientsDetails", clientid=4)
        assert details["result"] == "success"
        assert whmcs_call(url, "GetClientsDetails", clientid=5)["result"] == "error", (
            "--demo seeds only an empty state"
        )


def test_freebit_serves_from_the_command_line(tmp_path: Path) -> None:
    with emulate("freebit", "--demo") as url:
        reply = httpx.post(
            f"{url}/emptool/api/authOem/",
            data={"json": json.dumps({"oemId": "emulator-oem", "oemKey": "emulator-oem-key"})},
        )
        assert reply.json()["resultCode"] == "100"


def test_salesforce_is_served_over_tls_with_its_own_certificate(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    with emulate("salesforce", "--certs-dir", str(certs), tls_ca=certs / "ca.pem") as url:
        verify = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        assert httpx.get(f"{url}/__emulator__/state", verify=verify).status_code == 200


def test_bad_settings_are_refused_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["whmcs", "--settings", "[1]"]) == 2
    assert "--settings" in capsys.readouterr().err


def test_unknown_emulator_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["paypal"])
    assert exit_info.value.code == 2
