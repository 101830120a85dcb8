"""The Salesforce emulator: `SalesforceEmulator` (state and control operations) and `create_app`.

    app = create_app(seed=1, state_file=".dev/salesforce.json", demo=True)
    serve(app, host=..., port=8701,
          ssl_certfile=app.state.ssl_certfile, ssl_keyfile=app.state.ssl_keyfile)

or simply `serve_tls(host=..., port=8701, **options)`. The app serves the OAuth token endpoint,
the REST API under `/services/data/`, the Streaming API under `/cometd/<version>` and the shared
control API under `/__emulator__/` (plus the event injection routes of `streaming.py`). With
`pubsub_port`, its lifespan also serves the Pub/Sub API (gRPC, `pubsub.py`) on
`127.0.0.1:<pubsub_port>` (0: a free port), over the same event bus and with the same TLS
certificate; `app.state.pubsub_address` is then `127.0.0.1:<port>` (known once the lifespan has
started when the port is 0). TLS
material comes from `certs_dir` (default `.dev/certs/`), created once; the JWT bearer grant is
verified with `jwt-public.pem` there unless credentials name another key.
"""

from __future__ import annotations

import dataclasses
import random
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from emulators.common.app import create_emulator_app
from emulators.common.emulator import Clock, Emulator, StateFile
from emulators.common.server import serve
from emulators.salesforce import demo, schema
from emulators.salesforce.auth import ORG_ID, USER_ID, Credentials, SessionStore, TokenEndpoint
from emulators.salesforce.errors import ApiError
from emulators.salesforce.events import EventBus
from emulators.salesforce.ids import IdFactory, key_prefix, normalize
from emulators.salesforce.pubsub import SETTING_NAMES as PUBSUB_SETTINGS
from emulators.salesforce.pubsub import PubSubService, PubSubSettings
from emulators.salesforce.rest import RestApi
from emulators.salesforce.schema import SObject
from emulators.salesforce.store import Store, Transaction
from emulators.salesforce.streaming import StreamingServer, control_extra_routes
from emulators.salesforce.tls import DEFAULT_CERTS_DIR, ensure_certs

DEFAULT_PORT = 8701
DEFAULT_PUBSUB_PORT = 8704
PUBSUB_HOST = "127.0.0.1"
_REFERENCE_RE = re.compile(r"^@\{([A-Za-z0-9_]+)\}$")
_SETTINGS = ("client_id", "client_secret", "username", "password", "jwt_public_key")


