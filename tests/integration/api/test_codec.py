"""The Temporal UI's codec endpoint, spoken as the UI speaks it, over a real history."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.fixtures.api import Api
from tests.fixtures.engine import Engine

pytestmark = pytest.mark.usefixtures("worker")
UI = "http://localhost:8233"


async def _finished_input(engine: Engine) -> tuple[str, Payloads]:
    order_id = engine.activate("internet")
    handle = await engine.start(order_id)
    await handle.result()
    plain = Client(engine.client.service_client, namespace=engine.settings.temporal_namespace)
    history = await plain.get_workflow_handle(handle.id).fetch_history()
    started = next(
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    )
    return order_id, started.workflow_execution_started_event_attributes.input


async def test_the_ui_reads_a_finished_workflows_input_decoded_and_history_stays_encrypted(
    engine: Engine, api: Api
) -> None:
    order_id, stored = await _finished_input(engine)
    body = json_format.MessageToJson(stored)
    assert order_id not in body and b"encrypted" in stored.payloads[0].metadata["encoding"]

    reply = await api.http.post(
        "/api/codec/decode",
        content=body,
        headers=api.ops()
        | {"Content-Type": "application/json", "X-Namespace": "default", "Origin": UI},
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["access-control-allow-origin"] == UI
    decoded = json_format.Parse(reply.text, Payloads())
    assert json.loads(decoded.payloads[0].data)["sf_order_id"] == order_id

    # And back: what the UI encodes (a signal it sends) decodes to the same.
    again = await api.http.post("/api/codec/encode", content=reply.text, headers=api.ops())
    round_trip = await api.http.post("/api/codec/decode", content=again.text, headers=api.ops())
    assert json_format.Parse(round_trip.text, Payloads()) == decoded


async def test_the_codec_needs_the_ops_token_and_answers_the_uis_preflight(api: Api) -> None:
    assert (await api.http.post("/api/codec/decode", content="{}")).status_code == 401
    portal = await api.http.post("/api/codec/decode", content="{}", headers=api.service())
    assert portal.status_code == 403
    preflight = await api.http.options(
        "/api/codec/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == UI
    stranger = await api.http.options(
        "/api/codec/decode",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in stranger.headers


async def test_garbage_is_a_clear_400(api: Api) -> None:
    reply = await api.http.post("/api/codec/decode", content="not json", headers=api.ops())
    assert reply.status_code == 400 and reply.json()["code"] == "bad_request"


async def test_cors_is_for_the_codec_only(api: Api) -> None:
    health = await api.http.get("/api/health", headers={"Origin": UI})
    assert "access-control-allow-origin" not in health.headers
    assert "origin" not in health.headers.get("vary", "").casefold()
