"""The one `Settings` model: every setting of docs/design.md, read once from the environment.

Each process loads it with `load_settings(require=...)`, naming the settings it cannot run
without; a missing or malformed setting raises `SettingsError` whose message is one line naming
the setting, so a process stops at start instead of failing on first use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    AwareDatetime,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.payload_keys import parse_payload_keys
from config.redaction import redact_url, url_passwords
from domain.reconciliation import ActivationWindow

_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
_API_VERSION = re.compile(r"^\d{2,3}\.\d$")
_CLAIM = re.compile(r"[A-Za-z0-9_:./-]+=[^=\s][^\s]*")
_SERVER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?$")


_URL_FIELDS = frozenset({"database_url", "redis_url"})

# How the listener receives change events (docs/design.md, "Transports for change events").
CdcTransport = Literal["cometd", "pubsub"]


class SettingsError(Exception):
    """A setting is missing or malformed; `str()` is one line that names it."""


def _read_text_file(path: Path) -> str:
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        # A mounted secret the process's user may not read is the usual cause.
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read {path}: {reason}") from None


def _read_payload_keys_file(path: Path) -> str:
    """The keys of `TEMPORAL_PAYLOAD_KEYS_FILE` in `TEMPORAL_PAYLOAD_KEYS`'s form.

    One key per line is how a secret store writes a list, and a file ends in a newline.
    """
    lines = _read_text_file(path).splitlines()
    return ",".join(line.strip() for line in lines if line.strip())


def _needs_temporal_tls(info: ValidationInfo) -> None:
    # Without TLS the setting would be ignored, and an API key would travel in clear text.
    if info.data.get("temporal_tls") is not True:
        raise ValueError("needs TEMPORAL_TLS=true")


def _check_url(value: str | None, schemes: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
    if parts.scheme not in ("unix", "redis+unix") and not parts.netloc:
        raise ValueError("the URL has no host")
    return value


class Settings(BaseSettings):
    """Configuration of every engine process. Field `foo_bar` is environment variable `FOO_BAR`."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        case_sensitive=False,
        # A ValidationError would otherwise quote the raw value, keys and passwords included.
        hide_input_in_errors=True,
    )

    # Temporal
    # The Temporal frontend, host:port.
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "order-fulfillment"
    # A file holding the payload codec's keys (a mounted secret such as /run/secrets/…), read
    # once at start: `id:base64` pairs separated by commas or newlines. Set this or
    # TEMPORAL_PAYLOAD_KEYS, not both.
    temporal_payload_keys_file: Path | None = None
    # The payload codec's keys, `id:base64` pairs, the first one encrypts (config/payload_keys.py).
    temporal_payload_keys: SecretStr | None = Field(default=None, validate_default=True)
    # TLS to the Temporal frontend: on for a cluster that serves TLS and for Temporal Cloud.
    # Every other TEMPORAL_TLS_* setting and TEMPORAL_API_KEY need it on.
    temporal_tls: bool = False
    # The CA (PEM) that signed the frontend's certificate; unset, the system's roots are used.
    temporal_tls_ca_file: Path | None = None
    # The client certificate (PEM) for mutual TLS, as a cluster with mTLS or Temporal Cloud's
    # certificate authentication asks; set together with TEMPORAL_TLS_KEY_FILE.
    temporal_tls_cert_file: Path | None = None
    # The client certificate's private key (PEM), set together with TEMPORAL_TLS_CERT_FILE.
    temporal_tls_key_file: Path | None = Field(default=None, validate_default=True)
    # The name the frontend's certificate must carry, sent as SNI, when it is not the host of
    # TEMPORAL_ADDRESS (a load balancer's address, an IP).
    temporal_tls_server_name: str | None = None
    # A Temporal Cloud API key, sent as a bearer token with every call (so only over TLS).
    temporal_api_key: SecretStr | None = None
    # How often the reconciliation schedule looks for activated orders that have no fulfillment
    # (events lost past Salesforce's retention, a listener down for days), and how many orders
    # it reads per Salesforce query (one reply holds up to 2000).
    reconciliation_interval_seconds: int = Field(default=600, ge=10)
    reconciliation_batch_size: int = Field(default=200, ge=1, le=2000)
    # Reconciliation starts only orders activated (Order.ActivatedDate) at least this long ago,
    # so it never races the listener for an activation whose event is on its way.
    reconciliation_min_age_seconds: int = Field(default=120, ge=0)
    # Reconciliation starts only orders activated within this many hours: an org has years of
    # activated orders the engine never saw, and an older lost activation is an operator's call.
    reconciliation_lookback_hours: int = Field(default=168, ge=1)
    # When the engine took over fulfillment (ISO 8601 with a zone, e.g. 2026-12-01T09:00:00+09:00):
    # an order activated before it is never started, by reconciliation or by a replayed event.
    # Unset: no cutover (the lookback alone bounds reconciliation).
    fulfillment_cutover_at: AwareDatetime | None = None

    # Storage
    # Postgres, `postgresql://…` (a unix-socket form `?host=/dir` works). Plain strings, because
    # the clients connect with them as they are; their passwords are hidden from repr and dumps
    # below and handed to the log redactor by secrets().
    database_url: str | None = None
    # Redis, `redis://…`, `rediss://…` or `unix://…`.
    redis_url: str | None = None
    # Prefix of every portal cache key.
    cache_key_prefix: str = "portal:"
    services_cache_safety_ttl_seconds: int = Field(default=43200, gt=0)

    # Salesforce
    sf_token_url: str | None = None
    sf_instance_url: str | None = None
    # JWT bearer is the default: Salesforce is retiring the username-password flow and blocks it
    # by default in orgs created since Summer '23, so `password` is an explicit opt-in.
    sf_auth_flow: Literal["password", "client_credentials", "jwt"] = "jwt"
    sf_client_id: str | None = None
    sf_client_secret: SecretStr | None = None
    sf_username: str | None = None
    sf_password: SecretStr | None = None
    # The connected app's signing key: a PEM file, or the PEM itself (e.g. from a secret store).
    sf_jwt_key_file: Path | None = None
    sf_jwt_private_key: SecretStr | None = None
    sf_api_version: str = "60.0"
    sf_ca_file: Path | None = None
    sf_trigger_status: str = "Activated"
    # Sent as `Sforce-Call-Options: client=…` on every write, so change events can name us.
    sf_client_name: str = Field(default="order-fulfillment", pattern=r"^[A-Za-z0-9_.\-]{1,40}$")
    # One overall deadline per REST call, token refresh and repeat included.
    sf_request_timeout_seconds: float = Field(default=30.0, gt=0)
    # How long a status write we gave up on may still land (a slow trigger or flow in the org):
    # a repeated write-back waits this long from when it was scheduled before it writes, so an
    # older status can never land after a newer one. At most 240: the write-back activity's
    # start-to-close (5 min) must cover the wait and the write.
    sf_settle_seconds: float = Field(default=120.0, ge=0, le=240)
    # Threads for the blocking REST library; unset = the worker's activity concurrency, so no
    # activity waits for a thread while holding its slot.
    sf_pool_size: int | None = Field(default=None, ge=1, le=256)

    # WHMCS
    whmcs_api_url: str | None = None
    whmcs_identifier: str | None = None
    whmcs_secret: SecretStr | None = None
    whmcs_access_key: SecretStr | None = None
    whmcs_webhook_secret: SecretStr | None = None
    # A webhook signed further than this from our clock is refused: it bounds how long a captured
    # request can be replayed (a replay only invalidates caches again, but stays refused).
    whmcs_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    # AddOrder's `paymentmethod` when the client's pay method names no gateway.
    whmcs_default_gateway: str = "banktransfer"
    # The read timeout of one WHMCS call (connect: 5 s).
    whmcs_timeout_seconds: float = Field(default=30.0, gt=0)
    # How long an AddOrder may still commit after it was sent: WHMCS runs module hooks inside
    # the request and PHP keeps going after we hang up, up to its execution limit. A lookup
    # that misses inside this window waits and looks again instead of sending a second
    # AddOrder. Must exceed max_execution_time of the WHMCS PHP (commonly 30-120 s).
    whmcs_settle_seconds: float = Field(default=120.0, ge=0)

    # Freebit
    freebit_base_url: str | None = None
    freebit_oem_id: str | None = None
    freebit_oem_key: SecretStr | None = None
    # The read timeout of one Freebit call (connect: 5 s). A registration that commits after we
    # gave up needs no window of its own: Freebit refuses a second one for the same number.
    freebit_timeout_seconds: float = Field(default=30.0, gt=0)

    # HTTP API and metrics
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # The Temporal UI's codec endpoint. Who may decode and encode: "oidc", an operator signed in
    # to the UI with the identity provider below (the UI passes their access token); "token",
    # the ops token (the CLI's codec use); "none", anyone who reaches it (the local dev stack
    # only, logged as a warning at start). Unset: "token", or what the deprecated
    # API_CODEC_REQUIRE_AUTH says.
    api_codec_auth: Literal["oidc", "token", "none"] | None = None
    # Deprecated (use API_CODEC_AUTH): true is "token", false is "none".
    api_codec_require_auth: bool = True
    # For "oidc": the access token's issuer (`iss`) and audience (`aud`), the provider's key set
    # (JWKS), and optionally a claim the token must carry, `name=value` (a string claim equal to
    # it, or a list claim holding it: `groups=fulfillment-ops`).
    api_codec_oidc_issuer: str | None = None
    api_codec_oidc_audience: str | None = None
    api_codec_oidc_jwks_url: str | None = None
    api_codec_required_claim: str | None = None
    # The Temporal UI's origins, allowed to call the codec from the browser (CORS).
    api_codec_cors_origins: str = "http://127.0.0.1:8233,http://localhost:8233"
    # Whether those origins may send credentials (cookies): set it when the UI's
    # `codec.includeCredentials` is on; the access token travels in a header and needs none.
    api_codec_cors_credentials: bool = False
    # Serve the interactive API docs at /api/docs (Swagger UI, whose script comes from a CDN):
    # for the dev stack; the schema is always at /api/openapi.json.
    api_docs: bool = False
    # Addresses whose X-Forwarded-For is believed (a load balancer); "*" trusts any.
    api_trusted_proxies: str = "127.0.0.1"
    # The bearer tokens of each scope: the portal's reads, the operators' actions. Each takes a
    # comma-separated list, so a token is rotated without an outage (add the new one, move the
    # callers, drop the old one); no token may be in both lists.
    api_service_token: SecretStr | None = None
    api_ops_token: SecretStr | None = None
    # The public catalog: the price book it shows (the demo's and the portal's is "Portal"), how
    # long browsers and shared caches may reuse it (no CDN purge exists, so this is the staleness
    # a price change may show there; the portal overview's 60 s "volatile" TTL), and how many
    # requests one client address may make per minute (a burst of as many, refilled evenly).
    catalog_pricebook_name: str = Field(default="Portal", min_length=1, max_length=255)
    catalog_max_age_seconds: int = Field(default=60, ge=0, le=86400)
    catalog_rate_limit_per_minute: int = Field(default=60, ge=1, le=100_000)
    worker_metrics_port: int = Field(default=9101, ge=0, le=65535)
    worker_max_concurrent_activities: int = Field(default=20, ge=1, le=1000)
    # On SIGTERM, running activities get this long to finish before the worker stops.
    worker_shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # Run workflow code in the SDK's sandbox. Off by default: it re-imports the workflow module
    # per run and compiles code per activation and per payload, ~25 ms of CPU per order
    # (bench/README.md); the workflow and replay tests run sandboxed, which is where it catches
    # a non-deterministic call. Turn it on to trade that CPU for the check at run time too.
    worker_workflow_sandbox: bool = False
    # Worker Versioning (docs/workflow-changes.md): with a deployment name, each worker declares
    # its Worker Deployment and build id, and a new build takes work only once it is made
    # current (`temporal worker deployment set-current-version`). Unset: unversioned workers.
    worker_deployment_name: str | None = None
    # The build id this worker declares; default: the package version and, where the source is
    # a git checkout, its commit (the image sets it from its build).
    worker_build_id: str | None = None
    listener_metrics_port: int = Field(default=9102, ge=0, le=65535)

    # CDC listener
    # `cometd`: the Streaming API (Bayeux long polling). `pubsub`: the Pub/Sub API over gRPC,
    # which Salesforce recommends (flow control; keepalives carry the latest replay id, so a
    # quiet channel's cursor never goes stale). Replay ids do not carry over between the two.
    cdc_transport: CdcTransport = "cometd"
    # The org's Pub/Sub API endpoint (host:port, TLS; SF_CA_FILE adds a private CA).
    sf_pubsub_endpoint: str = "api.pubsub.salesforce.com:7443"
    # Events the Pub/Sub listener asks for at a time per channel (Salesforce allows 100).
    cdc_pubsub_batch: int = Field(default=100, ge=1, le=100)
    cdc_channels: str = (
        "/data/OrderChangeEvent,/data/OrderItemChangeEvent,/data/Product2ChangeEvent,"
        "/data/PricebookEntryChangeEvent,/event/Account_Eligibility_Update__e"
    )
    # Events handled at once; the stream waits while this many are in hand.
    cdc_concurrency: int = Field(default=32, ge=1, le=1000)
    # A session that heard nothing for this long is restarted: CometD answers an idle long
    # poll within 110 s, and the Pub/Sub API sends a keepalive at least every 270 s.
    cdc_watchdog_seconds: float = Field(default=300.0, gt=0)
    cdc_reconnect_max_seconds: float = Field(default=60.0, gt=0)
    # How often a standby replica tries to take the lease.
    cdc_lease_poll_seconds: float = Field(default=5.0, gt=0)
    # How often the connected listener refreshes its status row (GET /api/health/cdc counts a
    # row older than 120 s as a replica gone), however quiet the channels are.
    cdc_status_heartbeat_seconds: float = Field(default=30.0, gt=0, lt=120)
    # Where a channel with no stored cursor starts: -1, new events only (a first start against
    # an org with history must not replay its last 72 hours), or -2, every retained event
    # (tests and benchmarks that replay what they published before the listener started).
    cdc_initial_replay: int = -1

    # Logging: "auto" is readable on a terminal and JSON everywhere else.
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("temporal_address", "sf_pubsub_endpoint")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if not _HOST_PORT.match(value):
            raise ValueError("expected host:port, e.g. 127.0.0.1:7233")
        return value

    @field_validator("temporal_payload_keys_file")
    @classmethod
    def _payload_keys_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            parse_payload_keys(_read_payload_keys_file(value))
        return value

    @field_validator("temporal_payload_keys")
    @classmethod
    def _payload_keys(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            value = None  # empty counts as unset, as everywhere else (`_is_missing`)
        key_file = info.data.get("temporal_payload_keys_file")
        if key_file is not None:
            # Two sources would leave one of them silently unused: which one is the operator's?
            if value is not None:
                raise ValueError("set it or TEMPORAL_PAYLOAD_KEYS_FILE, not both")
            # Held here like keys given inline, so the codec and the log redactor see them.
            return SecretStr(_read_payload_keys_file(key_file))
        if value is not None:
            parse_payload_keys(value.get_secret_value())
        return value

    @field_validator("temporal_tls_ca_file", "temporal_tls_cert_file", "temporal_tls_key_file")
    @classmethod
    def _temporal_tls_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return value
        _needs_temporal_tls(info)
        is_key = info.field_name == "temporal_tls_key_file"
        # Checked here, not at the first connect: a wrong or unreadable file then stops the
        # process at start with its name instead of a TLS handshake error later.
        text = _read_text_file(value)
        if is_key and not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
            raise ValueError(f"{value} holds no PEM private key")
        if not is_key and "-----BEGIN CERTIFICATE-----" not in text:
            raise ValueError(f"{value} holds no PEM certificate")
        if is_key and info.data.get("temporal_tls_cert_file") is None:
            raise ValueError("a client key needs its certificate in TEMPORAL_TLS_CERT_FILE")
        return value

    @field_validator("temporal_tls_key_file")
    @classmethod
    def _client_certificate_has_its_key(
        cls, value: Path | None, info: ValidationInfo
    ) -> Path | None:
        if value is None and info.data.get("temporal_tls_cert_file") is not None:
            raise ValueError("must be set: TEMPORAL_TLS_CERT_FILE is a client certificate")
        return value

    @field_validator("temporal_tls_server_name")
    @classmethod
    def _temporal_tls_server_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        _needs_temporal_tls(info)
        if not _SERVER_NAME.match(value):
            raise ValueError("expected a host name, e.g. temporal.example.com")
        return value

    @field_validator("temporal_api_key")
    @classmethod
    def _temporal_api_key(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        _needs_temporal_tls(info)
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            # libpq's socket form, `postgresql:///db?host=/run/postgresql`, has its host in the
            # query; asyncpg accepts it.
            socket = not parts.netloc and parse_qs(parts.query).get("host")
            if parts.scheme in ("postgres", "postgresql") and socket:
                return value
        return _check_url(value, ("postgres", "postgresql"))

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return _check_url(value, ("redis", "rediss", "unix"))

    @field_validator("sf_token_url", "sf_instance_url")
    @classmethod
    def _https_url(cls, value: str | None) -> str | None:
        # Salesforce speaks only TLS; simple-salesforce builds https:// URLs itself.
        return _check_url(value, ("https",))

    @field_validator("whmcs_api_url", "freebit_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _check_url(value, ("http", "https"))

    @field_validator("whmcs_settle_seconds")
    @classmethod
    def _settle_outlasts_the_timeout(cls, value: float, info: ValidationInfo) -> float:
        timeout = info.data.get("whmcs_timeout_seconds")
        if timeout is not None and value <= timeout:
            raise ValueError(
                f"must exceed WHMCS_TIMEOUT_SECONDS ({timeout:g}): a write we gave up on may "
                "still commit for as long as WHMCS lets PHP run"
            )
        return value

    @field_validator("worker_deployment_name", "worker_build_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("cdc_initial_replay")
    @classmethod
    def _replay_preset(cls, value: int) -> int:
        if value not in (-1, -2):
            raise ValueError("must be -1 (new events only) or -2 (every retained event)")
        return value

    @field_validator(
        "api_codec_auth",
        "api_codec_oidc_issuer",
        "api_codec_oidc_audience",
        "api_codec_oidc_jwks_url",
        "api_codec_required_claim",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes `${OIDC_ISSUER:-}` through as an empty string when it is not given.
        return None if value == "" else value

    @field_validator("api_codec_oidc_jwks_url", "api_codec_oidc_issuer")
    @classmethod
    def _oidc_url(cls, value: str | None) -> str | None:
        return _check_url(value, ("https", "http"))

    @field_validator("api_codec_required_claim")
    @classmethod
    def _claim(cls, value: str | None) -> str | None:
        if value is not None and not _CLAIM.fullmatch(value):
            raise ValueError("must be name=value, e.g. groups=fulfillment-ops")
        return value

    @property
    def codec_auth(self) -> Literal["oidc", "token", "none"]:
        """Who may use the codec (API_CODEC_AUTH, else the deprecated API_CODEC_REQUIRE_AUTH)."""
        if self.api_codec_auth is not None:
            return self.api_codec_auth
        return "token" if self.api_codec_require_auth else "none"

    @property
    def codec_required_claim(self) -> tuple[str, str] | None:
        if self.api_codec_required_claim is None:
            return None
        name, _, value = self.api_codec_required_claim.partition("=")
        return name, value

    @field_validator("sf_api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        if not _API_VERSION.match(value):
            raise ValueError("expected a version such as 60.0")
        return value

    @field_validator("sf_ca_file", "sf_jwt_key_file")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_serializer("database_url", "redis_url")
    def _dump_url_without_password(self, value: str | None) -> str | None:
        return None if value is None else redact_url(value)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # repr() and str() of the settings end up in tracebacks and debug output.
        for name, value in super().__repr_args__():
            if name in _URL_FIELDS and isinstance(value, str):
                value = redact_url(value)
            yield name, value

    def activation_window(self, now: datetime) -> ActivationWindow:
        """The activations a reconciliation at `now` may start, as these settings bound them."""
        return ActivationWindow.at(
            now,
            min_age=timedelta(seconds=self.reconciliation_min_age_seconds),
            lookback=timedelta(hours=self.reconciliation_lookback_hours),
            cutover=self.fulfillment_cutover_at,
        )

    @property
    def cdc_channel_list(self) -> list[str]:
        return [channel.strip() for channel in self.cdc_channels.split(",") if channel.strip()]

    @property
    def sf_rest_pool_size(self) -> int:
        return self.sf_pool_size or self.worker_max_concurrent_activities

    @property
    def api_service_tokens(self) -> tuple[str, ...]:
        return _token_list(self.api_service_token)

    @property
    def api_ops_tokens(self) -> tuple[str, ...]:
        return _token_list(self.api_ops_token)

    def secrets(self) -> list[str]:
        """The secret values in force, so that logging can redact them wherever they appear."""
        values: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        # A token of a list appears in a log on its own (an Authorization header).
        values += [*self.api_service_tokens, *self.api_ops_tokens]
        values += url_passwords(self.database_url) + url_passwords(self.redis_url)
        return values


# What each process cannot start without; `load_settings(require=WORKER)` and so on.
TEMPORAL = ("temporal_address", "temporal_namespace", "temporal_task_queue")
SALESFORCE = ("sf_token_url", "sf_client_id")
WHMCS = ("whmcs_api_url", "whmcs_identifier", "whmcs_secret")
FREEBIT = ("freebit_base_url", "freebit_oem_id", "freebit_oem_key")
WORKER = (*TEMPORAL, "database_url", "redis_url", *SALESFORCE, *WHMCS, *FREEBIT)
LISTENER = (*TEMPORAL, "database_url", "redis_url", *SALESFORCE)
API = (*TEMPORAL, "database_url", "redis_url", "api_service_token", "api_ops_token")
MIGRATE = ("database_url",)


def env_name(field: str) -> str:
    return field.upper()


def as_environment(settings: Settings) -> dict[str, str]:
    """The set fields as the environment variables that load them again, secrets in clear: for
    starting a `fulfillment` process with these settings (tests, benchmarks)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        raw = getattr(settings, name)
        if raw is None:
            continue
        if isinstance(raw, SecretStr):
            env[env_name(name)] = raw.get_secret_value()
        elif name in ("database_url", "redis_url"):
            env[env_name(name)] = str(raw)
        else:
            env[env_name(name)] = str(value)
    return env


def _token_list(value: SecretStr | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(token.strip() for token in value.get_secret_value().split(",") if token.strip())


# Where mounted secrets are read from, one file per setting named after it (`api_ops_token`
# or `API_OPS_TOKEN`): a Kubernetes or Compose secret mounted as a directory. A variable set in
# the environment wins over a file.
SECRETS_DIR_VARIABLE = "SETTINGS_SECRETS_DIR"


def load_settings(*, require: Iterable[str] = (), **overrides: object) -> Settings:
    """Read the settings and check that every field named in `require` has a value.

    `overrides` take precedence over the environment (used by tests and the dev launcher), the
    environment over the files of `SETTINGS_SECRETS_DIR`.
    """
    secrets_dir = os.environ.get(SECRETS_DIR_VARIABLE) or None
    if secrets_dir is not None and not Path(secrets_dir).is_dir():
        raise SettingsError(
            f"configuration error: {SECRETS_DIR_VARIABLE} {secrets_dir} is not a directory"
        )
    try:
        settings = Settings(_secrets_dir=secrets_dir, **overrides)  # type: ignore[arg-type,call-arg]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        reason = str(error["msg"]).removeprefix("Value error, ")
        raise SettingsError(
            f"configuration error: {env_name(field)} is malformed: {reason}"
        ) from None
    missing = [name for name in require if _is_missing(getattr(settings, name))]
    if missing:
        names = ", ".join(env_name(name) for name in missing)
        raise SettingsError(f"configuration error: {names} must be set (see README, Settings)")
    if "sf_token_url" in require:
        _check_salesforce_flow(settings)
    if "api_ops_token" in require:
        _check_api_tokens(settings)
        _check_codec_auth(settings)
    return settings


_OIDC = ("api_codec_oidc_issuer", "api_codec_oidc_audience", "api_codec_oidc_jwks_url")


def _check_codec_auth(settings: Settings) -> None:
    if settings.codec_auth == "oidc":
        missing = [name for name in _OIDC if _is_missing(getattr(settings, name))]
        if missing:
            names = ", ".join(env_name(name) for name in missing)
            raise SettingsError(f"configuration error: API_CODEC_AUTH=oidc needs {names}")


# A bearer token an attacker may try to guess online: at least 32 characters (e.g.
# `openssl rand -hex 24`).
MIN_TOKEN_LENGTH = 32


def _check_api_tokens(settings: Settings) -> None:
    tokens = {
        "api_service_token": settings.api_service_tokens,
        "api_ops_token": settings.api_ops_tokens,
    }
    for name, listed in tokens.items():
        if any(len(token) < MIN_TOKEN_LENGTH for token in listed):
            raise SettingsError(
                f"configuration error: {env_name(name)} is too short: at least "
                f"{MIN_TOKEN_LENGTH} characters each (e.g. `openssl rand -hex 24`)"
            )
    if set(settings.api_service_tokens) & set(settings.api_ops_tokens):
        raise SettingsError(
            "configuration error: API_SERVICE_TOKEN and API_OPS_TOKEN share a token: the portal's"
            " token would also allow operator actions; give each scope its own"
        )


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, SecretStr):
        return not value.get_secret_value()
    return isinstance(value, str) and not value.strip()


def _check_salesforce_flow(settings: Settings) -> None:
    needed = {
        "password": ("sf_client_id", "sf_client_secret", "sf_username", "sf_password"),
        "client_credentials": ("sf_client_id", "sf_client_secret"),
        "jwt": ("sf_client_id", "sf_username"),
    }[settings.sf_auth_flow]
    missing = [name for name in needed if _is_missing(getattr(settings, name))]
    if (
        settings.sf_auth_flow == "jwt"
        and settings.sf_jwt_key_file is None
        and _is_missing(settings.sf_jwt_private_key)
    ):
        missing.append("sf_jwt_key_file")
    if missing:
        names = ", ".join(env_name(name) for name in missing)
        raise SettingsError(
            f"configuration error: {names} must be set for SF_AUTH_FLOW={settings.sf_auth_flow}"
        )
