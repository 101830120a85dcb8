"""The Pub/Sub API (gRPC, `eventbus.v1.PubSub`) over the same EventBus as the Streaming API.

One change is one bus event, so it reaches a CometD subscriber and a Pub/Sub subscriber once
each, in the same order. `PubSubService` is the servicer; `start`/`stop` run its `grpc.aio`
server (TLS, the REST side's certificate) on the caller's event loop, which is uvicorn's when the
app's lifespan starts it (see `app.py`). As on Salesforce:

- every call carries the metadata `accesstoken` (a token the REST API accepts), `instanceurl`
  and `tenantid` (the org id, 15 or 18 characters); otherwise UNAUTHENTICATED, "An
  authentication exception occurred. Provide valid authentication via metadata headers.
  rpcId: <uuid>", trailers `error-code: sfdc.platform.eventbus.grpc.service.auth.error` and
  `rpc-id`. Expiring the tokens (control API) also ends every open Subscribe with it;
- `GetTopic` answers `can_subscribe`, `can_publish` (platform event topics only), the topic's
  `schema_id` (empty for `/data/ChangeEvents`, whose events carry their own object's) and the
  org id as `tenant_guid`; `GetSchema` the schema JSON by id (see `avro.py`);
- `Subscribe` is pull-based: the first FetchRequest names the topic and the replay preset
  (LATEST: new events only; EARLIEST: every retained event; CUSTOM: after `replay_id`). The
  server never sends more events than were requested and not yet sent; requests add up, and
  what is outstanding is capped at 100 (more is taken as 100, as Salesforce documents; a negative
  `num_requested` is INVALID_ARGUMENT). Events go out in FetchResponses of at most 100, with
  `latest_replay_id` the replay id of the last event in it and `pending_num_requested` what is
  still requested. After `pubsub_keepalive_seconds` without a response, a keepalive goes out
  (no events, the topic's newest replay id, whether or not anything is requested; the newest id
  may be past events not yet requested). With nothing requested for `pubsub_idle_close_seconds`
  the stream ends (status OK: the client subscribes again). A later FetchRequest naming another
  topic is INVALID_ARGUMENT;
- replay ids are 12 opaque bytes: 4 derived from the channel, then the bus's per-channel replay
  id as 8 bytes big-endian. A CUSTOM replay id that is malformed, of another topic, newer than
  the topic's newest or older than what the bus retains ends the stream with INVALID_ARGUMENT,
  "The Replay ID validation failed. Ensure that the Replay ID is valid. rpcId: <uuid>", trailer
  `error-code: sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted`;
- `Publish`/`PublishStream` publish platform events (at most 200 per request) on the bus as the
  REST API does; each event's payload must be in the topic's schema, else its PublishResult
  carries an error (code PUBLISH) and the others are still published.

The control API reaches this transport too: `drop_sessions` ends every open Subscribe with
UNAVAILABLE ("RST_STREAM closed stream"); fault rules match the path
`/eventbus.v1.PubSub/<Method>` (method POST): latency delays the call, "fail" (and, on reads,
"lose_reply" and "late_commit") ends it with UNAVAILABLE; on Publish "lose_reply" publishes and
then fails, "late_commit" publishes `ms` later and fails now. Each call is in the request log
when it ends, with the HTTP status its gRPC status stands for. With the setting
`pubsub_keepalives` false, open streams send nothing at all (no events, no keepalives, no idle
close) until it is true again. `GET /__emulator__/pubsub/subscriptions` (`.routes`, mounted by
the app) lists the open Subscribe streams: each one's `topic`, `requested` (the `num_requested`
it has added up, as taken: past the cap of 100 outstanding counts as up to it), `sent` (events),
`pending` (requested - sent), `max_outstanding` (the most pending after any FetchRequest was
applied), `keepalives` (responses without events), `rpc_id` and `opened_at` (epoch seconds).

Where Salesforce's behaviour is not known, these choices were made: the error codes for an
unknown topic (`sfdc.platform.eventbus.grpc.topic.not.found`, NOT_FOUND), an unknown schema
(`…grpc.schema.not.found`), a publish to a change event topic (`…grpc.publish.not.allowed`,
PERMISSION_DENIED) and other invalid requests (`…grpc.invalid.request`, INVALID_ARGUMENT).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulators.common.faults import FaultInjector, Verdict
from emulators.common.requestlog import RequestLog, RequestRecord
from emulators.salesforce import avro, schema
from emulators.salesforce.auth import Session, SessionStore
from emulators.salesforce.errors import ApiError
from emulators.salesforce.events import EventBus, StreamEvent, platform_event_channel
from wire.pubsub import pubsub_api_pb2 as pb
from wire.pubsub import pubsub_api_pb2_grpc as pb_grpc

SERVICE_PATH = "/eventbus.v1.PubSub/"
MAX_REQUESTED = 100
MAX_BATCH = 100
MAX_PUBLISH = 200
REPLAY_ID_LENGTH = 12

AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
REPLAY_ERROR = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
TOPIC_ERROR = "sfdc.platform.eventbus.grpc.topic.not.found"
SCHEMA_ERROR = "sfdc.platform.eventbus.grpc.schema.not.found"
PUBLISH_DENIED = "sfdc.platform.eventbus.grpc.publish.not.allowed"
INVALID_REQUEST = "sfdc.platform.eventbus.grpc.invalid.request"
UNAVAILABLE_ERROR = "sfdc.platform.eventbus.grpc.service.unavailable"

_AUTH_MESSAGE = (
    "An authentication exception occurred. Provide valid authentication via metadata headers."
)
_REPLAY_MESSAGE = "The Replay ID validation failed. Ensure that the Replay ID is valid."
_DROPPED_MESSAGE = "RST_STREAM closed stream"
_FAULT_MESSAGE = "upstream connect error or disconnect/reset before headers. reset reason: fault"
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAVAILABLE: 503,
}


# ---- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PubSubSettings:
    """The Pub/Sub behaviour settings, named in the control API with a `pubsub_` prefix."""

    keepalive_seconds: float = 60.0
    idle_close_seconds: float = 60.0
    keepalives: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {f"pubsub_{f.name}": getattr(self, f.name) for f in fields(self)}

    def changed(self, changes: dict[str, Any]) -> PubSubSettings:
        """These settings with `changes` (keys `pubsub_*`) applied; raises ValueError."""
        updates: dict[str, Any] = {}
        for key, value in changes.items():
            name = key.removeprefix("pubsub_")
            if name == "keepalives":
                if not isinstance(value, bool):
                    raise ValueError(f"setting '{key}' must be a bool")
                updates[name] = value
            elif name in ("keepalive_seconds", "idle_close_seconds"):
                if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                    raise ValueError(f"setting '{key}' must be a positive number")
                updates[name] = float(value)
            else:
                raise ValueError(f"unknown settings: {key}")
        return replace(self, **updates)


SETTING_NAMES = frozenset(PubSubSettings().to_dict())


# ---- replay ids ---------------------------------------------------------------------------


def _channel_tag(channel: str) -> bytes:
    return hashlib.sha256(b"replay:" + channel.encode()).digest()[:4]


def encode_replay_id(channel: str, replay_id: int) -> bytes:
    """The opaque replay id of the bus's `replay_id` on `channel`."""
    return _channel_tag(channel) + replay_id.to_bytes(8, "big")


