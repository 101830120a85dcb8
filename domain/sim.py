"""SIM requests to Freebit and where an activation stands."""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

# A line's phone number: ASCII digits only (`\d` would admit full-width digits Freebit refuses).
PHONE_NUMBER_PATTERN = r"^[0-9]{11,14}$"
EID_PATTERN = r"^[0-9]{32}$"


class SimType(StrEnum):
    """`SIM_Type__c`."""

    ESIM = "eSIM"
    PHYSICAL = "Physical SIM"


class MnpTransfer(BaseModel):
    """Carry a number over from another carrier: the reservation and the person it names."""

    model_config = ConfigDict(frozen=True)

    reservation_number: str = Field(min_length=1)
    expiry_date: date
    last_name_kanji: str = Field(min_length=1)
    first_name_kanji: str = Field(min_length=1)
    last_name_kana: str = Field(min_length=1)
    first_name_kana: str = Field(min_length=1)
    gender: str = Field(pattern=r"^[MFC]$")
    birthday: date


class SimRequest(BaseModel):
    """One line to register with Freebit, built by `domain.rules.sim_request`."""

    model_config = ConfigDict(frozen=True)

    sf_order_id: str
    sim_type: SimType
    phone_number: str = Field(pattern=PHONE_NUMBER_PATTERN)
    plan_code: str = Field(min_length=1)
    eid: str | None = Field(default=None, pattern=EID_PATTERN)
    mnp: MnpTransfer | None = None


class SimPhase(StrEnum):
    """Where an asynchronous activation stands.

    `UNKNOWN` is a state Freebit reported that the engine does not know: it is neither taken for
    "still in progress" (which would wait out the deadline on a line that may have failed) nor
    for an outcome; the caller alerts and keeps polling until the deadline.
    """

    IN_PROGRESS = "in_progress"
    ACTIVE = "active"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self in (SimPhase.ACTIVE, SimPhase.FAILED)


class SimActivation(BaseModel):
    """A line's state as last read (or reported by Freebit's completion notification)."""

    model_config = ConfigDict(frozen=True)

    phone_number: str
    phase: SimPhase
    state: str
    sim_type: SimType | None = None
    fail_reason: str | None = None
    # The eSIM profile's EID as Freebit holds it (None: a physical SIM, or not reported).
    eid: str | None = None


class ExistingLine(StrEnum):
    """What a registration that met an existing line of the number does (`rules.existing_line`)."""

    # The line is this request's (an earlier attempt registered it): nothing to send.
    OURS = "ours"
    # The line is this request's but its activation failed: register it again (re-issue).
    REISSUE = "reissue"
    # The line is another SIM's: an operator must sort it out at Freebit or in Salesforce.
    CONFLICT = "conflict"
