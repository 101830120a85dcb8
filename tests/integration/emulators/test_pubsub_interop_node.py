"""An independent client proves the emulator speaks the real Pub/Sub protocol.

`tests/interop/pubsub_node/subscribe.js` uses none of our code: Node's `@grpc/grpc-js` loads
`wire/pubsub/pubsub_api.proto` with `@grpc/proto-loader`, subscribes over TLS, decodes each
payload with `avsc` from the schema JSON and the changed-field bitmaps with its own code. It
asks for N of the more events that exist and must get exactly N (flow control), each decoding
to the same events, in the same order, as a Python client of the wire stubs sees.

Node.js 18+ and npm are required (CI has them): without them the test fails, saying so. The
packages are installed once per run into the package's `node_modules/` (kept between runs; no
lock file), so only the first run needs the registry.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import fastavro
import grpc
import pytest
from grpc import aio

from emulators.salesforce import avro
from emulators.salesforce.pubsub import encode_replay_id
from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle
from wire.pubsub import pubsub_api_pb2 as pb
from wire.pubsub.pubsub_api_pb2_grpc import PubSubStub

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "tests" / "interop" / "pubsub_node"
PROTO = ROOT / "wire" / "pubsub" / "pubsub_api.proto"
ORDERS = "/data/OrderChangeEvent"
REQUESTED = 3
INSTALL_TIMEOUT = 600.0
RUN_TIMEOUT = 30.0
KEEPALIVE_SECONDS = 0.5
NEEDS_NODE = "install Node.js 18+ (node and npm on PATH): CI has them"


@functools.cache
def node_client() -> tuple[str, str]:
    """`node` and the script, the packages installed (once per run); fails if Node is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(f"{'node' if node is None else 'npm'} not found: {NEEDS_NODE}")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 18:
        pytest.fail(f"node {version} is too old: {NEEDS_NODE}")
    if not _installed():
        # No lock file, no install scripts: the three pinned packages and what they need.
        installing = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--ignore-scripts"],
            cwd=PACKAGE,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        if installing.returncode != 0 or not _installed():
            pytest.fail(f"npm install in {PACKAGE} failed:\n{installing.stderr[-3000:]}")
    return node, str(PACKAGE / "subscribe.js")


def _installed() -> bool:
    """Whether node_modules holds each dependency at the version package.json pins."""
    pinned: dict[str, str] = json.loads((PACKAGE / "package.json").read_text())["dependencies"]
    for name, version in pinned.items():
        manifest = PACKAGE / "node_modules" / name / "package.json"
        if not manifest.is_file() or json.loads(manifest.read_text())["version"] != version:
            return False
    return True


def trusted(h: SalesforceEmulatorHandle) -> bytes:
    return Path(h.ca_file).read_bytes()


