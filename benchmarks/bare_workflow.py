"""The baseline for the fulfillment benchmarks: a workflow that only runs no-op activities.

Its own module because the workflow sandbox re-imports a workflow's module, which must be free of
side effects (a workflow defined in a script's `__main__` fails validation).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

NOOP = "bench_noop"


@activity.defn(name=NOOP)
async def noop() -> None:
    """Does nothing: what is left is the platform's own cost per activity."""


@workflow.defn(name="BenchBareWorkflow")
class BareWorkflow:
    @workflow.run
    async def run(self, shape: list[int]) -> None:
        regular, local = shape
        # Interleaved as the fulfillment does it: a local read-model write, then a step.
        for index in range(max(regular, local)):
            if index < local:
                await workflow.execute_local_activity(
                    NOOP, start_to_close_timeout=timedelta(seconds=10)
                )
            if index < regular:
                await workflow.execute_activity(NOOP, start_to_close_timeout=timedelta(seconds=30))
