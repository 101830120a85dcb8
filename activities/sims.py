"""Freebit steps: register a line (asynchronous at Freebit), read where its activation stands.

The workflow waits between reads with durable timers, so no activity slot is held while Freebit
works.
"""

from __future__ import annotations

from temporalio import activity

from activities.errors import translated
from clients.errors import OutcomeUnknownError
from clients.freebit import FreebitClient
from domain.errors import WriteOutcome
from domain.rules import existing_line
from domain.sim import ExistingLine, SimRequest
from domain.steps import Activity, SimLine, SimLineQuery, Written


class SimActivities:
    def __init__(self, freebit: FreebitClient) -> None:
        self._freebit = freebit

    @activity.defn(name=Activity.REGISTER_SIM.value)
    @translated
    async def register_sim(self, request: SimRequest) -> Written:
        try:
            return Written(outcome=await self._freebit.register_line(request))
        except OutcomeUnknownError:
            # The reply was lost: the line as this request wants it means it went through.
            line = await self._freebit.find_line(request.phone_number)
            if line is not None and existing_line(request, line) is ExistingLine.OURS:
                return Written(outcome=WriteOutcome.ALREADY_DONE)
            raise

    @activity.defn(name=Activity.CHECK_SIM.value)
    @translated
    async def check_sim(self, request: SimLineQuery) -> SimLine:
        return SimLine(line=await self._freebit.find_line(request.phone_number))
