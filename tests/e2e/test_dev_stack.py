"""`fulfillment dev` as a user runs it: the stack comes up, answers (the API and the Temporal UI's
codec included), Ctrl-C leaves nothing."""

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import redis
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.client import Client

from config.settings import SALESFORCE, Settings, load_settings
from devstack.process import group_alive, process_cmdline
from devstack.services import SEARCH_ATTRIBUTES
from domain.fulfillment import (
    FulfillmentInput,
    FulfillmentResult,
    FulfillmentStatus,
    TriggerSource,
    workflow_id,
)
from temporal_connection.connection import connect_temporal
from workflows.order_fulfillment import OrderFulfillment

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
        return list(self.named_children().values())

    def named_children(self) -> dict[str, int]:
        record = json.loads((self.dev_dir / "pids.json").read_text())
        return {child["name"]: int(child["pid"]) for child in record["children"]}

    def log_tail(self, name: str, lines: int = 30) -> str:
        log = self.dev_dir / "logs" / f"{name}.log"
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        return f"--- {name}.log ---\n" + "\n".join(text.splitlines()[-lines:])

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


def stack_settings(dev_dir: Path) -> Settings:
    """The settings a shell gets from `set -a; . .dev/stack.env`."""
    env = dict(
        line.split("=", 1) for line in (dev_dir / "stack.env").read_text().splitlines() if line
    )
    return load_settings(
        require=SALESFORCE, **{name.lower(): shlex.split(value)[0] for name, value in env.items()}
    )


@contextmanager
def salesforce(dev_dir: Path) -> Iterator[tuple[httpx.Client, str]]:
    """Sign in with JWT bearer using only what .dev/stack.env gives the engine; yield a client
    with the token and the REST base URL."""
    settings = stack_settings(dev_dir)
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
    with httpx.Client(verify=tls, trust_env=False, timeout=10) as http:
        token = http.post(
            settings.sf_token_url,
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion,
            },
        )
        assert token.status_code == 200, token.text
        http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield http, f"{token.json()['instance_url']}/services/data/v{settings.sf_api_version}"


def soql(http: httpx.Client, base: str, query: str) -> list[dict[str, Any]]:
    reply = http.get(f"{base}/query", params={"q": query})
    assert reply.status_code == 200, reply.text
    records: list[dict[str, Any]] = reply.json()["records"]
    return records


def salesforce_product_count(dev_dir: Path) -> int:
    with salesforce(dev_dir) as (http, base):
        return len(soql(http, base, "SELECT Id FROM Product2"))


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


def internet_order_id(dev_dir: Path) -> str:
    """The demo internet order, found as a portal developer would: by its product."""
    with salesforce(dev_dir) as (http, base):
        (product,) = soql(http, base, "SELECT Id FROM Product2 WHERE ProductCode = 'FIBER-1G'")
        (item,) = soql(
            http,
            base,
            f"SELECT OrderId FROM OrderItem WHERE Product2Id = '{product['Id']}'",  # noqa: S608
        )
    order_id: str = item["OrderId"]
    return order_id


def activate(dev_dir: Path, order_id: str) -> None:
    """What the portal does: change the order's Status alone."""
    with salesforce(dev_dir) as (http, base):
        reply = http.patch(f"{base}/sobjects/Order/{order_id}", json={"Status": "Activated"})
    assert reply.status_code == 204, reply.text


def _activation_status(http: httpx.Client, base: str, order_id: str) -> str:
    (order,) = soql(
        http,
        base,
        f"SELECT Activation_Status__c FROM Order WHERE Id = '{order_id}'",  # noqa: S608
    )
    status: str = order["Activation_Status__c"]
    return status


def activation_status(dev_dir: Path, order_id: str) -> str:
    with salesforce(dev_dir) as (http, base):
        return _activation_status(http, base, order_id)


def activation_ends(dev_dir: Path, order_id: str, timeout: float) -> str:
    """The order's Activation_Status__c once it is final, or whatever it is at the deadline:
    what a portal developer watching Salesforce sees."""
    deadline = time.monotonic() + timeout
    with salesforce(dev_dir) as (http, base):
        while True:
            status = _activation_status(http, base, order_id)
            if status in {"Activated", "Failed", "Cancelled"} or time.monotonic() > deadline:
                return status
            time.sleep(0.25)