class SalesforceEmulator(Emulator):
    """One emulated org: records, sessions, the event bus and the two servers over it (Streaming
    API and Pub/Sub API)."""

    name = "salesforce"

    def __init__(
        self,
        *,
        seed: int | None = None,
        clock: Clock = time.time,
        credentials: Credentials | None = None,
        event_retention_seconds: float = 72 * 3600,
        max_events: int = 10_000,
        connect_timeout_ms: int = 110_000,
    ) -> None:
        super().__init__(seed=seed, clock=clock)
        self.credentials = credentials or Credentials()
        self._initial_credentials = self.credentials
        self.seed_value = seed
        self.sessions = SessionStore(clock)
        self.bus = EventBus(
            retention_seconds=event_retention_seconds,
            max_events=max_events,
            clock=clock,
            rng=random.Random(seed),
        )
        self.streaming = StreamingServer(
            self.bus, self.sessions.is_valid, connect_timeout_ms=connect_timeout_ms
        )
        self.pubsub = PubSubService(
            bus=self.bus,
            sessions=self.sessions,
            faults=self.faults,
            requests=self.requests,
            tenant_id=ORG_ID,
            on_change=self.changed,
        )
        self.ids = IdFactory(seed)
        self.store = Store(self.ids, clock)
        self.store.insert_standard_pricebook(USER_ID)
        self.rest = RestApi(self.store, self.bus, self.sessions, self.ids.new, clock)
        self.tokens = TokenEndpoint(lambda: self.credentials, self.sessions, clock)

    # ---- Emulator --------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "seed": self.seed_value,
            "ids": self.ids.to_state(),
            "store": self.store.to_state(),
            "sessions": self.sessions.to_state(),
            "events": self.bus.to_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.seed_value = state.get("seed")
        self.ids.load_state(state["ids"])
        self.store.load_state(state["store"])
        self.sessions.load_state(state.get("sessions", []))
        self.bus.load_state(state["events"])
        self.rest.reset()

    def reset(self, seed: int | None = None) -> None:
        """Empty org (but for the standard price book) and no events; sessions stay valid."""
        self.seed_value = seed
        self.ids.reset(seed)
        self.store.clear()
        self.store.insert_standard_pricebook(USER_ID)
        self.bus.reset(seed)
        self.rest.reset()
        self.credentials = self._initial_credentials
        self.pubsub.configure(PubSubSettings())

    def seed(self, payload: dict[str, Any]) -> dict[str, Any]:
        """`{"dataset": "demo"}`, or `{"records": [...], "updates": [...]}` (either or both)."""
        if payload.get("dataset") == "demo":
            return demo.seed_demo(self.store)
        records, updates = payload.get("records", []), payload.get("updates", [])
        if ("records" in payload or "updates" in payload) and (
            isinstance(records, list) and isinstance(updates, list)
        ):
            return self._seed_load(records, updates)
        raise ValueError(
            'expected {"dataset": "demo"} or {"records": [...], "updates": [...]} '
            "(records, updates or both)"
        )

    def is_empty(self) -> bool:
        return self.store.is_empty()

    def expire_tokens(self) -> int:
        """Every token goes; open Pub/Sub streams end with UNAUTHENTICATED."""
        expired = self.sessions.expire_all()
        self.pubsub.tokens_expired()
        return expired

    def drop_sessions(self) -> int:
        """End every CometD session and every Pub/Sub stream; how many in all."""
        return self.streaming.drop_sessions() + self.pubsub.drop_sessions()

    def settings(self) -> dict[str, Any]:
        return {
            **self.credentials.to_dict(),
            "session_timeout_seconds": self.sessions.timeout_seconds,
            **self.pubsub.settings.to_dict(),
        }

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        unknown = set(changes) - {*_SETTINGS, "session_timeout_seconds", *PUBSUB_SETTINGS}
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        pubsub = self.pubsub.settings.changed(
            {k: v for k, v in changes.items() if k in PUBSUB_SETTINGS}
        )
        self.pubsub.configure(pubsub)
        if "session_timeout_seconds" in changes:
            self.sessions.timeout_seconds = float(changes["session_timeout_seconds"])
        updates = {k: v for k, v in changes.items() if k in _SETTINGS}
        self.credentials = dataclasses.replace(self.credentials, **updates)
        return self.settings()

    # ---- seeding ---------------------------------------------------------------------------

    def _seed_load(self, records: list[Any], updates: list[Any]) -> dict[str, Any]:
        """Create `records`, then change existing records as `updates` say, in one data load.

        A record is `{"attributes": {"type", "referenceId"}, field: value}`, an update
        `{"attributes": {"type"}, "id": id, field: value}`; a value `@{ref}` is replaced by the
        id of the earlier record with that referenceId. Both may write the audit fields a data
        load may (CreatedDate, LastModifiedDate, an order's ActivatedDate) and activate orders.
        All or nothing; seeding publishes no change events (it arranges, it is not a user).
        """
        tx = Transaction(USER_ID, data_load=True)
        made: dict[str, str] = {}
        created: list[str] = []
        updated: list[str] = []
        try:
            for index, entry in enumerate(records):
                with _naming(f"records[{index}]"):
                    created.append(self._seed_create(tx, entry, made))
            for index, entry in enumerate(updates):
                with _naming(f"updates[{index}]"):
                    updated.append(self._seed_update(tx, entry, made))
        except ValueError:
            self.store.rollback(tx)
            raise
        return {"ids": made, "created": created, "updated": updated}

    def _seed_create(self, tx: Transaction, entry: Any, made: dict[str, str]) -> str:
        sobject, attributes = _seed_type(entry)
        record = self.store.create(tx, sobject, _seed_values(entry, made))
        if attributes.get("referenceId"):
            made[str(attributes["referenceId"])] = record["Id"]
        return str(record["Id"])

    def _seed_update(self, tx: Transaction, entry: Any, made: dict[str, str]) -> str:
        sobject, _ = _seed_type(entry)
        values = _seed_values(entry, made)
        raw_id = values.pop("id", None) or values.pop("Id", None)
        record_id = normalize(raw_id) if isinstance(raw_id, str) else None
        if record_id is None:
            raise ValueError(f"an update needs the 'id' of a record, not {raw_id!r}")
        # Checked here too: the store's NOT_FOUND would not say which id.
        if key_prefix(record_id) != sobject.key_prefix or self.store.get(record_id) is None:
            raise ValueError(f"no {sobject.name} with id {record_id}")
        self.store.update(tx, sobject, record_id, values)
        return record_id


