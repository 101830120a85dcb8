"""Salesforce's Pub/Sub API (gRPC): topics, schemas and flow-controlled subscriptions.

`Subscription` speaks `Subscribe` as a bidirectional stream: it asks for events
(`FetchRequest.num_requested`, never more than `batch` outstanding) and asks again as the caller
takes them, decodes each event's Avro payload with the schema from `GetSchema` (cached by schema
id: a new id appears whenever a field is added in the org), and turns the change event header's
bitmaps back into field names. What it yields has the Streaming API's shape
(`{"channel", "data": {"schema", "event": {"replayId"}, "payload"}}`), so the listener reads both
transports with one parser: the replay id is the hex of Salesforce's opaque bytes, datetimes are
ISO-8601 text, and only the fields an event carries are present (a nulled one as null), as on
CometD.

Calls authenticate with the same token source as REST (`accesstoken`, `instanceurl`,
`tenantid`); a refused token is replaced once per refusal. Errors map to the client taxonomy:
a replay id Salesforce no longer retains is `StaleReplayId`, everything else that ends a stream
is transient (the listener reconnects with backoff).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Self

import fastavro
import grpc
from grpc import aio

from clients.errors import ClientError, ConfigurationError, System, TransientError
from clients.metrics import observe
from clients.salesforce_auth import SalesforceAuth, SalesforceToken
from config.logging import get_logger
from config.settings import Settings
from wire.pubsub import pubsub_api_pb2 as pb
from wire.pubsub.pubsub_api_pb2_grpc import PubSubStub

log = get_logger(__name__)

# Salesforce allows at most 100 events outstanding per FetchRequest.
MAX_BATCH = 100
_UNARY_TIMEOUT = 30.0
_GRPC_OPTIONS = [
    # HTTP/2 pings on a quiet stream, so that a dead connection is noticed without waiting for
    # the 270 s keepalive (the listener's watchdog is the last resort).
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]

Preset = Literal["LATEST", "EARLIEST", "CUSTOM"]


class StaleReplayId(ClientError):
    """The CUSTOM replay id was refused: outside retention, unknown, or not one of this topic's."""


@dataclass(frozen=True)
class ReplayStart:
    """Where a subscription starts: after `replay_id` (hex) for CUSTOM, else a preset."""

    preset: Preset
    replay_id: str | None = None

    @classmethod
    def after(cls, replay_id: str) -> Self:
        return cls("CUSTOM", replay_id)


@dataclass(frozen=True)
class Batch:
    """One FetchResponse: events in order (Streaming-API-shaped messages), or none (a keepalive).

    `latest_replay_id` is the newest replay id Salesforce has for the subscription; `pending`
    the events still owed from what was requested. With no events and something still owed,
    nothing newer than `latest_replay_id` exists yet: a cursor may be stored there.
    """

    events: tuple[dict[str, Any], ...]
    latest_replay_id: str | None
    pending: int
    rpc_id: str

    @property
    def is_keepalive(self) -> bool:
        return not self.events


@dataclass(frozen=True)
class _Schema:
    parsed: Any
    fields: tuple[dict[str, Any], ...]