def whmcs_order_count(stack: dict[str, Any]) -> int:
    whmcs = stack["whmcs"]
    reply = httpx.post(
        whmcs["api_url"],
        data={
            "action": "GetOrders",
            "identifier": whmcs["identifier"],
            "secret": whmcs["secret"],
            "responsetype": "json",
        },
    )
    assert reply.json()["result"] == "success", reply.text
    total: int = reply.json()["totalresults"]
    return total


async def fulfillment_result(dev_dir: Path, order_id: str) -> FulfillmentResult:
    client = await connect_temporal(stack_settings(dev_dir))
    handle = client.get_workflow_handle_for(OrderFulfillment.run, workflow_id(order_id))
    async with asyncio.timeout(90):
        return await handle.result()


async def started_input_encoding(address: str, order_id: str) -> bytes:
    """The workflow input's encoding as Temporal stores it, read without our codec."""
    raw = await Client.connect(address)
    history = await raw.get_workflow_handle(workflow_id(order_id)).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    return started.input.payloads[0].metadata["encoding"]


async def fulfillment_starts(dev_dir: Path, order_id: str) -> list[FulfillmentInput]:
    """The input of every run of the order's fulfillment (decrypted with the stack's key)."""
    client = await connect_temporal(stack_settings(dev_dir))
    query = f"WorkflowId = '{workflow_id(order_id)}'"
    inputs: list[FulfillmentInput] = []
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = await handle.fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        (decoded,) = await client.data_converter.decode(started.input.payloads, [FulfillmentInput])
        inputs.append(decoded)
    return inputs


def api_get(stack: dict[str, Any], path: str, token: str) -> httpx.Response:
    """A GET on the dev API with one of the tokens stack.json hands out."""
    headers = {"Authorization": f"Bearer {stack['api'][token]}"}
    return httpx.get(f"{stack['api']['url']}{path}", headers=headers, timeout=10)


async def started_input_payloads(address: str, order_id: str) -> Payloads:
    """The workflow input exactly as Temporal stores it (encrypted), as the Web UI receives it."""
    raw = await Client.connect(address)
    history = await raw.get_workflow_handle(workflow_id(order_id)).fetch_history()
    return history.events[0].workflow_execution_started_event_attributes.input


def test_dev_stack_comes_up_and_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    run = DevRun(tmp_path / ".dev", tmp_path / "console.txt", "--no-emulators")
    try:
        stack = run.wait_up()
        assert stack["temporal"]["namespace"] == "default"
        assert stack["temporal"]["task_queue"] == "order-fulfillment"
        assert stack["api"]["service_token"] and stack["api"]["ops_token"]
        assert_stack_answers(stack)
        children = run.children()
        assert len(children) == 4, "Temporal, Postgres, Redis and the API"
        console = run.text()
        for name in ("Temporal", "Postgres", "Redis", "api"):
            assert f"starting {name} … ready in" in console
        assert stack["temporal"]["ui_url"] in console
        assert "listener: not started: SF_TOKEN_URL, SF_CLIENT_ID are not set" in console
        # The API needs no upstream; without Salesforce only the catalog has nothing to serve.
        assert api_get(stack, "/api/health/ready", "service_token").status_code == 200
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
        assert len(orphans) == 9
        secrets_before = json.loads((dev_dir / "secrets.json").read_text())
        order_id = internet_order_id(dev_dir)
        activate(dev_dir, order_id)
        # Finished first: an activity cut short would wait out its timeout (minutes) before
        # its retry, which the worker tests cover; here the stack's state is the subject.
        assert activation_ends(dev_dir, order_id, timeout=60) == "Activated", first.log_tail(
            "listener"
        )
        assert asyncio.run(fulfillment_result(dev_dir, order_id)).status is (
            FulfillmentStatus.ACTIVATED
        )
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
        # Its history was encrypted with the first run's key: still readable with this run's.
        result = asyncio.run(fulfillment_result(dev_dir, order_id))
        assert result.status is FulfillmentStatus.ACTIVATED, result
        assert result.whmcs_order_id is not None
        assert activation_status(dev_dir, order_id) == "Activated"
        # The listener resumed from its cursor in Postgres: the activation is not taken again.
        assert whmcs_order_count(stack) == 1
        assert len(asyncio.run(fulfillment_starts(dev_dir, order_id))) == 1

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
        assert len(children) == 9
    finally:
        code = run.interrupt()
    assert code == 0, run.text()
    assert all(gone(pid) for pid in children)
    for name in ("salesforce", "whmcs", "freebit"):
        assert (dev_dir / "emulators" / f"{name}.json").exists(), f"{name} state kept in .dev"


