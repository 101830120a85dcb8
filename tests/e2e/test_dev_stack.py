"""`fulfillment dev` as a user runs it: the stack comes up, answers, Ctrl-C leaves nothing."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import redis

from config.settings import SALESFORCE, load_settings
from devstack.process import group_alive, process_cmdline
from devstack.services import SEARCH_ATTRIBUTES

REPO = Path(__file__).resolve().parents[2]
UP = "The stack is up"


class DevRun:
    """One `fulfillment dev` subprocess with its console output in a file."""

    def __init__(self, dev_dir: Path, output: Path, *flags: str) -> None:
        self.dev_dir = dev_dir
        self.output = output
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        with output.open("wb") as sink:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "cli", "dev", "--dir", str(dev_dir), "--free-ports", *flags],
                cwd=REPO,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def wait_up(self, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while UP not in self.text():
            assert self.popen.poll() is None, f"fulfillment dev exited:\n{self.text()}"
            assert time.monotonic() < deadline, f"not up after {timeout}s:\n{self.text()}"
            time.sleep(0.1)
        stack: dict[str, Any] = json.loads((self.dev_dir / "stack.json").read_text())
        return stack

    def children(self) -> list[int]:
        record = json.loads((self.dev_dir / "pids.json").read_text())
        return [int(child["pid"]) for child in record["children"]]

    def interrupt(self, timeout: float = 60.0) -> int:
        self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait(timeout=10)


def gone(pid: int) -> bool:
    return process_cmdline(pid) is None and not group_alive(pid)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def salesforce_product_count(dev_dir: Path) -> int:
    """Sign in with JWT bearer using only what .dev/stack.env gives the engine; count products."""
    env = dict(
        line.split("=", 1) for line in (dev_dir / "stack.env").read_text().splitlines() if line
    )
    settings = load_settings(
        require=SALESFORCE, **{name.lower(): shlex.split(value)[0] for name, value in env.items()}
    )
    assert settings.sf_auth_flow == "jwt"
    assert settings.sf_token_url and settings.sf_jwt_key_file and settings.sf_ca_file
    claims = {
        "iss": settings.sf_client_id,
        "sub": settings.sf_username,
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 180,
    }
    assertion = jwt.encode(claims, settings.sf_jwt_key_file.read_text(), algorithm="RS256")
    tls = ssl.create_default_context(cafile=settings.sf_ca_file)
    with httpx.Client(verify=tls, trust_env=False) as http:
        token = http.post(
            settings.sf_token_url,
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion,
            },
        )
        assert token.status_code == 200, token.text
        reply = http.get(
            f"{token.json()['instance_url']}/services/data/v{settings.sf_api_version}/query",
            params={"q": "SELECT Id FROM Product2"},
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
    assert reply.status_code == 200, reply.text
    total: int = reply.json()["totalSize"]
    return total


def assert_stack_answers(stack: dict[str, Any]) -> None:
    ui = httpx.get(
        f"{stack['temporal']['ui_url']}/api/v1/namespaces/default/search-attributes",
        timeout=5,
    )
    assert ui.status_code == 200
    assert set(SEARCH_ATTRIBUTES) <= set(ui.json()["customAttributes"])

    async def query() -> Any:
        connection = await asyncpg.connect(stack["database_url"])
        try:
            return await connection.fetchval("SELECT count(*) FROM schema_migrations")
        finally:
            await connection.close()

    assert asyncio.run(query()) > 0, "migrations were applied"
    client = redis.Redis.from_url(stack["redis_url"])
    assert client.ping()
    client.close()


def test_dev_stack_comes_up_and_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    run = DevRun(tmp_path / ".dev", tmp_path / "console.txt", "--no-emulators")
    try:
        stack = run.wait_up()
        assert stack["temporal"]["namespace"] == "default"
        assert stack["temporal"]["task_queue"] == "order-fulfillment"
        assert stack["api"]["service_token"] and stack["api"]["ops_token"]
        assert_stack_answers(stack)
        children = run.children()
        assert len(children) == 3
        console = run.text()
        for name in ("Temporal", "Postgres", "Redis"):
            assert f"starting {name} … ready in" in console
        assert stack["temporal"]["ui_url"] in console
    finally:
        code = run.interrupt()
    assert code == 0, run.text()
    assert all(gone(pid) for pid in children), run.text()
    assert not (tmp_path / ".dev" / "pids.json").exists()


def test_children_die_with_a_killed_launcher_and_the_next_one_starts_on_the_same_state(
    tmp_path: Path,
) -> None:
    dev_dir = tmp_path / ".dev"
    first = DevRun(dev_dir, tmp_path / "first.txt")
    try:
        first.wait_up()
        orphans = first.children()
        assert len(orphans) == 6
        secrets_before = json.loads((dev_dir / "secrets.json").read_text())
    finally:
        first.kill()
    # The kernel's parent-death signal: nobody has to come back to clean up after a kill -9.
    if not wait_until(lambda: all(gone(pid) for pid in orphans), timeout=20):
        survivors = [(pid, process_cmdline(pid)) for pid in orphans if not gone(pid)]
        for pid, _ in survivors:
            os.killpg(pid, signal.SIGKILL)
        pytest.fail(f"children outlived their SIGKILLed launcher: {survivors}")

    second = DevRun(dev_dir, tmp_path / "second.txt")
    try:
        stack = second.wait_up()
        assert_stack_answers(stack)
        assert json.loads((dev_dir / "secrets.json").read_text()) == secrets_before

        third = DevRun(dev_dir, tmp_path / "third.txt", "--no-emulators")
        assert third.popen.wait(timeout=30) == 1
        assert "another `fulfillment dev`" in third.text()
        children = second.children()
    finally:
        code = second.interrupt()
    assert code == 0, second.text()
    assert all(gone(pid) for pid in children)


def test_a_taken_port_stops_dev_with_one_line_before_anything_starts(tmp_path: Path) -> None:
    dev_dir = tmp_path / ".dev"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = DevRun(dev_dir, tmp_path / "console.txt", "--whmcs-port", str(port))
        assert run.popen.wait(timeout=60) == 1, run.text()
    errors = [line for line in run.text().splitlines() if "in use" in line]
    assert errors == [
        f"fulfillment dev: whmcs-emulator: port 127.0.0.1:{port} is already in use; choose "
        f"another port (--whmcs-port N, DEV_WHMCS_PORT=N or --free-ports)"
    ], run.text()
    assert "starting" not in run.text(), "nothing is started when a port is taken"
    assert not (dev_dir / "logs").exists()


def test_dev_stack_runs_the_emulators_with_the_credentials_in_stack_json(tmp_path: Path) -> None:
    dev_dir = tmp_path / ".dev"
    run = DevRun(dev_dir, tmp_path / "console.txt")
    try:
        stack = run.wait_up()
        sf, whmcs, freebit = stack["salesforce"], stack["whmcs"], stack["freebit"]
        assert sf["auth_flow"] == "jwt"
        assert salesforce_product_count(dev_dir) > 0, "demo products are seeded"

        products = httpx.post(
            whmcs["api_url"],
            data={
                "action": "GetProducts",
                "identifier": whmcs["identifier"],
                "secret": whmcs["secret"],
                "responsetype": "json",
            },
        )
        assert products.json()["result"] == "success", products.text
        assert int(products.json()["totalresults"]) > 0, "demo data is seeded"

        auth = httpx.post(
            f"{freebit['base_url']}authOem",
            data={"json": json.dumps({"oemId": freebit["oem_id"], "oemKey": freebit["oem_key"]})},
        )
        assert auth.json().get("authKey"), auth.text
        children = run.children()
        assert len(children) == 6
    finally:
        code = run.interrupt()
    assert code == 0, run.text()
    assert all(gone(pid) for pid in children)
    for name in ("salesforce", "whmcs", "freebit"):
        assert (dev_dir / "emulators" / f"{name}.json").exists(), f"{name} state kept in .dev"
