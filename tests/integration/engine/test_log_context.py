"""Log lines written while a step runs name the order, the workflow and the step."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from config.logging import configure_logging
from domain.fulfillment import workflow_id
from tests.fixtures.engine import Engine

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


async def test_a_steps_log_lines_carry_order_workflow_and_step(
    engine: Engine, log_lines: io.StringIO
) -> None:
    order_id = engine.activate("internet")
    await (await engine.start(order_id)).result()
    events = [
        json.loads(line) for line in log_lines.getvalue().splitlines() if line.startswith("{")
    ]
    [added] = [e for e in events if e.get("event") == "whmcs.order_added"]
    assert added["sf_order_id"] == order_id
    assert added["workflow_id"] == workflow_id(order_id)
    assert added["step"] == "create_billing_order"
