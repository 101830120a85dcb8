"""The processes `fulfillment dev` runs after Temporal, Postgres and Redis — the extension point.

`COMPONENTS` is an ordered list of factories. Each gets a `DevContext` (the state directory, the
ports, the stack planned so far) and returns a `Planned` — the `Component` to start, with the
ports it listens on, and the part of `.dev/stack.json` it provides — or None when it has nothing
to run. Every factory is called before anything starts (so that every port is checked first):
a factory plans, it never starts or waits for anything. Components start in list order, so one
that needs another's URL or credentials comes after it and reads them from `context.stack`;
`context.env()` is the engine's environment for that stack. An engine process (the worker, the
CDC listener, the HTTP API) is one more factory appended here that builds its child with
`engine_component`, so every one of them gets the same environment (the stack's settings, the
payload key among them) and lists its ports (`context.ports.api`, a metrics port) in its
`Component.ports`. The API's tokens and webhook secret go to the API child only.

The dev launcher is one of the two places (with the test fixtures) allowed to know both the
engine and the emulators: the emulators' default credentials are read from their modules.
"""

from __future__ import annotations

import ssl
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from config.settings import LISTENER, WORKER, env_name
from devstack.process import ServiceError
from devstack.stack_file import API_SECRETS, ENV_FROM_STACK, lookup, stack_env
from devstack.supervisor import Check, Component, http_check

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
    # The Salesforce emulator's Pub/Sub API (gRPC).
    salesforce_pubsub: int = 8704
    api: int = 8000
    worker_metrics: int = 9101
    listener_metrics: int = 9102


# An upstream counts as the stack's when the stack has its address (the `whmcs` section also
# holds the API's webhook secret, which exists without the emulator).
_SYSTEM_ADDRESS = {
    "salesforce": "salesforce.token_url",
    "whmcs": "whmcs.api_url",
    "freebit": "freebit.base_url",
}


def _quiet(_line: str) -> None:
    pass


@dataclass(frozen=True)
class DevContext:
    dev_dir: Path
    ports: Ports
    stack: Mapping[str, Any]
    emulators: bool = True
    worker: bool = True
    listener: bool = True
    api: bool = True
    # How the listener receives change events (CDC_TRANSPORT); the emulator serves both.
    cdc_transport: str = "cometd"
    # The launcher's environment: what its children inherit, and where settings the stack does
    # not provide (real upstreams when the emulators are off) come from.
    environ: Mapping[str, str] = field(default_factory=dict)
    # For a line about a part left out while planning (the plan itself starts nothing).
    say: Callable[[str], None] = _quiet
    python: str = field(default=sys.executable)

    def env(self) -> dict[str, str]:
        """The engine's settings (TEMPORAL_ADDRESS, DATABASE_URL, SF_*, …) for the stack so far."""
        return stack_env(self.stack)

    def engine_env(self, *, serves_api: bool = False) -> dict[str, str | None]:
        """The environment every engine child gets, laid over the launcher's own.

        The stack's settings win; for an upstream the stack provides (an emulator), a setting of
        that system it leaves empty is taken out (None), so the developer's own credentials for a
        real system never mix with the emulator's — an inline SF_JWT_PRIVATE_KEY from the shell
        would otherwise be used instead of the stack's key file. The API's own secrets (its
        bearer tokens, the webhook secret) reach only the child that `serves_api`: a worker or
        listener has no use for them, and a secret a process never holds cannot leak from it.
        Everything else (LOG_LEVEL, …) is inherited.
        """
        env: dict[str, str | None] = {}
        if "LOG_FORMAT" not in self.environ:
            # The logs go to files that people read (and whose tail the supervisor prints).
            env["LOG_FORMAT"] = "console"
        for name, dotted in ENV_FROM_STACK:
            if name in API_SECRETS and not serves_api:
                env[name] = None
                continue
            value = lookup(self.stack, dotted)
            address = _SYSTEM_ADDRESS.get(dotted.split(".")[0])
            if value is not None:
                env[name] = str(value)
            elif address is not None and lookup(self.stack, address) is not None:
                env[name] = None
        return env

    def fulfillment(self, *args: str) -> tuple[str, ...]:
        """argv running a `fulfillment` subcommand with this interpreter."""
        return (self.python, "-m", "cli", *args)


@dataclass(frozen=True)
class Planned:
    component: Component
    stack: Mapping[str, Any] = field(default_factory=dict)
    # What the launcher's summary prints for it (None: the component's url).
    shown: str | None = None


ComponentFactory = Callable[[DevContext], Planned | None]


def _emulator(context: DevContext, name: str, port: int, *extra: str) -> tuple[str, ...]:
    state = context.dev_dir / "emulators" / f"{name}.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    return context.fulfillment(
        "emulate", name, "--port", str(port), "--state-file", str(state), "--demo", *extra
    )