def test_an_order_activated_in_salesforce_is_fulfilled_by_the_stack_alone_across_kills(
    tmp_path: Path,
) -> None:
    dev_dir = tmp_path / ".dev"
    run = DevRun(dev_dir, tmp_path / "console.txt")
    try:
        stack = run.wait_up()
        for name in ("worker", "listener"):
            metrics_url = stack[name]["metrics_url"]
            assert metrics_url in run.text(), f"the summary prints the {name}'s metrics"
            assert httpx.get(metrics_url, timeout=5).status_code == 200
        assert stack_settings(dev_dir).temporal_payload_keys is not None

        # Both engine children die; the order is activated while they are down or coming
        # back, and nobody starts a workflow by hand: the listener resumes from its cursor,
        # Temporal keeps the workflow until the worker is back.
        children = run.named_children()
        for name in ("listener", "worker"):
            os.killpg(children[name], signal.SIGKILL)
        order_id = internet_order_id(dev_dir)
        activate(dev_dir, order_id)

        status = activation_ends(dev_dir, order_id, timeout=60)
        assert status == "Activated", (
            f"{status}\n{run.text()}\n{run.log_tail('listener')}\n{run.log_tail('worker')}"
        )
        console = run.text()
        for name in ("worker", "listener"):
            assert f"{name} exited with signal 9; restarting in" in console
            assert f"{name} restarted" in console
        (started,) = asyncio.run(fulfillment_starts(dev_dir, order_id))
        assert started.trigger.source is TriggerSource.CDC, started.trigger
        assert whmcs_order_count(stack) == 1
        encoding = asyncio.run(started_input_encoding(stack["temporal"]["address"], order_id))
        assert encoding == b"binary/encrypted", "the listener and the worker share one key"
        assert_the_api_serves_the_fulfillment(run, stack, order_id)
    finally:
        code = run.interrupt()
    assert code == 0, run.text()


def assert_the_api_serves_the_fulfillment(
    run: DevRun, stack: dict[str, Any], order_id: str
) -> None:
    """What the portal and an operator see of the order through the stack's API."""
    api = stack["api"]
    assert api["url"] in run.text() and api["codec_url"] in run.text(), "the summary names both"
    ready = api_get(stack, "/api/health/ready", "service_token")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"postgres": True, "redis": True, "temporal": True}

    path = f"/api/orders/{order_id}/fulfillment"
    reads: list[httpx.Response] = []

    def activated() -> bool:
        # Salesforce's write-back comes before the workflow's last read-model write: poll as
        # the portal would.
        reads.append(api_get(stack, path, "service_token"))
        return reads[-1].status_code == 200 and reads[-1].json()["status"] == "activated"

    assert wait_until(activated, timeout=30), f"{reads[-1].text}\n{run.log_tail('api')}"
    read = reads[-1]
    assert read.json()["whmcs_order_id"] is not None
    assert api_get(stack, path, "ops_token").status_code == 403, "two tokens, two scopes"

    # What the Web UI does with the stored input: it was told where the codec is, and calls it
    # from its own origin, without a token (the dev UI has no login).
    ui = stack["temporal"]["ui_url"]
    ui_settings = httpx.get(f"{ui}/api/v1/settings", timeout=5).json()
    assert ui_settings["Codec"]["Endpoint"] == api["codec_url"]
    stored = asyncio.run(started_input_payloads(stack["temporal"]["address"], order_id))
    decoded = httpx.post(
        f"{api['codec_url']}/decode",
        content=json_format.MessageToJson(stored),
        headers={"Origin": ui, "Content-Type": "application/json", "X-Namespace": "default"},
        timeout=10,
    )
    assert decoded.status_code == 200, decoded.text
    assert decoded.headers["access-control-allow-origin"] == ui
    (plain,) = json_format.Parse(decoded.text, Payloads()).payloads
    assert plain.metadata["encoding"] == b"json/plain"
    assert json.loads(plain.data)["sf_order_id"] == order_id
