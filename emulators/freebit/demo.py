"""The Freebit demo dataset and the plan catalogue every emulator starts with.

Plans (`planCode`): PASI_3G "Data 3GB", PASI_10G "Voice 10GB", PASI_20G "Data 20GB",
PASI_50G "Data 50GB". Talk options (`optionCode`): TALK_5MIN, TALK_UNLIMITED.

The demo dataset (`POST /__emulator__/seed {"dataset": "demo"}`) adds two lines that are already
active: 08011110001 (physical SIM, PASI_3G) and 08011110002 (eSIM, PASI_20G, EID below).
Activating EID `FAILING_EID` or account `FAILING_ACCOUNT` always ends "failed" (the defaults of
the `failing_eids` / `failing_accounts` settings).
"""

from __future__ import annotations

from typing import Any, Final

PLANS: Final = {
    "PASI_3G": "Data 3GB",
    "PASI_10G": "Voice 10GB",
    "PASI_20G": "Data 20GB",
    "PASI_50G": "Data 50GB",
}
TALK_OPTIONS: Final = ["TALK_5MIN", "TALK_UNLIMITED"]

FAILING_EID: Final = "89049032000000000000000000000666"
FAILING_ACCOUNT: Final = "09099990666"

DEMO_PHYSICAL_ACCOUNT: Final = "08011110001"
DEMO_ESIM_ACCOUNT: Final = "08011110002"
DEMO_ESIM_EID: Final = "89049032000000000000000000000002"

ACCOUNTS: Final[list[dict[str, Any]]] = [
    {"account": DEMO_PHYSICAL_ACCOUNT, "simType": "physical", "planCode": "PASI_3G"},
    {
        "account": DEMO_ESIM_ACCOUNT,
        "simType": "esim",
        "planCode": "PASI_20G",
        "eid": DEMO_ESIM_EID,
    },
]