class PubSubClient:
    def __init__(
        self,
        endpoint: str,
        auth: SalesforceAuth,
        *,
        ca_file: Path | str | None = None,
        timeout: float = _UNARY_TIMEOUT,
    ) -> None:
        root = Path(ca_file).read_bytes() if ca_file is not None else None
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
        self.endpoint = endpoint
        self._auth = auth
        self._timeout = timeout
        self._channel = aio.secure_channel(endpoint, credentials, options=_GRPC_OPTIONS)
        self._stub = PubSubStub(self._channel)
        self._schemas: dict[str, _Schema] = {}
        self._schema_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, auth: SalesforceAuth) -> Self:
        return cls(settings.sf_pubsub_endpoint, auth, ca_file=settings.sf_ca_file)

    def __repr__(self) -> str:
        return f"PubSubClient(endpoint={self.endpoint!r})"

    async def aclose(self) -> None:
        await self._channel.close()

    async def topic(self, name: str) -> pb.TopicInfo:
        request = pb.TopicRequest(topic_name=name)
        info: pb.TopicInfo = await self._unary("get_topic", self._stub.GetTopic, request)
        return info

    async def publish(self, topic: str, events: Iterable[dict[str, Any]]) -> list[str]:
        """Publish platform events (one record each, written with the topic's schema); the
        replay id of each, hex. A refused event raises with Salesforce's message."""
        info = await self.topic(topic)
        schema = await self._schema(info.schema_id)
        producer = [
            pb.ProducerEvent(schema_id=info.schema_id, payload=_encode(schema, event))
            for event in events
        ]
        request = pb.PublishRequest(topic_name=topic, events=producer)
        reply: pb.PublishResponse = await self._unary("publish", self._stub.Publish, request)
        failed = [result.error.msg for result in reply.results if result.HasField("error")]
        if failed:
            raise TransientError(System.SALESFORCE, "publish refused", detail="; ".join(failed))
        return [result.replay_id.hex() for result in reply.results]

    def subscribe(self, topic: str, start: ReplayStart, *, batch: int = MAX_BATCH) -> Subscription:
        return Subscription(self, topic, start, batch=min(max(batch, 1), MAX_BATCH))

    async def _metadata(self) -> tuple[SalesforceToken, tuple[tuple[str, str], ...]]:
        token = await self._auth.token()
        metadata = (
            ("accesstoken", token.access_token.get_secret_value()),
            ("instanceurl", token.instance_url),
            ("tenantid", token.org_id or ""),
        )
        return token, metadata

    async def _unary(self, operation: str, method: Any, request: Any) -> Any:
        async with observe(System.SALESFORCE, f"pubsub_{operation}"):
            token, metadata = await self._metadata()
            try:
                return await method(request, metadata=metadata, timeout=self._timeout)
            except aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise rpc_error(error) from None
            # The token expired or was revoked: one new token, one more try.
            await self._auth.token(stale=token.access_token.get_secret_value())
            _token, metadata = await self._metadata()
            try:
                return await method(request, metadata=metadata, timeout=self._timeout)
            except aio.AioRpcError as error:
                raise rpc_error(error) from None

    async def _schema(self, schema_id: str) -> _Schema:
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        async with self._schema_lock:
            if schema_id not in self._schemas:
                request = pb.SchemaRequest(schema_id=schema_id)
                info: pb.SchemaInfo = await self._unary("get_schema", self._stub.GetSchema, request)
                raw = json.loads(info.schema_json)
                self._schemas[schema_id] = _Schema(
                    fastavro.parse_schema(raw), tuple(raw.get("fields", ()))
                )
                log.info("salesforce.pubsub_schema", schema_id=schema_id)
            return self._schemas[schema_id]


class Subscription:
    """One `Subscribe` stream: iterate for batches; `taken(n)` once n events are in hand.

    At most `batch` events are ever outstanding (requested and not yet received): the first
    request asks for `batch`, and more are asked for only as the caller takes events.
    """

    def __init__(self, client: PubSubClient, topic: str, start: ReplayStart, *, batch: int) -> None:
        self.topic = topic
        self._client = client
        self._start = start
        self._batch = batch
        self._requests: asyncio.Queue[pb.FetchRequest | None] = asyncio.Queue()
        self._taken = 0
        self._call: Any = None
        self.requested = 0
        self.received = 0

    def taken(self, count: int = 1) -> None:
        """The caller took `count` events: ask for as many again, in steps of half a batch
        (events keep flowing without a request per event; a stream left with nothing
        outstanding must ask within 60 s, or Salesforce closes it)."""
        self._taken += count
        if self._taken >= max(1, self._batch // 2):
            self._request(self._taken)
            self._taken = 0

    def _request(self, count: int) -> None:
        self.requested += count
        self._requests.put_nowait(pb.FetchRequest(topic_name=self.topic, num_requested=count))

    async def _outgoing(self) -> AsyncIterator[pb.FetchRequest]:
        first = pb.FetchRequest(
            topic_name=self.topic,
            replay_preset=self._start.preset,
            num_requested=self._batch,
        )
        if self._start.preset == "CUSTOM":
            assert self._start.replay_id is not None
            first.replay_id = bytes.fromhex(self._start.replay_id)
        self.requested = self._batch
        yield first
        while (request := await self._requests.get()) is not None:
            yield request

    async def __aiter__(self) -> AsyncIterator[Batch]:
        token, metadata = await self._client._metadata()
        self._call = self._client._stub.Subscribe(self._outgoing(), metadata=metadata)
        try:
            async for response in self._call:
                yield await self._batch_of(response)
        except aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                # The next session authenticates afresh (one refresh however many streams saw it).
                await self._client._auth.token(stale=token.access_token.get_secret_value())
            raise rpc_error(error) from None
        finally:
            self.close()
        raise TransientError(System.SALESFORCE, "Pub/Sub stream ended by the server")

    def close(self) -> None:
        self._requests.put_nowait(None)
        if self._call is not None:
            self._call.cancel()

    async def _batch_of(self, response: pb.FetchResponse) -> Batch:
        events = []
        for consumed in response.events:
            schema = await self._client._schema(consumed.event.schema_id)
            data: dict[str, Any] = {
                "schema": consumed.event.schema_id,
                "event": {"replayId": consumed.replay_id.hex()},
            }
            try:
                data["payload"] = decode_event(schema.parsed, schema.fields, consumed.event)
            except Exception as error:  # the event is kept (dead-lettered), never the stream
                data["decodeError"] = f"{type(error).__name__}: {error}"[:300]
                data["payloadBase64"] = base64.b64encode(consumed.event.payload).decode()
            events.append({"channel": self.topic, "data": data})
        self.received += len(events)
        latest = response.latest_replay_id.hex() if response.latest_replay_id else None
        return Batch(tuple(events), latest, response.pending_num_requested, response.rpc_id)


def rpc_error(error: aio.AioRpcError) -> ClientError:
    """The taxonomy error for a refused call; names Salesforce's error code and rpc id only."""
    trailers = {key: value for key, value in (error.trailing_metadata() or ()) if key}
    code = str(trailers.get("error-code") or "")
    detail = f"{error.code().name}: {code or error.details() or ''}".strip()
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT and "replayid" in code.casefold():
        return StaleReplayId(System.SALESFORCE, "replay id refused", detail=detail)
    if error.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND):
        return ConfigurationError(System.SALESFORCE, "Pub/Sub API refused the topic", detail=detail)
    return TransientError(System.SALESFORCE, "Pub/Sub API call failed", detail=detail)


