"""The processes `fulfillment dev` runs after Temporal, Postgres and Redis — the extension point.

`COMPONENTS` is an ordered list of factories. Each gets a `DevContext` (the state directory, the
ports, the stack so far) and returns a `Planned` — the `Component` to start and the part of
`.dev/stack.json` it provides — or None when it has nothing to run. Components start in list
order, so one that needs another's URL or credentials comes after it and reads them from
`context.stack`; `context.env()` is the engine's environment for that stack. A process added by
a later issue (worker, listener, API) is one more factory appended here.

The dev launcher is one of the two places (with the test fixtures) allowed to know both the
engine and the emulators: the emulators' default credentials are read from their modules.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.stack_file import stack_env
from devstack.supervisor import Component, http_check

SF_API_VERSION = "60.0"


@dataclass(frozen=True)
class Ports:
    """Every port of the dev stack; each is a launcher flag and a DEV_<NAME>_PORT variable."""

    temporal: int = 7233
    temporal_ui: int = 8233
    postgres: int = 5433
    redis: int = 6380
    salesforce: int = 8701
    whmcs: int = 8702
    freebit: int = 8703
    api: int = 8000


@dataclass(frozen=True)
class DevContext:
    dev_dir: Path
    ports: Ports
    stack: Mapping[str, Any]
    emulators: bool = True
    python: str = field(default=sys.executable)

    def env(self) -> dict[str, str]:
        """The engine's settings (TEMPORAL_ADDRESS, DATABASE_URL, SF_*, …) for the stack so far."""
        return stack_env(self.stack)

    def fulfillment(self, *args: str) -> tuple[str, ...]:
        """argv running a `fulfillment` subcommand with this interpreter."""
        return (self.python, "-m", "cli", *args)


@dataclass(frozen=True)
class Planned:
    component: Component
    stack: Mapping[str, Any] = field(default_factory=dict)


ComponentFactory = Callable[[DevContext], Planned | None]


def _emulator(context: DevContext, name: str, port: int, *extra: str) -> tuple[str, ...]:
    state = context.dev_dir / "emulators" / f"{name}.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    return context.fulfillment(
        "emulate", name, "--port", str(port), "--state-file", str(state), "--demo", *extra
    )


def salesforce_emulator(context: DevContext) -> Planned | None:
    if not context.emulators:
        return None
    from emulators.salesforce import auth

    port = context.ports.salesforce
    certs = context.dev_dir / "certs"
    base = f"https://127.0.0.1:{port}"
    ca_file = certs / "ca.pem"
    component = Component(
        "salesforce-emulator",
        _emulator(context, "salesforce", port, "--certs-dir", str(certs)),
        ports=(port,),
        ready=http_check(f"{base}/__emulator__/state", ca_file=ca_file),
        url=base,
    )
    return Planned(
        component,
        {
            "salesforce": {
                "instance_url": base,
                "token_url": f"{base}/services/oauth2/token",
                "client_id": auth.DEFAULT_CLIENT_ID,
                "client_secret": auth.DEFAULT_CLIENT_SECRET,
                "username": auth.DEFAULT_USERNAME,
                "password": auth.DEFAULT_PASSWORD,
                "ca_file": str(ca_file),
                "api_version": SF_API_VERSION,
            }
        },
    )


def _http_emulator(
    context: DevContext, name: str, port: int, api_path: str, url_key: str, **credentials: str
) -> Planned:
    """A plain-HTTP emulator (WHMCS, Freebit) and its `stack.json` section."""
    base = f"http://127.0.0.1:{port}"
    component = Component(
        f"{name}-emulator",
        _emulator(context, name, port),
        ports=(port,),
        ready=http_check(f"{base}/__emulator__/state"),
        url=f"{base}{api_path}",
    )
    return Planned(component, {name: {url_key: f"{base}{api_path}", **credentials}})


def whmcs_emulator(context: DevContext) -> Planned | None:
    if not context.emulators:
        return None
    from emulators.whmcs.emulator import DEFAULT_SETTINGS

    return _http_emulator(
        context,
        "whmcs",
        context.ports.whmcs,
        "/includes/api.php",
        "api_url",
        identifier=DEFAULT_SETTINGS["identifier"],
        secret=DEFAULT_SETTINGS["secret"],
    )


def freebit_emulator(context: DevContext) -> Planned | None:
    if not context.emulators:
        return None
    from emulators.freebit.emulator import DEFAULT_SETTINGS

    return _http_emulator(
        context,
        "freebit",
        context.ports.freebit,
        "/emptool/api/",
        "base_url",
        oem_id=DEFAULT_SETTINGS["oem_id"],
        oem_key=DEFAULT_SETTINGS["oem_key"],
    )


COMPONENTS: list[ComponentFactory] = [salesforce_emulator, whmcs_emulator, freebit_emulator]
