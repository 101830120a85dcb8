"""Dead letters listed and redriven: through the `fulfillment dead-letters` command (as an
operator runs it) and the ops API, handled by the real listener into real fulfillments, from
both shapes a letter is stored in (a raw streaming message, an event the listener had read)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from domain.events import ChangeEvent, ChangeType
from domain.fulfillment import workflow_id
from tests.faults.batch import ORDERS_CHANNEL, activate_all, create_orders
from tests.fixtures.api import Api
from tests.fixtures.engine import Engine
from tests.integration.listener.test_listener import (
    fulfilled,
    listener_settings,
    listening,
    until,
)

pytestmark = pytest.mark.usefixtures("worker")
ROOT = Path(__file__).resolve().parents[3]


def raw_activation(order_id: str, replay_id: int) -> dict[str, Any]:
    """An activation as the Streaming API delivers it."""
    return {
        "channel": ORDERS_CHANNEL,
        "data": {
            "schema": "x",
            "event": {"replayId": replay_id},
            "payload": {
                "ChangeEventHeader": {
                    "entityName": "Order",
                    "recordIds": [order_id],
                    "changeType": "UPDATE",
                    "changedFields": ["Status", "LastModifiedDate"],
                    "changeOrigin": "com/salesforce/api/rest/60.0",
                    "commitTimestamp": int(datetime.now(UTC).timestamp() * 1000),
                    "transactionKey": "t",
                    "sequenceNumber": 1,
                },
                "Status": "Activated",
            },
        },
    }


def read_activation(order_id: str, replay_id: int) -> dict[str, Any]:
    """The same activation as the listener had read it (how handling failures were stored)."""
    return ChangeEvent(
        channel=ORDERS_CHANNEL,
        replay_id=str(replay_id),
        entity="Order",
        change_type=ChangeType.UPDATE,
        record_ids=(order_id,),
        changed_fields=("Status", "LastModifiedDate"),
        commit_timestamp=datetime.now(UTC),
        fields={"Status": "Activated"},
    ).model_dump(mode="json")


async def store_letters(engine: Engine, letters: list[tuple[int, Any, str]]) -> list[int]:
    connection = await asyncpg.connect(engine.settings.database_url)
    try:
        return [
            await connection.fetchval(
                "INSERT INTO cdc_dead_letters (channel, replay_id, message, reason)"
                " VALUES ($1, $2, $3::jsonb, $4) RETURNING id",
                ORDERS_CHANNEL,
                str(replay_id),
                json.dumps(message),
                reason,
            )
            for replay_id, message, reason in letters
        ]
    finally:
        await connection.close()


async def past_the_activations(engine: Engine) -> None:
    """Cursors at the newest events: the listener will not see the activations themselves."""
    channels = engine.sf.control("GET", "state")["events"]["channels"]
    connection = await asyncpg.connect(engine.settings.database_url)
    try:
        for channel, state in channels.items():
            await connection.execute(
                "INSERT INTO cdc_replay_cursors (channel, replay_id, position) VALUES ($1, $2, $3)",
                channel,
                str(state["lastReplayId"]),
                int(state["lastReplayId"]),
            )
    finally:
        await connection.close()


async def started_by(engine: Engine, order_id: str) -> str:
    described = await engine.client.get_workflow_handle(workflow_id(order_id)).describe()
    return await described.static_details() or ""


def fulfillment_command(engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=engine.environment(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_dead_letters_of_both_shapes_are_listed_and_redriven_into_fulfillments(
    engine: Engine,
) -> None:
    raw, read = create_orders(engine, 2)
    activate_all(engine, [raw, read])
    await past_the_activations(engine)
    ids = await store_letters(
        engine,
        [
            (9_000_001, raw_activation(raw, 9_000_001), "handling failed: RPCError"),
            (9_000_002, read_activation(read, 9_000_002), "handling failed: RPCError"),
            (9_000_003, {"channel": ORDERS_CHANNEL, "data": {}}, "not an event message"),
        ],
    )
    listed = await asyncio.to_thread(fulfillment_command, engine, "dead-letters", "--json")
    assert listed.returncode == 0, listed.stderr
    items = {item["id"]: item for item in json.loads(listed.stdout)["items"]}
    assert [items[i]["shape"] for i in ids] == ["message", "event", "message"]
    assert all(items[i]["redriven_at"] is None for i in ids)

    async with listening(listener_settings(engine)):
        redriven = await asyncio.to_thread(
            fulfillment_command, engine, "dead-letters", "redrive", "--all", "--as", "ops", "--json"
        )
        assert redriven.returncode == 0, redriven.stderr
        outcome = {item["id"]: item for item in json.loads(redriven.stdout)["items"]}
        for order_id in (raw, read):
            assert (await fulfilled(engine, order_id)).status == "activated"
    # Started by the redrive (the letters' replay ids), not by anything else.
    for order_id, replay_id in ((raw, 9_000_001), (read, 9_000_002)):
        details = await started_by(engine, order_id)
        assert f"replay id {replay_id}" in details, details
    assert outcome[ids[0]]["redriven_at"] and outcome[ids[1]]["redriven_at"]
    assert [outcome[i]["redrive_outcome"] for i in ids[:2]] == ["handled", "handled"]
    # Still unreadable: not redriven, the request ended, the reason kept for the operator.
    assert outcome[ids[2]]["redriven_at"] is None
    assert outcome[ids[2]]["redrive_requested_at"] is None
    assert outcome[ids[2]]["redrive_outcome"].startswith("still unreadable")
    assert {item["redrive_requested_by"] for item in outcome.values()} == {"ops"}
    # Nothing left to redrive but the unreadable one; redriving again does nothing twice.
    again = await asyncio.to_thread(fulfillment_command, engine, "dead-letters", "--json")
    assert [item["id"] for item in json.loads(again.stdout)["items"]] == [ids[2]]


async def test_the_ops_api_lists_and_requests_a_redrive(engine: Engine, api: Api) -> None:
    (order,) = create_orders(engine, 1)
    activate_all(engine, [order])
    await past_the_activations(engine)
    (letter,) = await store_letters(
        engine, [(9_000_011, raw_activation(order, 9_000_011), "handling failed")]
    )
    listed = await api.http.get("/api/ops/dead-letters", headers=api.ops())
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["items"]] == [letter]
    assert (await api.http.get("/api/ops/dead-letters", headers=api.service())).status_code == 403

    unknown = await api.http.post(
        "/api/ops/dead-letters/redrive", json={"ids": [letter, 424242]}, headers=api.ops()
    )
    assert unknown.status_code == 404
    both = await api.http.post(
        "/api/ops/dead-letters/redrive", json={"ids": [letter], "all": True}, headers=api.ops()
    )
    assert both.status_code == 422
    requested = await api.http.post(
        "/api/ops/dead-letters/redrive", json={"ids": [letter]}, headers=api.ops("ana@ops")
    )
    assert requested.status_code == 202
    assert requested.json() == {"ids": [letter], "requested_by": "ana@ops"}
    async with listening(listener_settings(engine)):
        assert (await fulfilled(engine, order)).status == "activated"
        assert "replay id 9000011" in await started_by(engine, order)

        async def redriven() -> bool:
            reply = await api.http.get(
                "/api/ops/dead-letters", params={"include_redriven": "true"}, headers=api.ops()
            )
            return bool(reply.json()["items"][0]["redriven_at"])

        await until(redriven, within=30)
