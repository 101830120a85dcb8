"""`fulfillment dev` as a user runs it: the stack comes up, answers, Ctrl-C leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis

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

    import asyncio

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


def test_dev_stack_recovers_after_the_launcher_was_killed(tmp_path: Path) -> None:
    dev_dir = tmp_path / ".dev"
    first = DevRun(dev_dir, tmp_path / "first.txt", "--no-emulators")
    try:
        first.wait_up()
        orphans = first.children()
        secrets_before = json.loads((dev_dir / "secrets.json").read_text())
    finally:
        first.kill()
    assert not any(gone(pid) for pid in orphans), "a SIGKILLed launcher cannot stop its children"

    second = DevRun(dev_dir, tmp_path / "second.txt", "--no-emulators")
    try:
        stack = second.wait_up()
        assert "left running by a previous launcher" in second.text()
        assert all(gone(pid) for pid in orphans), second.text()
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


def test_dev_stack_runs_the_emulators_with_the_credentials_in_stack_json(tmp_path: Path) -> None:
    dev_dir = tmp_path / ".dev"
    run = DevRun(dev_dir, tmp_path / "console.txt")
    try:
        stack = run.wait_up()
        sf, whmcs, freebit = stack["salesforce"], stack["whmcs"], stack["freebit"]
        tls = ssl.create_default_context(cafile=sf["ca_file"])
        token = httpx.post(
            sf["token_url"],
            data={
                "grant_type": "password",
                "client_id": sf["client_id"],
                "client_secret": sf["client_secret"],
                "username": sf["username"],
                "password": sf["password"],
            },
            verify=tls,
        )
        assert token.status_code == 200, token.text
        assert token.json()["instance_url"].startswith(sf["instance_url"])

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
