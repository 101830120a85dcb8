"""Recorded fulfillment histories replay with the current workflow code.

A change that makes one of them fail to replay would break every running workflow of that
shape on deploy: guard it with `workflow.patched` (see docs/workflow-changes.md), or make it a
new workflow type, and record the new shape with `python -m tests.replay.record_histories`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.order_fulfillment import OrderFulfillment

RECORDED = {
    path.stem: path.read_text()
    for path in sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))
}


def test_the_histories_the_issue_names_are_recorded() -> None:
    assert set(RECORDED) >= {
        "internet_order",
        "sim_order_activated",
        "payment_missing_then_retried",
        "sim_failure_then_cancelled",
    }


@pytest.mark.parametrize("name", sorted(RECORDED))
async def test_a_recorded_history_replays_with_the_current_code(name: str) -> None:
    history = WorkflowHistory.from_json(name, RECORDED[name])
    replayer = Replayer(workflows=[OrderFulfillment], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
