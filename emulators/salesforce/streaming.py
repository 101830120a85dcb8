"""The Streaming API: Bayeux (CometD) over long-polling at `/cometd/<version>`, fed by the EventBus.

It answers as Salesforce does, message for message, so that aiosfstream-ng/aiocometd-ng run
unchanged against it:

- handshake offers only `long-polling` (a client offered more would try websocket) and the
  `replay` extension; the first connect of a session answers at once with the advice
  (`interval` 0, `timeout`, `reconnect: retry`), later ones are held until events arrive or the
  advice timeout passes; events ride in the same array as the connect reply;
- subscribe takes `ext.replay` {channel: -1 | -2 | replayId}, a replay id of that channel (each
  channel numbers its own events); a replay id outside retention gives
  `400::The replayId {N} you provided was invalid.  Please provide…` (two spaces, as sent), an
  unknown channel `400::The channel you requested to subscribe to does not exist {…}`;
- a bad bearer token gives `401::Authentication invalid` (advice `reconnect: none`) on connect and
  `403::Handshake denied` on handshake; an unknown, dropped or expired client gets
  `403::Unknown client` with advice `reconnect: handshake` and no `clientId`;
- the handshake binds the session to the `BAYEUX_BROWSER` cookie (the one the request carried,
  else a new one set on the reply); every later message must carry that cookie, or its client is
  unknown (`403::Unknown client`);
- `/cometd/<version>` below 37.0 is refused;
- a client must come back within `idle_reconnect_ms` after an empty connect reply and within
  `event_reconnect_ms` after one that carried events, or its session (and subscriptions) go.

Where Salesforce's documentation is silent, these choices were made (after what Salesforce is seen
to send): a request without a bearer token gets `401::Request requires authentication` (the
handshake's `failureReason` then says so); a message published by the client gets `403::Publish
denied`; a replay id newer than the channel's newest event is refused like one outside retention; a
version below 37.0 gets `400::Unsupported API version…` on every message of the request; a request
without the cookie gets a new one set on its reply (so a client that lost it can handshake again),
whatever the messages it carried.

`drop_sessions()` ends every session at once (the control API's sessions/drop),
`GET /__emulator__/streaming/sessions` lists the live sessions, and
`control_extra_routes(bus)` adds control routes that inject gap, overflow and arbitrary change
events. Nothing here knows about records: the REST side publishes through the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import string
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulators.salesforce.events import EventBus, StreamEvent

Message = dict[str, Any]

HANDSHAKE = "/meta/handshake"
CONNECT = "/meta/connect"
SUBSCRIBE = "/meta/subscribe"
UNSUBSCRIBE = "/meta/unsubscribe"
DISCONNECT = "/meta/disconnect"
LONG_POLLING = "long-polling"
NEW_EVENTS = -1
ALL_EVENTS = -2
COOKIE_NAME = "BAYEUX_BROWSER"

_VERSION_RE = re.compile(r"^\d+\.\d+$")
_MIN_VERSION = 37.0
_CLIENT_ID_ALPHABET = string.digits + string.ascii_lowercase
_RETRY = {"reconnect": "retry", "interval": 0}
_HANDSHAKE_AGAIN = {"reconnect": "handshake", "interval": 0}
_GIVE_UP = {"reconnect": "none", "interval": 0}


def _replay_invalid(value: object) -> str:
    return (
        f"400::The replayId {{{value}}} you provided was invalid.  Please provide a valid ID, "
        "-2 to replay all events, or -1 to replay only new events."
    )


@dataclass(eq=False)
class _Session:
    client_id: str
    deadline: float
    # The BAYEUX_BROWSER cookie the handshake bound the session to.
    browser: str
    # channel -> replay id of the newest event queued for it (or deliberately skipped): an event
    # at or below it has been handled, which makes delivery idempotent.
    subscriptions: dict[str, int] = field(default_factory=dict)
    queue: deque[Message] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    connected: bool = False
    polling: bool = False
    generation: int = 0
    ended: bool = False

    def end(self) -> None:
        self.ended = True
        self.wake.set()

    def drain(self) -> list[Message]:
        messages = list(self.queue)
        self.queue.clear()
        return messages


class StreamingServer:
    """Bayeux sessions over one EventBus; mount `.routes` in the app."""

    def __init__(
        self,
        bus: EventBus,
        is_valid_token: Callable[[str], bool],
        *,
        connect_timeout_ms: int = 110_000,
        idle_reconnect_ms: int = 110_000,
        event_reconnect_ms: int = 40_000,
        clock: Callable[[], float] = time.monotonic,
        max_sessions: int = 1_000,
        max_queued: int = 10_000,
        rng: random.Random | None = None,
    ) -> None:
        self.bus = bus
        self.connect_timeout_ms = connect_timeout_ms
        self.idle_reconnect_ms = idle_reconnect_ms
        self.event_reconnect_ms = event_reconnect_ms
        self._is_valid_token = is_valid_token
        self._clock = clock
        self._max_sessions = max_sessions
        self._max_queued = max_queued
        self._rng = rng or random.Random()
        self._sessions: dict[str, _Session] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.routes: list[BaseRoute] = [
            Route("/cometd/{version}", self._endpoint, methods=["POST"]),
            Route("/__emulator__/streaming/sessions", self._sessions_view, methods=["GET"]),
        ]
        bus.add_listener(self._on_event)

    # ---- control ------------------------------------------------------------------------------

    def drop_sessions(self) -> int:
        """End every session; each client's next (or held) connect gets `403::Unknown client`."""
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            self._call_in_loop(session.end)
        return len(sessions)

    async def _sessions_view(self, request: Request) -> Response:
        """The live sessions, for tests and operators: who is polling, what waits for them."""
        now = self._clock()
        return JSONResponse(
            {
                "sessions": [
                    {
                        "clientId": session.client_id,
                        "subscriptions": sorted(session.subscriptions),
                        "polling": session.polling,
                        "queued": len(session.queue),
                        # Time left to come back; only counts while the client is not polling.
                        "secondsToReconnect": round(session.deadline - now, 3),
                    }
                    for session in self._sessions.values()
                ]
            }
        )

    # ---- HTTP ---------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse([{"successful": False, "error": "400::Invalid JSON"}], 400)
        messages = body if isinstance(body, list) else [body]
        token = _bearer_token(request)
        browser = request.cookies.get(COOKIE_NAME) or _random_id(self._rng, 26)
        self._expire_sessions()

        version_error = _version_error(request.path_params["version"])
        replies: list[Message] = []
        connect: Message | None = None
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("channel"), str):
                replies.append({"successful": False, "error": "400::Invalid message"})
            elif version_error is not None:
                replies.append(_failure(message, version_error))
            elif message["channel"] == CONNECT and connect is None:
                # Held last: a batch may carry re-subscriptions whose replays the connect returns.
                connect = message
            else:
                replies.append(self._handle(message, token, browser))
        if connect is not None:
            replies.extend(await self._connect(connect, token, browser))

        response = JSONResponse(replies)
        if COOKIE_NAME not in request.cookies:
            response.set_cookie(
                COOKIE_NAME,
                browser,
                path="/",
                secure=request.url.scheme == "https",
                httponly=True,
            )
        return response

    def _handle(self, message: Message, token: str | None, browser: str) -> Message:
        channel = message["channel"]
        auth_error = self._auth_error(token)
        if channel == HANDSHAKE:
            if auth_error is not None:
                return _failure(
                    message,
                    "403::Handshake denied",
                    advice={"reconnect": "none"},
                    ext={"sfdc": {"failureReason": auth_error}},
                )
            return self._handshake(message, browser)
        if auth_error is not None:
            return _failure(message, auth_error)
        session = self._session_of(message, browser)
        if channel in (SUBSCRIBE, UNSUBSCRIBE, DISCONNECT) and session is None:
            return _unknown_client(message)
        if channel == SUBSCRIBE and session is not None:
            return self._subscribe(message, session)
        if channel == UNSUBSCRIBE and session is not None:
            return self._unsubscribe(message, session)
        if channel == DISCONNECT and session is not None:
            self._end(session)
            return _success(message)
        # Salesforce publishes through its REST and SOAP APIs only, never through CometD.
        return _failure(message, "403::Publish denied")

    def _session_of(self, message: Message, browser: str) -> _Session | None:
        """The session `message` names, if the request came from the browser it is bound to."""
        session = self._sessions.get(str(message.get("clientId")))
        if session is None or session.browser != browser:
            return None
        return session

    def _handshake(self, message: Message, browser: str) -> Message:
        if len(self._sessions) >= self._max_sessions:
            self._evict_one()
        client_id = _random_id(self._rng, 27)
        self._sessions[client_id] = _Session(
            client_id=client_id,
            deadline=self._clock() + self.idle_reconnect_ms / 1000,
            browser=browser,
        )
        reply = {
            "channel": HANDSHAKE,
            "version": "1.0",
            "minimumVersion": "1.0",
            "clientId": client_id,
            "supportedConnectionTypes": [LONG_POLLING],
            "successful": True,
            "ext": {"replay": True, "payload.format": True},
        }
        return _with_id(reply, message)

    def _subscribe(self, message: Message, session: _Session) -> Message:
        channel = message.get("subscription")
        if not isinstance(channel, str) or not channel:
            return _failure(message, "400::Channel name not specified", session=session)
        if not channel.startswith("/"):
            return _failure(
                message, "400::Channel subscriptions must start with a leading '/'", session=session
            )
        if not self.bus.knows_channel(channel):
            return _failure(
                message,
                f"400::The channel you requested to subscribe to does not exist {{{channel}}}",
                session=session,
            )
        option = _requested_replay(message, channel)
        events: list[StreamEvent]
        if option == NEW_EVENTS:
            events, latest = [], self.bus.latest_replay_id(channel)
        elif option == ALL_EVENTS:
            events, latest = self.bus.snapshot(channel, None)
        elif _is_replay_id(option) and self.bus.is_valid_resume_point(channel, option):
            events, latest = self.bus.snapshot(channel, option)
        else:
            return _failure(message, _replay_invalid(option), session=session)
        session.subscriptions[channel] = latest
        for event in events:
            self._enqueue(session, event.message(channel))
        if events:
            session.wake.set()
        return _success(message, session=session, subscription=channel)

    def _unsubscribe(self, message: Message, session: _Session) -> Message:
        channel = message.get("subscription")
        session.subscriptions.pop(str(channel), None)
        return _success(message, session=session, subscription=channel)

    async def _connect(self, message: Message, token: str | None, browser: str) -> list[Message]:
        auth_error = self._auth_error(token)
        if auth_error is not None:
            return [_failure(message, auth_error, advice=_GIVE_UP)]
        session = self._session_of(message, browser)
        if session is None:
            return [_unknown_client(message)]
        connection_type = message.get("connectionType")
        if connection_type != LONG_POLLING:
            return [
                _failure(
                    message, f"400::Invalid connection type {connection_type}", session=session
                )
            ]
        if not session.connected:
            session.connected = True
            advice = {**_RETRY, "timeout": self.connect_timeout_ms}
            return self._reply(session, message, advice=advice)
        if not session.queue:
            if not await self._hold(session):
                # A newer connect of the same client took over; this one closes empty.
                return [_success(message, session=session)]
            if session.ended:
                return [_unknown_client(message)]
            # The token is checked again on the way out: a session whose token was revoked while
            # it waited learns so now, and its queued events wait for the re-authenticated retry.
            auth_error = self._auth_error(token)
            if auth_error is not None:
                self._release(session, delivered=False)
                return [_failure(message, auth_error, advice=_GIVE_UP, session=session)]
        return self._reply(session, message)

    async def _hold(self, session: _Session) -> bool:
        """Wait for events, the session's end or the advice timeout; False if superseded."""
        session.generation += 1
        generation = session.generation
        session.wake.set()
        session.wake = asyncio.Event()
        wake = session.wake
        session.polling = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), self.connect_timeout_ms / 1000)
        if session.generation != generation:
            return False
        session.polling = False
        return True

    def _reply(
        self, session: _Session, message: Message, *, advice: Message | None = None
    ) -> list[Message]:
        events = session.drain()
        self._release(session, delivered=bool(events))
        return [*events, _success(message, session=session, advice=advice)]

    def _release(self, session: _Session, *, delivered: bool) -> None:
        reconnect_ms = self.event_reconnect_ms if delivered else self.idle_reconnect_ms
        session.deadline = self._clock() + reconnect_ms / 1000

    def _auth_error(self, token: str | None) -> str | None:
        if token is None:
            return "401::Request requires authentication"
        if not self._is_valid_token(token):
            return "401::Authentication invalid"
        return None

    # ---- sessions and delivery ----------------------------------------------------------------

    def _expire_sessions(self) -> None:
        now = self._clock()
        for session in list(self._sessions.values()):
            if not session.polling and now > session.deadline:
                self._end(session)

    def _evict_one(self) -> None:
        idle = [s for s in self._sessions.values() if not s.polling] or list(
            self._sessions.values()
        )
        self._end(min(idle, key=lambda s: s.deadline))

    def _end(self, session: _Session) -> None:
        self._sessions.pop(session.client_id, None)
        session.end()

    def _enqueue(self, session: _Session, message: Message) -> None:
        # Bounded memory: a client that never polls loses the oldest, as it would on a real
        # org past its buffer; it can still replay them from the log.
        if len(session.queue) >= self._max_queued:
            session.queue.popleft()
        session.queue.append(message)

    def _on_event(self, event: StreamEvent) -> None:
        self._call_in_loop(lambda: self._deliver(event))

    def _deliver(self, event: StreamEvent) -> None:
        self._expire_sessions()
        for session in list(self._sessions.values()):
            queued = False
            for channel, replay_id in event.replay_ids.items():
                handled = session.subscriptions.get(channel)
                if handled is None or replay_id <= handled:
                    continue
                session.subscriptions[channel] = replay_id
                self._enqueue(session, event.message(channel))
                queued = True
            if queued:
                session.wake.set()

    def _call_in_loop(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the server's loop: sessions are only touched there."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            callback()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(callback)


def control_extra_routes(bus: EventBus) -> list[BaseRoute]:
    """Control routes for events the REST API cannot cause.

        POST /__emulator__/events/gap       {"entity", "changeType": "GAP_UPDATE", "recordIds"}
        POST /__emulator__/events/overflow  {"entity"}
        POST /__emulator__/events/change    {"entity", "changeType", "recordIds", "fields",
                                             "changedFields", "commitUser", "changeOrigin",
                                             "transactionKey", "sequenceNumber"} (last four
                                             optional)
        POST /__emulator__/events/platform  {"name", "fields", "createdById"}
        GET  /__emulator__/events           retained events, oldest first, and each channel's
                                            latest replay id (?channel= filters, and adds that
                                            channel's `latestReplayId`)

    Each POST answers 201 with the new event's `replayId` on its own channel (the object's
    `/data/<Entity>ChangeEvent`, or `/event/<Name>__e`), `replayIds` by channel, and `eventUuid`
    for a platform event. GET lists each event's `replayIds` by channel and its `data` (whose
    `event` carries no replay id: that is the channel's), and `latestReplayIds` by channel.
    """

    def published(event: StreamEvent) -> Message:
        return {"replayId": event.replay_id(event.channels[0]), "replayIds": dict(event.replay_ids)}

    async def gap(body: Message) -> Message:
        return published(
            bus.inject_gap(
                entity=_text(body, "entity"),
                change_type=_text(body, "changeType"),
                record_ids=_texts(body, "recordIds"),
            )
        )

    async def overflow(body: Message) -> Message:
        return published(bus.inject_overflow(entity=_text(body, "entity")))

    async def change(body: Message) -> Message:
        fields = body.get("fields", {})
        if not isinstance(fields, dict):
            raise ValueError("'fields' must be an object")
        sequence_number = body.get("sequenceNumber", 1)
        if not isinstance(sequence_number, int):
            raise ValueError("'sequenceNumber' must be an integer")
        event = bus.publish_change(
            entity=_text(body, "entity"),
            change_type=_text(body, "changeType"),
            record_ids=_texts(body, "recordIds"),
            fields=fields,
            changed_fields=_texts(body, "changedFields", default=[]),
            commit_user=_text(body, "commitUser", default="005000000000002AAA"),
            change_origin=_text(body, "changeOrigin", default=""),
            transaction_key=_text(body, "transactionKey", default=bus.new_transaction_key()),
            sequence_number=sequence_number,
        )
        return published(event)

    async def platform(body: Message) -> Message:
        fields = body.get("fields", {})
        if not isinstance(fields, dict):
            raise ValueError("'fields' must be an object")
        event = bus.publish_platform_event(
            name=_text(body, "name"),
            fields=fields,
            created_by=_text(body, "createdById", default="005000000000002AAA"),
        )
        return {"eventUuid": event.data["payload"]["EventUuid"], **published(event)}

    async def list_events(request: Request) -> Response:
        channel = request.query_params.get("channel")
        events = [e for e in bus.events() if channel is None or channel in e.replay_ids]
        reply: Message = {
            "latestReplayIds": bus.latest_replay_ids(),
            "events": [event.to_state() for event in events],
        }
        if channel is not None:
            reply["latestReplayId"] = bus.latest_replay_id(channel)
        return JSONResponse(reply)

    def post(path: str, handler: Callable[[Message], Awaitable[Message]]) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                body = json.loads(await request.body() or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                return JSONResponse(await handler(body), status_code=201)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)

        return Route(f"/__emulator__/events/{path}", endpoint, methods=["POST"])

    return [
        post("gap", gap),
        post("overflow", overflow),
        post("change", change),
        post("platform", platform),
        Route("/__emulator__/events", list_events, methods=["GET"]),
    ]


# ---- message helpers --------------------------------------------------------------------------


def _with_id(reply: Message, message: Message) -> Message:
    if "id" in message:
        reply["id"] = message["id"]
    return reply


def _success(
    message: Message,
    *,
    session: _Session | None = None,
    advice: Message | None = None,
    subscription: object = None,
) -> Message:
    reply: Message = {"channel": message["channel"], "successful": True}
    if session is not None:
        reply["clientId"] = session.client_id
    if advice is not None:
        reply["advice"] = advice
    if subscription is not None:
        reply["subscription"] = subscription
    return _with_id(reply, message)


def _unknown_client(message: Message) -> Message:
    """`403::Unknown client`: no `clientId` in the reply, the one asked about does not exist."""
    reply: Message = {
        "channel": message["channel"],
        "successful": False,
        "error": "403::Unknown client",
        "advice": dict(_HANDSHAKE_AGAIN),
    }
    if "subscription" in message:
        reply["subscription"] = message["subscription"]
    return _with_id(reply, message)


def _failure(
    message: Message,
    error: str,
    *,
    session: _Session | None = None,
    advice: Message | None = None,
    ext: Message | None = None,
) -> Message:
    reply: Message = {"channel": message["channel"], "successful": False, "error": error}
    client_id = session.client_id if session is not None else message.get("clientId")
    if client_id is not None:
        reply["clientId"] = client_id
    if "subscription" in message:
        reply["subscription"] = message["subscription"]
    if advice is not None:
        reply["advice"] = advice
    if ext is not None:
        reply["ext"] = ext
    return _with_id(reply, message)


def _requested_replay(message: Message, channel: str) -> object:
    """The replay option asked for `channel`: -1 (the default), -2, a replay id, or junk."""
    ext = message.get("ext")
    replay = ext.get("replay") if isinstance(ext, dict) else None
    if not isinstance(replay, dict) or channel not in replay:
        return NEW_EVENTS
    value = replay[channel]
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def _is_replay_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() not in ("bearer", "oauth") or not token.strip():
        return None
    return token.strip()


def _version_error(version: str) -> str | None:
    if _VERSION_RE.match(version) and float(version) >= _MIN_VERSION:
        return None
    return (
        "400::Unsupported API version. Only API versions '37.0' and above are supported. "
        "URI format: '/cometd/60.0'"
    )


def _random_id(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(_CLIENT_ID_ALPHABET) for _ in range(length))


def _text(body: Message, key: str, *, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or (not value and default is None):
        raise ValueError(f"'{key}' must be a non-empty string")
    return value


def _texts(body: Message, key: str, *, default: list[str] | None = None) -> list[str]:
    value = body.get(key, default)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"'{key}' must be a list of strings")
    return list(value)