async def run_node(h: SalesforceEmulatorHandle, token: str) -> dict[str, Any]:
    node, script = node_client()
    assert h.pubsub_address is not None
    process = await asyncio.create_subprocess_exec(
        node,
        script,
        "--proto",
        str(PROTO),
        "--address",
        h.pubsub_address,
        "--ca",
        h.ca_file,
        "--topic",
        ORDERS,
        "--num",
        str(REQUESTED),
        "--timeout-ms",
        "10000",
        "--instanceurl",
        h.instance_url,
        "--tenantid",
        h.tenant_id,
        env={**os.environ, "PUBSUB_ACCESSTOKEN": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, f"subscribe.js failed: {err.decode()}"
    result: dict[str, Any] = json.loads(out)
    return result


async def subscribe_in_python(h: SalesforceEmulatorHandle, token: str) -> dict[str, Any]:
    """The same subscription through the wire stubs: GetTopic, GetSchema, one FetchRequest
    (EARLIEST, the same count), responses up to the first keepalive; the same JSON shape."""
    assert h.pubsub_address is not None
    md = (("accesstoken", token), ("instanceurl", h.instance_url), ("tenantid", h.tenant_id))
    credentials = grpc.ssl_channel_credentials(trusted(h))
    async with aio.secure_channel(h.pubsub_address, credentials) as channel:
        stub: Any = PubSubStub(channel)
        topic = await stub.GetTopic(pb.TopicRequest(topic_name=ORDERS), metadata=md)
        info = await stub.GetSchema(pb.SchemaRequest(schema_id=topic.schema_id), metadata=md)

        async def requests() -> Any:
            yield pb.FetchRequest(
                topic_name=ORDERS,
                replay_preset=pb.ReplayPreset.EARLIEST,
                num_requested=REQUESTED,
            )
            await asyncio.Event().wait()  # asks for nothing more, and keeps the stream open

        call = stub.Subscribe(requests(), metadata=md)
        responses: list[pb.FetchResponse] = []
        deadline = time.monotonic() + 10
        while not responses or responses[-1].events:
            responses.append(await asyncio.wait_for(call.read(), deadline - time.monotonic()))
        call.cancel()

    schema_json = json.loads(info.schema_json)
    parsed = fastavro.parse_schema(schema_json)
    events: list[dict[str, Any]] = []
    for consumed in (e for response in responses for e in response.events):
        assert consumed.event.schema_id == topic.schema_id
        record = fastavro.schemaless_reader(io.BytesIO(consumed.event.payload), parsed, None)
        assert isinstance(record, dict)
        header = record["ChangeEventHeader"]
        events.append(
            {
                "replay_id_hex": consumed.replay_id.hex(),
                "event_id": consumed.event.id,
                "entityName": header["entityName"],
                "changeType": header["changeType"],
                "recordIds": header["recordIds"],
                "changedFields": avro.field_names(schema_json, header["changedFields"]),
                "Status": record["Status"],
            }
        )
    return {
        "topic": topic.topic_name,
        "schema_id": topic.schema_id,
        "events": events,
        "received": len(events),
        "pending_after": responses[-1].pending_num_requested,
        "ended": "keepalive",
    }


async def test_a_node_grpc_js_client_gets_exactly_what_it_requested_and_decodes_it(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    node_client()  # fails first if Node.js is missing
    sf_emulator.control("POST", "config", {"pubsub_keepalive_seconds": KEEPALIVE_SECONDS})
    ids = sf_emulator.seed_demo()  # seeding publishes no change events
    esim, internet = ids["orders"]["esim"], ids["orders"]["internet"]
    sf: Any = sf_emulator.client()
    sf.Order.update(internet, {"Status": "Activated"})
    sf.Order.update(esim, {"BillingCity": "Meguro-ku"})
    sf.Order.update(esim, {"Description": "one"})
    sf.Order.update(esim, {"Description": "two"})
    sf.Order.update(internet, {"Description": "three"})
    retained = sf_emulator.control("GET", f"events?channel={ORDERS}")["events"]
    token = sf_emulator.login()

    node = await run_node(sf_emulator, token)
    python = await subscribe_in_python(sf_emulator, token)

    assert len(retained) == 5  # more than requested
    # Flow control: exactly what was requested, although more exist, up to a keepalive.
    assert node["received"] == len(node["events"]) == REQUESTED
    assert node["ended"] == "keepalive" and node["pending_after"] == 0
    assert node["topic"] == ORDERS and len(node["schema_id"]) == 22
    expected_ids = [encode_replay_id(ORDERS, e["replayIds"][ORDERS]).hex() for e in retained]
    for event in node["events"]:
        assert re.fullmatch(r"[0-9a-f]{24}", event["replay_id_hex"])
        assert event["entityName"] == "Order" and event["changeType"] == "UPDATE"
    assert [e["replay_id_hex"] for e in node["events"]] == expected_ids[:REQUESTED]
    activated, moved, described = node["events"]
    assert activated["recordIds"] == [internet] and activated["Status"] == "Activated"
    assert "Status" in activated["changedFields"]
    assert moved["recordIds"] == [esim] and "BillingAddress.City" in moved["changedFields"]
    assert "BillingAddress" not in moved["changedFields"]
    assert "Description" in described["changedFields"]
    # What an independent stack decoded is what the wire stubs and fastavro decode.
    assert node == python