@contextmanager
def _naming(where: str) -> Iterator[None]:
    """Turn the refusal of one seed entry into the control API's 400, naming the entry."""
    try:
        yield
    except ApiError as exc:
        raise ValueError(f"{where}: {exc.error_code}: {exc.message}") from exc
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _seed_type(entry: Any) -> tuple[SObject, dict[str, Any]]:
    """The object a seed entry names in its attributes, and those attributes."""
    attributes = entry.get("attributes", {}) if isinstance(entry, dict) else None
    if not isinstance(attributes, dict):
        raise ValueError("each entry needs an 'attributes' object with a 'type'")
    sobject = schema.get_object(str(attributes.get("type", "")))
    if sobject is None or sobject.platform_event:
        raise ValueError(f"unknown object type {attributes.get('type')!r}")
    return sobject, attributes


def _seed_values(entry: dict[str, Any], made: dict[str, str]) -> dict[str, Any]:
    """A seed entry's values (all but its attributes), references resolved."""
    return {key: _dereference(value, made) for key, value in entry.items() if key != "attributes"}


def _dereference(value: Any, made: dict[str, str]) -> Any:
    if isinstance(value, str) and (match := _REFERENCE_RE.match(value)):
        if match.group(1) not in made:
            raise ValueError(f"unknown reference {value}")
        return made[match.group(1)]
    return value


def create_app(
    *,
    seed: int | None = None,
    state_file: str | Path | None = None,
    demo: bool = False,
    settings: dict[str, Any] | None = None,
    credentials: Credentials | None = None,
    certs_dir: str | Path | None = None,
    event_retention_seconds: float = 72 * 3600,
    max_events: int = 10_000,
    connect_timeout_ms: int = 110_000,
    clock: Clock = time.time,
    pubsub_port: int | None = None,
) -> Starlette:
    """The emulator app; `app.state.emulator` is the `SalesforceEmulator`, and
    `app.state.ssl_certfile` / `ssl_keyfile` / `ca_file` are the TLS files to serve and trust.
    With `pubsub_port`, the app's lifespan serves the Pub/Sub API there too (see the module)."""
    certs = ensure_certs(certs_dir if certs_dir is not None else DEFAULT_CERTS_DIR)
    credentials = credentials or Credentials()
    if credentials.jwt_public_key is None:
        credentials = dataclasses.replace(
            credentials, jwt_public_key=certs.jwt_public_key.read_text(encoding="utf-8")
        )
    emulator = SalesforceEmulator(
        seed=seed,
        clock=clock,
        credentials=credentials,
        event_retention_seconds=event_retention_seconds,
        max_events=max_events,
        connect_timeout_ms=connect_timeout_ms,
    )
    if settings:
        emulator.configure(settings)
    routes = [
        *emulator.tokens.routes,
        *emulator.rest.routes,
        *emulator.streaming.routes,
        *emulator.pubsub.routes,
        *control_extra_routes(emulator.bus),
    ]
    app = create_emulator_app(
        emulator,
        routes,
        state_file=StateFile(state_file) if state_file is not None else None,
        demo=demo,
    )
    app.state.ssl_certfile = str(certs.server_cert)
    app.state.ssl_keyfile = str(certs.server_key)
    app.state.ca_file = str(certs.ca)
    app.state.jwt_private_key_file = str(certs.jwt_private_key)
    app.state.pubsub_address = None
    if pubsub_port is not None:
        _serve_pubsub(app, emulator, pubsub_port)
    return app


def _serve_pubsub(app: Starlette, emulator: SalesforceEmulator, port: int) -> None:
    """Run the Pub/Sub API's server inside the app's lifespan (on uvicorn's loop), around the
    lifespan the app shell already has."""
    app.state.pubsub_address = f"{PUBSUB_HOST}:{port}"
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(served: Starlette) -> AsyncIterator[Any]:
        async with inner(served) as state:
            bound = await emulator.pubsub.start(
                PUBSUB_HOST,
                port,
                certfile=app.state.ssl_certfile,
                keyfile=app.state.ssl_keyfile,
            )
            app.state.pubsub_address = f"{PUBSUB_HOST}:{bound}"
            try:
                yield state
            finally:
                await emulator.pubsub.stop()

    app.router.lifespan_context = lifespan


def serve_tls(*, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **options: Any) -> None:
    """`fulfillment emulate salesforce`: serve `create_app(**options)` over TLS until stopped."""
    app = create_app(**options)
    serve(
        app,
        host=host,
        port=port,
        ssl_certfile=app.state.ssl_certfile,
        ssl_keyfile=app.state.ssl_keyfile,
    )
