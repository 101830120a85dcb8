"""Salesforce events as the engine reads them: change events (CDC) and platform events.

`cdc_listener.events` parses the Streaming API's messages into these; everything after that
(what an event means, what to do) works on these types only.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from domain.order import SF_ID_PATTERN

_CLIENT = re.compile(r";client=([^;]+)")


def _as_text(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# Where an event sits in its channel, as the transport gave it: a CometD replay id (an integer,
# written in decimal) or a Pub/Sub one (opaque bytes, written in hex). Only the transport that
# gave an id can resume from it, and nothing may compare two ids: the listener keeps its own
# order of receipt beside each (`cdc_listener.store`). Integers (what workflow inputs and dead
# letters held before there were two transports) read as their decimal text.
ReplayId = Annotated[
    str, BeforeValidator(_as_text), StringConstraints(min_length=1, max_length=256)
]


class ChangeType(StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    UNDELETE = "UNDELETE"
    GAP_CREATE = "GAP_CREATE"
    GAP_UPDATE = "GAP_UPDATE"
    GAP_DELETE = "GAP_DELETE"
    GAP_UNDELETE = "GAP_UNDELETE"
    GAP_OVERFLOW = "GAP_OVERFLOW"

    @property
    def is_gap(self) -> bool:
        """A gap event carries no field values: the records must be read again."""
        return self.value.startswith("GAP_")


class ChangeEvent(BaseModel):
    """One change event: what changed, on which records, committed when, by whom."""

    model_config = ConfigDict(frozen=True)

    channel: str
    replay_id: ReplayId
    entity: str
    change_type: ChangeType
    # Salesforce ids only: they reach SOQL and workflow ids later.
    record_ids: tuple[Annotated[str, StringConstraints(pattern=SF_ID_PATTERN)], ...] = ()
    changed_fields: tuple[str, ...] = ()
    change_origin: str = ""
    commit_timestamp: datetime
    transaction_key: str | None = None
    # The body without the header: all non-empty fields of a CREATE, the changed ones of an
    # UPDATE (a nulled field is present as None), nothing for a DELETE or a gap.
    fields: dict[str, Any] = Field(default_factory=dict)

    @property
    def origin_client(self) -> str | None:
        """The `client=` of `changeOrigin`: the `Sforce-Call-Options` client that wrote it."""
        match = _CLIENT.search(self.change_origin)
        return match.group(1) if match else None

    def changed(self, field: str) -> bool:
        """Whether `field` changed: named in `changedFields` (UPDATE) or present (CREATE)."""
        if self.change_type in (ChangeType.CREATE, ChangeType.UNDELETE):
            return self.fields.get(field) is not None
        return field in self.changed_fields


class PlatformEvent(BaseModel):
    """A platform event, e.g. `Account_Eligibility_Update__e`."""

    model_config = ConfigDict(frozen=True)

    channel: str
    replay_id: ReplayId
    event_name: str
    created_date: datetime | None = None
    fields: dict[str, Any] = Field(default_factory=dict)


Event = ChangeEvent | PlatformEvent