# ---------------------------------------------------------------------------------------------
# Avro payloads and the change event header's bitmaps.


def decode_event(parsed: Any, fields: tuple[dict[str, Any], ...], event: pb.ProducerEvent) -> Any:
    """The event's body as the Streaming API carries it (see the module docstring)."""
    record = fastavro.schemaless_reader(io.BytesIO(event.payload), parsed, None)
    if not isinstance(record, dict):
        raise ValueError("payload is not an Avro record")
    header = record.get("ChangeEventHeader")
    if not isinstance(header, dict):
        # A platform event: every field it has, as JSON-shaped values.
        return {name: _json(value) for name, value in record.items()}
    changed = field_names(fields, header.get("changedFields") or ())
    nulled = field_names(fields, header.get("nulledFields") or ())
    body: dict[str, Any] = {
        "ChangeEventHeader": {
            **{key: _json(value) for key, value in header.items()},
            "changedFields": changed,
            "nulledFields": nulled,
            "diffFields": field_names(fields, header.get("diffFields") or ()),
        }
    }
    nulled_set = set(nulled)
    for name, value in record.items():
        if name == "ChangeEventHeader":
            continue
        if isinstance(value, dict):
            parts = {
                part: _json(inner)
                for part, inner in value.items()
                if inner is not None or f"{name}.{part}" in nulled_set
            }
            if parts or name in nulled_set:
                body[name] = parts or None
        elif value is not None or name in nulled_set:
            body[name] = _json(value)
    return body


def field_names(fields: tuple[dict[str, Any], ...], bitmaps: Iterable[str]) -> list[str]:
    """Salesforce's field bitmaps → names: `0x…` marks top-level fields by their index in the
    schema (bit i of the number is field i), `<i>-0x…` the components of the compound field at
    index i. A compound field is named by its components (`BillingAddress.City`), as CometD
    names it, not by itself as well."""
    names = _bitmap_names(fields, bitmaps)
    compound = {name.partition(".")[0] for name in names if "." in name}
    return [name for name in names if name not in compound]


def _bitmap_names(fields: tuple[dict[str, Any], ...], bitmaps: Iterable[str]) -> list[str]:
    names: list[str] = []
    for bitmap in bitmaps:
        parent, _, bits = bitmap.rpartition("-")
        if not parent:
            names.extend(fields[i]["name"] for i in _set_bits(bits) if i < len(fields))
            continue
        index = int(parent)
        if index >= len(fields):
            continue
        record = _record_type(fields[index]["type"])
        if record is None:
            continue
        parts = record["fields"]
        names.extend(
            f"{fields[index]['name']}.{parts[i]['name']}" for i in _set_bits(bits) if i < len(parts)
        )
    return names


def _set_bits(hex_text: str) -> list[int]:
    value = int(hex_text, 16)
    return [i for i in range(value.bit_length()) if value >> i & 1]


def _record_type(field_type: Any) -> dict[str, Any] | None:
    candidates = field_type if isinstance(field_type, list) else [field_type]
    for candidate in candidates:
        if isinstance(candidate, dict) and candidate.get("type") == "record":
            return candidate
    return None


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        moment = value.astimezone(UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {key: _json(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_json(inner) for inner in value]
    return value


def _encode(schema: _Schema, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema.parsed, record)
    return out.getvalue()