def jwt_grant_check(
    token_url: str, *, client_id: str, username: str, key_file: Path, ca_file: Path
) -> Check:
    """Ready when the token endpoint grants a JWT bearer assertion signed with `key_file`.

    Proves what the engine will need (the emulator trusts the key that stack.json hands out);
    a refusal is final, so it fails the start at once with the emulator's reason instead of
    polling until the timeout.
    """
    from emulators.salesforce.auth import JWT_GRANT

    parts = urlsplit(token_url)

    def check() -> bool:
        claims = {
            "iss": client_id,
            "sub": username,
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(time.time()) + 180,
        }
        assertion = jwt.encode(claims, key_file.read_text(encoding="utf-8"), algorithm="RS256")
        try:
            verify = ssl.create_default_context(cafile=ca_file)
            with httpx.Client(trust_env=False, timeout=2.0, verify=verify) as http:
                reply = http.post(token_url, data={"grant_type": JWT_GRANT, "assertion": assertion})
        except (httpx.HTTPError, OSError):
            return False
        if reply.status_code == 400:
            raise ServiceError(
                f"the Salesforce emulator refuses the dev stack's JWT key {key_file}: {reply.text}"
            )
        return reply.status_code == 200

    return check


def salesforce_emulator(context: DevContext) -> Planned | None:
    if not context.emulators:
        return None
    from emulators.salesforce import auth
    from emulators.salesforce.tls import ensure_certs

    port, pubsub_port = context.ports.salesforce, context.ports.salesforce_pubsub
    certs_dir = context.dev_dir / "certs"
    # Made here rather than by the emulator, so the key's path is known before it starts; the
    # emulator trusts `jwt-public.pem` of its --certs-dir (as the test fixture's does), and the
    # pair is kept under .dev/ so tokens and the engine's settings survive restarts.
    certs = ensure_certs(certs_dir)
    # By name, not by address: aiohttp (under the streaming client) ignores cookies from a
    # server addressed by IP, and the Streaming API needs its session cookie after handshake.
    base = f"https://localhost:{port}"
    token_url = f"{base}/services/oauth2/token"
    component = Component(
        "salesforce-emulator",
        _emulator(
            context,
            "salesforce",
            port,
            "--certs-dir",
            str(certs_dir),
            "--pubsub-port",
            str(pubsub_port),
        ),
        ports=(port, pubsub_port),
        ready=jwt_grant_check(
            token_url,
            client_id=auth.DEFAULT_CLIENT_ID,
            username=auth.DEFAULT_USERNAME,
            key_file=certs.jwt_private_key,
            ca_file=certs.ca,
        ),
        url=base,
    )
    return Planned(
        component,
        {
            "salesforce": {
                "instance_url": base,
                "token_url": token_url,
                "auth_flow": "jwt",
                "client_id": auth.DEFAULT_CLIENT_ID,
                "username": auth.DEFAULT_USERNAME,
                "jwt_key_file": str(certs.jwt_private_key),
                # For trying the other flows by hand; the engine uses JWT bearer.
                "client_secret": auth.DEFAULT_CLIENT_SECRET,
                "password": auth.DEFAULT_PASSWORD,
                "ca_file": str(certs.ca),
                "api_version": SF_API_VERSION,
                # The Pub/Sub API (gRPC, TLS with the same CA; metadata auth, see README).
                "pubsub_address": f"127.0.0.1:{pubsub_port}",
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


def engine_component(
    context: DevContext,
    name: str,
    command: tuple[str, ...],
    *,
    env: Mapping[str, str] | None = None,
    ports: tuple[int, ...] = (),
    ready: Check | None = None,
    url: str | None = None,
    stop_grace: float = 10.0,
    serves_api: bool = False,
) -> Component:
    """An engine process (`fulfillment <command>`) with the engine environment of the stack.

    It runs in the state directory: settings read from a `.env` of the launcher's directory
    (perhaps made for a real sandbox) would mix with the stack's, as the shell's would.
    """
    return Component(
        name,
        context.fulfillment(*command),
        env={**context.engine_env(serves_api=serves_api), **(env or {})},
        cwd=context.dev_dir,
        ports=ports,
        ready=ready,
        url=url,
        stop_grace=stop_grace,
    )


def _unset(context: DevContext, names: tuple[str, ...]) -> list[str]:
    given = {name: value for name, value in context.engine_env().items() if value}
    return [
        env_name(name)
        for name in names
        if not given.get(env_name(name)) and not context.environ.get(env_name(name))
    ]


def _not_started(context: DevContext, name: str, missing: list[str]) -> None:
    context.say(
        f"{name}: not started: {', '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not set; with --no-emulators the {name} "
        "needs the upstreams' settings in the environment (or run one yourself: "
        f"set -a; . .dev/stack.env, then fulfillment {name})"
    )


# Dev default of WORKER_SHUTDOWN_GRACE_SECONDS: Ctrl-C should not wait half a minute for an
# activity to finish; one that is cut short is retried by Temporal when the stack comes back.
_DEV_WORKER_GRACE = "5"


def worker(context: DevContext) -> Planned | None:
    """`fulfillment worker` against the stack; ready once our child serves GET /metrics."""
    if not context.worker:
        return None
    if missing := _unset(context, WORKER):
        _not_started(context, "worker", missing)
        return None
    port = context.ports.worker_metrics
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    grace = context.environ.get("WORKER_SHUTDOWN_GRACE_SECONDS", _DEV_WORKER_GRACE)
    try:
        # Past its own grace the worker is killed: leave it that long, and a little more.
        stop_grace = float(grace) + 10.0
    except ValueError:
        stop_grace = 40.0  # the worker itself refuses the value, naming it
    component = engine_component(
        context,
        "worker",
        ("worker",),
        env={"WORKER_METRICS_PORT": str(port), "WORKER_SHUTDOWN_GRACE_SECONDS": grace},
        ports=(port,),
        ready=http_check(metrics_url, status=200),
        url=metrics_url,
        stop_grace=stop_grace,
    )
    return Planned(component, {"worker": {"metrics_url": metrics_url}})


# On SIGTERM the listener lets the events in hand finish for up to 10 s (their cursors move
# only once they are handled), then closes its Streaming API session and gives up its lease.
_LISTENER_STOP_GRACE = 20.0


def listener(context: DevContext) -> Planned | None:
    """`fulfillment listener`: Salesforce change events to fulfillments, by itself.

    Planned after the worker, so the first activation it sees finds a worker to take the
    workflow. Ready once our child serves GET /metrics: the listener opens that port before it
    connects anywhere, so "ready" means it runs, not that it is subscribed (it takes the lease,
    then subscribes from its cursors in Postgres, and nothing it receives is lost meanwhile).
    """
    if not context.listener:
        return None
    if missing := _unset(context, LISTENER):
        _not_started(context, "listener", missing)
        return None
    port = context.ports.listener_metrics
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    component = engine_component(
        context,
        "listener",
        ("listener",),
        env={
            "LISTENER_METRICS_PORT": str(port),
            # The dev org holds only demo data, no history to keep out: a listener that dies
            # before its first event (and so its first cursor) replays what it missed instead
            # of leaving it to reconciliation's next pass, as production's -1 would.
            "CDC_INITIAL_REPLAY": context.environ.get("CDC_INITIAL_REPLAY", "-2"),
            "CDC_TRANSPORT": context.cdc_transport,
        },
        ports=(port,),
        ready=http_check(metrics_url, status=200),
        url=metrics_url,
        stop_grace=_LISTENER_STOP_GRACE,
    )
    section = {"metrics_url": metrics_url, "cdc_transport": context.cdc_transport}
    return Planned(component, {"listener": section})


def api_codec_endpoint(ports: Ports) -> str:
    """Where the Temporal UI sends payloads to be decoded: the dev API's codec routes."""
    return f"http://127.0.0.1:{ports.api}/api/codec"


def api(context: DevContext) -> Planned | None:
    """`fulfillment api`: the portal's reads, the operators' actions, health, the UI's codec.

    Planned last: it serves what the others write (the read model, the listener's state), and it
    needs nothing of them to start. Ready once our child holds its port and GET /api/health
    answers 200 (liveness: Temporal is connected lazily, so readiness of the dependencies is
    /api/health/ready's business, not the launcher's).
    """
    if not context.api:
        return None
    port, ui_port = context.ports.api, context.ports.temporal_ui
    url = f"http://127.0.0.1:{port}"
    codec = api_codec_endpoint(context.ports)
    component = engine_component(
        context,
        "api",
        ("api",),
        env={
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            # The dev server's Web UI has no login, so it has no token to pass to the codec
            # (`codec.passAccessToken`): with auth on, every payload would show as an error.
            # The API listens on 127.0.0.1 only and the payload key is in .dev/ anyway, so an
            # open codec here discloses nothing the developer's machine does not already hold.
            # Production signs operators in (API_CODEC_AUTH=oidc, docs/deployment.md).
            "API_CODEC_AUTH": "none",
            # The interactive docs for the developer (production serves the schema only).
            "API_DOCS": "true",
            # The UI calls the codec from the browser, from its own origin, whichever port it
            # was given (--temporal-ui-port, --free-ports).
            "API_CODEC_CORS_ORIGINS": f"http://127.0.0.1:{ui_port},http://localhost:{ui_port}",
        },
        ports=(port,),
        ready=http_check(f"{url}/api/health", status=200),
        url=url,
        serves_api=True,
    )
    return Planned(
        component,
        {"api": {"url": url, "codec_url": codec}},
        shown=f"{url}  (docs {url}/api/docs; Temporal UI codec {codec}, no auth in dev)",
    )


COMPONENTS: list[ComponentFactory] = [
    salesforce_emulator,
    whmcs_emulator,
    freebit_emulator,
    worker,
    listener,
    api,
]