def decode_replay_id(channel: str, raw: bytes) -> int | None:
    """The bus's replay id in `raw`, or None if `raw` is not a replay id of `channel`."""
    if len(raw) != REPLAY_ID_LENGTH or raw[:4] != _channel_tag(channel):
        return None
    return int.from_bytes(raw[4:], "big")


# ---- errors -------------------------------------------------------------------------------


class RpcError(Exception):
    """A refusal: the status, the message (the rpc id is added) and the `error-code` trailer."""

    def __init__(self, code: grpc.StatusCode, message: str, error_code: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.error_code = error_code


def _auth_error() -> RpcError:
    return RpcError(grpc.StatusCode.UNAUTHENTICATED, _AUTH_MESSAGE, AUTH_ERROR)


def _topic_error(topic: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.NOT_FOUND,
        f"The topic {topic!r} does not exist or you do not have access to it. "
        "Ensure that the topic name is valid.",
        TOPIC_ERROR,
    )


def _invalid(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, message, INVALID_REQUEST)


def _unavailable(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.UNAVAILABLE, message, UNAVAILABLE_ERROR)


def _credentials(certfile: str, keyfile: str) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(Path(keyfile).read_bytes(), Path(certfile).read_bytes())])


@dataclass(eq=False)
class _Subscription:
    topic: str
    token: str
    rpc_id: str
    # The bus replay id the stream has delivered up to (None: before every retained event).
    position: int | None
    pending: int = 0
    last_response: float = 0.0
    # For the control API: what the client asked for in all (as taken), what it got, the most
    # it ever had outstanding, the keepalives sent and when the stream opened (epoch seconds).
    requested: int = 0
    sent: int = 0
    max_outstanding: int = 0
    keepalives: int = 0
    opened_at: float = field(default_factory=time.time)
    # When the stream last had nothing pending (None while something is).
    idle_since: float | None = None
    ending: RpcError | None = None
    closed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def end(self, error: RpcError) -> None:
        if self.ending is None:
            self.ending = error
        self.wake.set()

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "requested": self.requested,
            "sent": self.sent,
            "pending": self.pending,
            "max_outstanding": self.max_outstanding,
            "keepalives": self.keepalives,
            "rpc_id": self.rpc_id,
            "opened_at": round(self.opened_at, 3),
        }


