"""Tiny workflows that prove the Temporal servers work; importable without side effects."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def greet(name: str) -> str:
    return f"hello {name}"


@workflow.defn
class GreetingWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(
            greet, name, start_to_close_timeout=timedelta(seconds=10)
        )


@workflow.defn
class SleepWorkflow:
    """Sleeps on a durable timer and reports how much workflow time passed."""

    @workflow.run
    async def run(self, hours: int) -> float:
        started = workflow.now()
        await workflow.sleep(timedelta(hours=hours))
        return (workflow.now() - started).total_seconds()
