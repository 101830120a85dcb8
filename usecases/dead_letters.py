"""Dead letters: change-event messages the listener could not read, listed and redriven.

Shared by the ops API and the `fulfillment dead-letters` command; knows no HTTP. A redrive is a
request: the active listener handles each requested letter through the same dispatch as a live
event and sets `redriven_at` (or records why it still cannot), within a few seconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict

from usecases.errors import NotFoundError, or_unavailable

_COLUMNS = (
    "id, transport, channel, replay_id, message, reason, received_at, redrive_requested_at,"
    " redrive_requested_by, redriven_at, redrive_outcome"
)


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    # The transport that received it; its replay id means something only there.
    transport: Literal["cometd", "pubsub"]
    channel: str | None
    replay_id: str | None
    reason: str
    received_at: datetime
    # What was stored: the raw streaming message a parse refused, or an event already read.
    shape: Literal["message", "event"]
    redrive_requested_at: datetime | None = None
    redrive_requested_by: str | None = None
    redriven_at: datetime | None = None
    redrive_outcome: str | None = None


class DeadLetters(BaseModel):
    items: list[DeadLetter]


class RedriveRequested(BaseModel):
    ids: list[int]
    requested_by: str


async def list_dead_letters(
    pool: asyncpg.Pool,
    *,
    ids: Sequence[int] | None = None,
    include_redriven: bool = False,
    limit: int = 100,
) -> DeadLetters:
    """Dead letters, newest first: those not yet redriven (or all), or the ones named."""
    conditions = []
    args: list[Any] = [limit]
    if ids is not None:
        args.append(list(ids))
        conditions.append(f"id = ANY(${len(args)}::bigint[])")
    elif not include_redriven:
        conditions.append("redriven_at IS NULL")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = await _fetch(
        pool,
        f"SELECT {_COLUMNS} FROM cdc_dead_letters{where} ORDER BY id DESC LIMIT $1",  # noqa: S608
        *args,
    )
    return DeadLetters(items=[_letter(row) for row in rows])


async def request_redrive(
    pool: asyncpg.Pool, ids: Sequence[int] | None, *, requested_by: str
) -> RedriveRequested:
    """Ask the listener to handle the named letters again (None: every one not yet redriven).

    A letter already redriven is left as it is; an id that names no letter is refused, and
    then nothing is requested.
    """
    if ids is not None:
        known = {
            row["id"]
            for row in await _fetch(
                pool, "SELECT id FROM cdc_dead_letters WHERE id = ANY($1::bigint[])", list(ids)
            )
        }
        unknown = sorted(set(ids) - known)
        if unknown:
            raise NotFoundError(f"no dead letter {', '.join(map(str, unknown))}")
    rows = await _fetch(
        pool,
        "UPDATE cdc_dead_letters SET redrive_requested_at = now(), redrive_requested_by = $1,"
        " redrive_outcome = NULL WHERE redriven_at IS NULL"
        " AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[])) RETURNING id",
        requested_by,
        None if ids is None else list(ids),
    )
    return RedriveRequested(ids=sorted(row["id"] for row in rows), requested_by=requested_by)


def _letter(row: asyncpg.Record) -> DeadLetter:
    message = row["message"]
    if isinstance(message, str):  # stored before 0011, as a JSON string inside the jsonb
        message = json.loads(message)
    raw = isinstance(message, dict) and "data" in message and "channel" in message
    return DeadLetter(
        id=row["id"],
        channel=row["channel"],
        transport=row["transport"],
        replay_id=row["replay_id"],
        reason=row["reason"],
        received_at=row["received_at"],
        shape="message" if raw else "event",
        redrive_requested_at=row["redrive_requested_at"],
        redrive_requested_by=row["redrive_requested_by"],
        redriven_at=row["redriven_at"],
        redrive_outcome=row["redrive_outcome"],
    )


async def _fetch(pool: asyncpg.Pool, query: str, *args: Any) -> list[asyncpg.Record]:
    return list(await or_unavailable(pool.fetch(query, *args)))