class PubSubService:
    """The `eventbus.v1.PubSub` servicer of one emulated org, and its server."""

    def __init__(
        self,
        *,
        bus: EventBus,
        sessions: SessionStore,
        faults: FaultInjector,
        requests: RequestLog,
        tenant_id: str,
        on_change: Callable[[], None] = lambda: None,
        settings: PubSubSettings | None = None,
    ) -> None:
        self.bus = bus
        self.sessions = sessions
        self.faults = faults
        self.requests = requests
        self.tenant_id = tenant_id
        self.settings = settings or PubSubSettings()
        self._on_change = on_change
        self._subscriptions: set[_Subscription] = set()
        self._server: aio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._late: set[asyncio.Task[None]] = set()
        self.routes: list[BaseRoute] = [
            Route("/__emulator__/pubsub/subscriptions", self._subscriptions_view, methods=["GET"]),
        ]
        bus.add_listener(self._on_event)

    # ---- server ---------------------------------------------------------------------------

    async def start(self, host: str, port: int, *, certfile: str, keyfile: str) -> int:
        """Serve on `host:port` (0: a free port) over TLS on the running loop; the port."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        server = aio.server(
            options=[
                # Clients may ping to keep an idle stream's connection open.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ]
        )
        pb_grpc.add_PubSubServicer_to_server(self, server)
        bound = int(server.add_secure_port(f"{host}:{port}", _credentials(certfile, keyfile)))
        if not bound:
            raise RuntimeError(f"the Pub/Sub API cannot listen on {host}:{port}")
        await server.start()
        self._server = server
        return bound

    async def stop(self, grace: float = 1.0) -> None:
        """End every stream and stop serving."""
        self._end_all(_unavailable(_DROPPED_MESSAGE))
        for task in list(self._late):
            task.cancel()
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        self._loop = None

    # ---- control --------------------------------------------------------------------------

    def drop_sessions(self) -> int:
        """End every open Subscribe with UNAVAILABLE; how many there were."""
        count = len(self._subscriptions)
        self._call_in_loop(lambda: self._end_all(_unavailable(_DROPPED_MESSAGE)))
        return count

    def tokens_expired(self) -> int:
        """End every open Subscribe with UNAUTHENTICATED (their tokens are gone)."""
        count = len(self._subscriptions)
        self._call_in_loop(lambda: self._end_all(_auth_error()))
        return count

    async def _subscriptions_view(self, request: Request) -> Response:
        """The open Subscribe streams and their flow control, oldest first (on the server's
        loop, which is the app's: no stream changes while this reads them)."""
        subscriptions = sorted(self._subscriptions, key=lambda s: s.opened_at)
        return JSONResponse({"subscriptions": [s.to_dict() for s in subscriptions]})

    def configure(self, settings: PubSubSettings) -> None:
        self.settings = settings
        self._call_in_loop(self._wake_all)

    def _end_all(self, error: RpcError) -> None:
        for subscription in list(self._subscriptions):
            subscription.end(error)

    def _wake_all(self) -> None:
        for subscription in self._subscriptions:
            subscription.wake.set()

    def _on_event(self, event: StreamEvent) -> None:
        def wake() -> None:
            for subscription in self._subscriptions:
                if subscription.topic in event.replay_ids:
                    subscription.wake.set()

        self._call_in_loop(wake)

    def _call_in_loop(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the server's loop: subscriptions are only touched there."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            callback()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(callback)

    # ---- calls ----------------------------------------------------------------------------

    async def _begin(
        self, context: aio.ServicerContext[Any, Any], method: str
    ) -> tuple[Session, Verdict]:
        """Check the caller's metadata, then apply the faults that match the call (Publish
        applies a lost reply or late commit itself)."""
        metadata = {str(k).lower(): v for k, v in (context.invocation_metadata() or ())}
        token, instance, tenant = (
            metadata.get("accesstoken"),
            metadata.get("instanceurl"),
            metadata.get("tenantid"),
        )
        if not (isinstance(token, str) and token and instance and tenant):
            raise _auth_error()
        if tenant not in (self.tenant_id, self.tenant_id[:15]):
            raise _auth_error()
        session = self.sessions.lookup(token)
        if session is None:
            raise _auth_error()
        verdict = self.faults.decide("POST", SERVICE_PATH + method, None)
        if verdict.latency_ms:
            await asyncio.sleep(verdict.latency_ms / 1000)
        if verdict.failure is not None:
            raise _unavailable(_FAULT_MESSAGE)
        if method != "Publish" and (verdict.lost_reply or verdict.late_commit_ms is not None):
            raise _unavailable(_FAULT_MESSAGE)
        return session, verdict

    async def _refuse(
        self, context: aio.ServicerContext[Any, Any], error: RpcError, rpc_id: str
    ) -> None:
        await context.abort(
            error.code,
            f"{error.message} rpcId: {rpc_id}",
            trailing_metadata=(("error-code", error.error_code), ("rpc-id", rpc_id)),
        )

    def _log(self, method: str, code: grpc.StatusCode, started: float, began: float) -> None:
        self.requests.record(
            RequestRecord(
                method="POST",
                path=SERVICE_PATH + method,
                action=None,
                status=_HTTP_STATUS.get(code, 500),
                time=began,
                duration_ms=round((time.monotonic() - started) * 1000, 3),
            )
        )

    async def _unary(
        self,
        context: aio.ServicerContext[Any, Any],
        method: str,
        answer: Callable[[str], Any],
    ) -> Any:
        rpc_id = str(uuid.uuid4())
        started, began = time.monotonic(), time.time()
        code = grpc.StatusCode.OK
        try:
            await self._begin(context, method)
            return answer(rpc_id)
        except RpcError as error:
            code = error.code
            await self._refuse(context, error, rpc_id)
        finally:
            self._log(method, code, started, began)

    async def GetTopic(
        self, request: pb.TopicRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.TopicInfo:
        def answer(rpc_id: str) -> pb.TopicInfo:
            name = request.topic_name
            if not self.bus.knows_channel(name):
                raise _topic_error(name)
            topic = avro.topic_schema(name)
            return pb.TopicInfo(
                topic_name=name,
                tenant_guid=self.tenant_id,
                can_publish=name.startswith("/event/"),
                can_subscribe=True,
                schema_id=topic.schema_id if topic is not None else "",
                rpc_id=rpc_id,
            )

        reply: pb.TopicInfo = await self._unary(context, "GetTopic", answer)
        return reply

    async def GetSchema(
        self, request: pb.SchemaRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.SchemaInfo:
        def answer(rpc_id: str) -> pb.SchemaInfo:
            found = avro.schema_by_id(request.schema_id)
            if found is None:
                raise RpcError(
                    grpc.StatusCode.NOT_FOUND,
                    f"The schema ID {request.schema_id!r} is not valid.",
                    SCHEMA_ERROR,
                )
            return pb.SchemaInfo(schema_json=found.json, schema_id=found.schema_id, rpc_id=rpc_id)

        reply: pb.SchemaInfo = await self._unary(context, "GetSchema", answer)
        return reply

    # ---- Subscribe ------------------------------------------------------------------------

    async def Subscribe(
        self,
        request_iterator: AsyncIterator[pb.FetchRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> None:
        rpc_id = str(uuid.uuid4())
        started, began = time.monotonic(), time.time()
        code = grpc.StatusCode.OK
        try:
            session, _ = await self._begin(context, "Subscribe")
            requests = aiter(request_iterator)
            try:
                first = await anext(requests)
            except StopAsyncIteration:
                return
            subscription = self._open(first, session.token, rpc_id)
            self._subscriptions.add(subscription)
            reader = asyncio.ensure_future(self._read(subscription, requests))
            try:
                await self._serve(subscription, context)
            finally:
                subscription.closed = True
                self._subscriptions.discard(subscription)
                reader.cancel()
        except RpcError as error:
            code = error.code
            await self._refuse(context, error, rpc_id)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self._log("Subscribe", code, started, began)

    def _open(self, first: pb.FetchRequest, token: str, rpc_id: str) -> _Subscription:
        topic = first.topic_name
        if not topic or not self.bus.knows_channel(topic):
            raise _topic_error(topic)
        position: int | None
        if first.replay_preset == pb.ReplayPreset.EARLIEST:
            position = None
        elif first.replay_preset == pb.ReplayPreset.CUSTOM:
            after = decode_replay_id(topic, first.replay_id)
            if after is None or not self.bus.is_valid_resume_point(topic, after):
                raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, _REPLAY_MESSAGE, REPLAY_ERROR)
            position = after
        else:
            position = self.bus.latest_replay_id(topic)
        now = asyncio.get_running_loop().time()
        subscription = _Subscription(topic, token, rpc_id, position, last_response=now)
        self._request(subscription, first.num_requested, now)
        return subscription

    def _request(self, subscription: _Subscription, count: int, now: float) -> None:
        if count < 0:
            raise _invalid(f"num_requested must not be negative: {count}")
        pending = min(MAX_REQUESTED, subscription.pending + count)
        subscription.requested += pending - subscription.pending
        subscription.pending = pending
        subscription.max_outstanding = max(subscription.max_outstanding, pending)
        if count > 0:
            subscription.idle_since = None
        elif subscription.pending == 0 and subscription.idle_since is None:
            subscription.idle_since = now

    async def _read(self, subscription: _Subscription, requests: AsyncIterator[Any]) -> None:
        """Take the client's later FetchRequests; a refusal ends the stream."""
        with contextlib.suppress(Exception):
            async for request in requests:
                try:
                    if request.topic_name and request.topic_name != subscription.topic:
                        raise _invalid(
                            f"A FetchRequest names the topic {request.topic_name!r}, but the "
                            f"stream subscribes to {subscription.topic!r}."
                        )
                    if not self.sessions.is_valid(subscription.token):
                        raise _auth_error()
                    now = asyncio.get_running_loop().time()
                    self._request(subscription, request.num_requested, now)
                except RpcError as error:
                    subscription.end(error)
                    return
                subscription.wake.set()

    async def _serve(
        self, subscription: _Subscription, context: aio.ServicerContext[Any, Any]
    ) -> None:
        """Send what is requested, keepalives when quiet; return when the stream is done."""
        loop = asyncio.get_running_loop()
        while True:
            subscription.wake.clear()
            if subscription.ending is not None:
                raise subscription.ending
            settings = self.settings
            timeout: float | None = None
            if not settings.keepalives:
                # Silent: and the idle time starts again once it speaks.
                subscription.idle_since = None
            else:
                await self._send_events(subscription, context)
                now = loop.time()
                if subscription.pending == 0 and subscription.idle_since is None:
                    subscription.idle_since = now
                deadline = subscription.last_response + settings.keepalive_seconds
                if subscription.idle_since is not None:
                    idle_end = subscription.idle_since + settings.idle_close_seconds
                    if now >= idle_end:
                        return
                    deadline = min(deadline, idle_end)
                if now >= subscription.last_response + settings.keepalive_seconds:
                    await context.write(self._response(subscription, []))
                    subscription.keepalives += 1
                    subscription.last_response = loop.time()
                    continue
                timeout = deadline - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(subscription.wake.wait(), timeout)

    async def _send_events(
        self, subscription: _Subscription, context: aio.ServicerContext[Any, Any]
    ) -> None:
        while subscription.pending > 0 and subscription.ending is None:
            events, _ = self.bus.snapshot(subscription.topic, subscription.position)
            batch = events[: min(subscription.pending, MAX_BATCH)]
            if not batch:
                return
            subscription.position = batch[-1].replay_id(subscription.topic)
            subscription.pending -= len(batch)
            subscription.sent += len(batch)
            await context.write(self._response(subscription, batch))
            subscription.last_response = asyncio.get_running_loop().time()

    def _response(self, subscription: _Subscription, batch: list[StreamEvent]) -> pb.FetchResponse:
        topic = subscription.topic
        latest = batch[-1].replay_id(topic) if batch else self.bus.latest_replay_id(topic)
        return pb.FetchResponse(
            events=[self._consumer_event(topic, event) for event in batch],
            latest_replay_id=encode_replay_id(topic, latest),
            rpc_id=subscription.rpc_id,
            pending_num_requested=subscription.pending,
        )

    @staticmethod
    def _consumer_event(topic: str, event: StreamEvent) -> pb.ConsumerEvent:
        event_schema = avro.event_schema(event)
        return pb.ConsumerEvent(
            event=pb.ProducerEvent(
                id=avro.event_id(event),
                schema_id=event_schema.schema_id,
                payload=avro.encode_event(event_schema, event),
            ),
            replay_id=encode_replay_id(topic, event.replay_id(topic)),
        )

    # ---- Publish --------------------------------------------------------------------------

    async def Publish(
        self, request: pb.PublishRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.PublishResponse:
        rpc_id = str(uuid.uuid4())
        started, began = time.monotonic(), time.time()
        code = grpc.StatusCode.OK
        try:
            session, verdict = await self._begin(context, "Publish")
            if verdict.late_commit_ms is not None:
                # Published after the caller has been told the call failed.
                self._publish_later(request, session, rpc_id, verdict.late_commit_ms / 1000)
                raise _unavailable(_FAULT_MESSAGE)
            reply = self._publish(request, session, rpc_id)
            if verdict.lost_reply is not None:
                raise _unavailable(_FAULT_MESSAGE)
            return reply
        except RpcError as error:
            code = error.code
            await self._refuse(context, error, rpc_id)
            raise AssertionError("abort returned") from error
        finally:
            self._log("Publish", code, started, began)

    async def PublishStream(
        self,
        request_iterator: AsyncIterator[pb.PublishRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.PublishResponse]:
        rpc_id = str(uuid.uuid4())
        started, began = time.monotonic(), time.time()
        code = grpc.StatusCode.OK
        try:
            session, _ = await self._begin(context, "PublishStream")
            async for request in request_iterator:
                if not self.sessions.is_valid(session.token):
                    raise _auth_error()
                yield self._publish(request, session, rpc_id)
        except RpcError as error:
            code = error.code
            await self._refuse(context, error, rpc_id)
        finally:
            self._log("PublishStream", code, started, began)

    def _publish_later(
        self, request: pb.PublishRequest, session: Session, rpc_id: str, delay: float
    ) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(RpcError):
                self._publish(request, session, rpc_id)

        task = asyncio.ensure_future(later())
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    def _publish(
        self, request: pb.PublishRequest, session: Session, rpc_id: str
    ) -> pb.PublishResponse:
        name = request.topic_name
        if not self.bus.knows_channel(name):
            raise _topic_error(name)
        topic = avro.topic_schema(name)
        if topic is None or topic.change_event:
            raise RpcError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Publishing to the topic {name!r} is not allowed: only platform events are.",
                PUBLISH_DENIED,
            )
        if len(request.events) > MAX_PUBLISH:
            raise _invalid(f"A PublishRequest carries at most {MAX_PUBLISH} events.")
        results = [self._publish_one(topic, event, session) for event in request.events]
        self._on_change()
        return pb.PublishResponse(results=results, schema_id=topic.schema_id, rpc_id=rpc_id)

    def _publish_one(
        self, topic: avro.TopicSchema, event: pb.ProducerEvent, session: Session
    ) -> pb.PublishResult:
        correlation = event.id or str(uuid.uuid4())
        try:
            fields = self._event_fields(topic, event)
        except ValueError as exc:
            return pb.PublishResult(
                error=pb.Error(code=pb.ErrorCode.PUBLISH, msg=str(exc)), correlation_key=correlation
            )
        published = self.bus.publish_platform_event(
            name=topic.sobject.name, fields=fields, created_by=session.user_id
        )
        channel = platform_event_channel(topic.sobject.name)
        return pb.PublishResult(
            replay_id=encode_replay_id(channel, published.replay_id(channel)),
            correlation_key=correlation,
        )

    @staticmethod
    def _event_fields(topic: avro.TopicSchema, event: pb.ProducerEvent) -> dict[str, Any]:
        """The event's fields as the REST API would take them; ValueError saying what is wrong."""
        if event.schema_id != topic.schema_id:
            raise ValueError(
                f"The schema ID {event.schema_id!r} is not the schema of the topic "
                f"(expected {topic.schema_id})."
            )
        try:
            record = topic.decode(event.payload)
        except Exception as exc:  # fastavro raises many kinds on a payload that is not Avro
            raise ValueError(f"The event payload cannot be decoded: {exc}") from exc
        sobject = topic.sobject
        fields: dict[str, Any] = {}
        for name, value in avro.record_fields(topic, record).items():
            spec = sobject.field(name)
            if spec is None:
                continue
            try:
                fields[spec.name] = schema.coerce(sobject, spec, value)
            except ApiError as exc:
                raise ValueError(f"{exc.error_code}: {exc.message}") from exc
        return fields
