"""The Salesforce emulator's Pub/Sub API (gRPC) through raw `grpc.aio` clients over TLS.

One bus feeds both transports: a change is one event on CometD and one on Pub/Sub, in the same
order, with the same changed fields (the Avro header's bitmaps decode to the CometD header's
names). Also: flow control, keepalives, replay presets and replay id validation, auth, the
control API's faults, publishing, and silence when keepalives are switched off.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from emulators.salesforce import avro
from emulators.salesforce.pubsub import encode_replay_id
from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle
from wire.pubsub import pubsub_api_pb2 as pb
from wire.pubsub.pubsub_api_pb2_grpc import PubSubStub

ORDERS = "/data/OrderChangeEvent"
ALL_CHANGES = "/data/ChangeEvents"
ELIGIBILITY = "/event/Account_Eligibility_Update__e"
AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
REPLAY_ERROR = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
WAIT = 3.0


def metadata(h: SalesforceEmulatorHandle, token: str | None = None) -> tuple[tuple[str, str], ...]:
    return (
        ("accesstoken", token if token is not None else h.login()),
        ("instanceurl", h.instance_url),
        ("tenantid", h.tenant_id),
    )


def trusted(h: SalesforceEmulatorHandle) -> bytes:
    return Path(h.ca_file).read_bytes()


@asynccontextmanager
async def pubsub(h: SalesforceEmulatorHandle) -> AsyncIterator[Any]:
    """A PubSubStub over TLS trusting the emulator's CA (typed Any: the stubs are untyped)."""
    assert h.pubsub_address is not None
    credentials = grpc.ssl_channel_credentials(trusted(h))
    async with aio.secure_channel(h.pubsub_address, credentials) as channel:
        yield PubSubStub(channel)


class Stream:
    """One Subscribe call: FetchRequests go in through `request`, responses come out of `next`.

    A read that times out stays pending for the next `next` (cancelling it would cancel the
    call). `close()` ends the requests and cancels the call; a stream that ended on its own
    is closed by `error()`.
    """

    def __init__(self, stub: Any, md: Any, topic: str, **first: Any) -> None:
        self.topic = topic
        self._requests: asyncio.Queue[pb.FetchRequest | None] = asyncio.Queue()
        self._requests.put_nowait(pb.FetchRequest(topic_name=topic, **first))
        self._reading: asyncio.Task[Any] | None = None
        self.call = stub.Subscribe(self._outgoing(), metadata=md)

    async def _outgoing(self) -> AsyncIterator[pb.FetchRequest]:
        while (request := await self._requests.get()) is not None:
            yield request

    def request(self, count: int, topic: str | None = None) -> None:
        name = self.topic if topic is None else topic
        self._requests.put_nowait(pb.FetchRequest(topic_name=name, num_requested=count))

    async def read(self, within: float = WAIT) -> Any:
        """The next response or `aio.EOF`; TimeoutError if none comes `within` seconds."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self.call.read())
        done, _ = await asyncio.wait({self._reading}, timeout=max(within, 0))
        if not done:
            raise TimeoutError
        reading, self._reading = self._reading, None
        return reading.result()

    async def next(self, within: float = WAIT) -> pb.FetchResponse:
        response = await self.read(within)
        assert response is not aio.EOF, "the stream ended"
        assert isinstance(response, pb.FetchResponse)
        return response

    async def events(self, count: int, within: float = WAIT) -> list[pb.ConsumerEvent]:
        """The next `count` events, across responses (keepalives skipped)."""
        events: list[pb.ConsumerEvent] = []
        deadline = time.monotonic() + within
        while len(events) < count:
            events.extend((await self.next(deadline - time.monotonic())).events)
        assert len(events) == count, f"{len(events)} events where {count} were requested"
        return events

    async def error(self, within: float = WAIT) -> aio.AioRpcError:
        """The status the stream ends with (responses before it are skipped)."""
        deadline = time.monotonic() + within
        try:
            with pytest.raises(aio.AioRpcError) as ended:
                while (await self.read(deadline - time.monotonic())) is not aio.EOF:
                    pass
        finally:
            await self.close()
        return ended.value

    async def close(self) -> None:
        self._requests.put_nowait(None)
        await asyncio.sleep(0.01)  # the request generator ends before the call goes
        self.call.cancel()


def trailers(error: aio.AioRpcError) -> dict[str, str]:
    return {str(k): str(v) for k, v in error.trailing_metadata() or ()}


def decode(event: pb.ConsumerEvent) -> tuple[avro.TopicSchema, dict[str, Any]]:
    found = avro.schema_by_id(event.event.schema_id)
    assert found is not None
    return found, found.decode(event.event.payload)


def changed_names(event: pb.ConsumerEvent, key: str = "changedFields") -> list[str]:
    found, record = decode(event)
    return avro.field_names(found.schema, record["ChangeEventHeader"][key])


async def publish(stub: Any, md: Any, *account_ids: str) -> list[bytes]:
    """Publish one eligibility event per account id over Pub/Sub; their replay ids."""
    topic = await stub.GetTopic(pb.TopicRequest(topic_name=ELIGIBILITY), metadata=md)
    found = avro.schema_by_id(topic.schema_id)
    assert found is not None
    events = [
        pb.ProducerEvent(
            id=f"evt-{i}",
            schema_id=topic.schema_id,
            payload=found.encode(
                {"CreatedDate": 0, "CreatedById": "005000000000000AAA", "Account_Id__c": account}
            ),
        )
        for i, account in enumerate(account_ids)
    ]
    replay_ids: list[bytes] = []
    for start in range(0, len(events), 200):
        request = pb.PublishRequest(topic_name=ELIGIBILITY, events=events[start : start + 200])
        reply = await stub.Publish(request, metadata=md)
        assert all(not r.HasField("error") for r in reply.results), reply
        replay_ids.extend(r.replay_id for r in reply.results)
    return replay_ids


def accounts(event: pb.ConsumerEvent) -> str:
    _, record = decode(event)
    return str(record["Account_Id__c"])


# ---- topics and schemas ---------------------------------------------------------------------


async def test_get_topic_and_get_schema(sf_emulator: SalesforceEmulatorHandle) -> None:
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        orders = await stub.GetTopic(pb.TopicRequest(topic_name=ORDERS), metadata=md)
        event = await stub.GetTopic(pb.TopicRequest(topic_name=ELIGIBILITY), metadata=md)
        all_changes = await stub.GetTopic(pb.TopicRequest(topic_name=ALL_CHANGES), metadata=md)
        info = await stub.GetSchema(pb.SchemaRequest(schema_id=orders.schema_id), metadata=md)
        with pytest.raises(aio.AioRpcError) as unknown_topic:
            await stub.GetTopic(pb.TopicRequest(topic_name="/data/NopeChangeEvent"), metadata=md)
        with pytest.raises(aio.AioRpcError) as unknown_schema:
            await stub.GetSchema(pb.SchemaRequest(schema_id="not-a-schema"), metadata=md)

    assert orders.can_subscribe and not orders.can_publish
    assert event.can_subscribe and event.can_publish
    assert orders.tenant_guid == sf_emulator.tenant_id and orders.rpc_id
    assert len(orders.schema_id) == 22 and orders.schema_id != event.schema_id
    assert all_changes.can_subscribe and all_changes.schema_id == ""
    assert info.schema_id == orders.schema_id
    schema = json.loads(info.schema_json)
    assert schema["name"] == "OrderChangeEvent"
    assert schema["fields"][0]["name"] == "ChangeEventHeader"
    assert unknown_topic.value.code() == grpc.StatusCode.NOT_FOUND
    assert "error-code" in trailers(unknown_topic.value)
    assert unknown_schema.value.code() == grpc.StatusCode.NOT_FOUND


# ---- one bus, two transports ----------------------------------------------------------------


async def test_order_changes_are_one_event_each_on_cometd_and_pubsub_in_the_same_order(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf: Any = sf_emulator.client()
    bayeux = sf_emulator.bayeux()
    bayeux.handshake()
    assert bayeux.subscribe(ORDERS, replay=-1)["successful"] is True
    bayeux.connect()  # the first connect answers at once
    esim, internet = ids["orders"]["esim"], ids["orders"]["internet"]
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        stream = Stream(stub, md, ORDERS, replay_preset=pb.ReplayPreset.LATEST, num_requested=10)
        await asyncio.sleep(0.2)  # subscribed before the changes
        sf.Order.update(esim, {"BillingCity": "Meguro-ku", "Description": "moved"})
        sf.Order.update(esim, {"Description": None, "BillingStreet": None})
        sf.Order.update(internet, {"Status": "Activated"})
        grpc_events = await stream.events(3)
        await stream.close()
    cometd = [m for m in bayeux.connect() if m["channel"] == ORDERS]

    assert len(cometd) == 3
    for message, event in zip(cometd, grpc_events, strict=True):
        cometd_header = message["data"]["payload"]["ChangeEventHeader"]
        _, record = decode(event)
        header = record["ChangeEventHeader"]
        assert header["recordIds"] == cometd_header["recordIds"]
        assert header["changeType"] == cometd_header["changeType"] == "UPDATE"
        assert header["commitNumber"] == cometd_header["commitNumber"]
        assert sorted(changed_names(event)) == sorted(cometd_header["changedFields"])
        assert header["diffFields"] == []
        assert event.replay_id == encode_replay_id(ORDERS, message["data"]["event"]["replayId"])
    assert [e.event.id for e in grpc_events] == list(dict.fromkeys(e.event.id for e in grpc_events))

    moved, nulled, activated = (decode(e)[1] for e in grpc_events)
    assert {"BillingAddress.City", "Description"} <= set(changed_names(grpc_events[0]))
    assert moved["BillingAddress"]["City"] == "Meguro-ku"
    assert moved["BillingAddress"]["Street"] is None and moved["Description"] == "moved"
    assert moved["AccountId"] is None  # not in the event: null
    assert sorted(changed_names(grpc_events[1], "nulledFields")) == [
        "BillingAddress.Street",
        "Description",
    ]
    assert nulled["Description"] is None
    assert activated["Status"] == "Activated"
    assert changed_names(grpc_events[2], "nulledFields") == []


async def test_a_published_platform_event_reaches_cometd_subscribers_too(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    bayeux = sf_emulator.bayeux()
    bayeux.handshake()
    assert bayeux.subscribe(ELIGIBILITY, replay=-1)["successful"] is True
    bayeux.connect()
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        [replay_id] = await publish(stub, md, "001000000000001AAA")
        topic = await stub.GetTopic(pb.TopicRequest(topic_name=ELIGIBILITY), metadata=md)
        bad = await stub.Publish(
            pb.PublishRequest(
                topic_name=ELIGIBILITY,
                events=[
                    pb.ProducerEvent(id="a", schema_id="wrong", payload=b""),
                    pb.ProducerEvent(id="b", schema_id=topic.schema_id, payload=b"\xff\xff"),
                ],
            ),
            metadata=md,
        )
        with pytest.raises(aio.AioRpcError) as refused:
            await stub.Publish(pb.PublishRequest(topic_name=ORDERS), metadata=md)
    [message] = [m for m in bayeux.connect() if m["channel"] == ELIGIBILITY]

    assert message["data"]["payload"]["Account_Id__c"] == "001000000000001AAA"
    assert message["data"]["payload"]["CreatedById"].startswith("005")
    assert replay_id == encode_replay_id(ELIGIBILITY, message["data"]["event"]["replayId"])
    assert [r.error.code for r in bad.results] == [pb.ErrorCode.PUBLISH] * 2
    assert [r.correlation_key for r in bad.results] == ["a", "b"]
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_change_events_topic_carries_each_event_in_its_objects_schema(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf: Any = sf_emulator.client()
    sf.Order.update(ids["orders"]["esim"], {"Description": "checked"})
    retained = sf_emulator.control("GET", f"events?channel={ALL_CHANGES}")["events"]
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        orders = await stub.GetTopic(pb.TopicRequest(topic_name=ORDERS), metadata=md)
        stream = Stream(
            stub, md, ALL_CHANGES, replay_preset=pb.ReplayPreset.EARLIEST, num_requested=10
        )
        [event] = await stream.events(1)
        await stream.close()

    assert event.event.schema_id == orders.schema_id
    assert event.replay_id == encode_replay_id(ALL_CHANGES, retained[0]["replayIds"][ALL_CHANGES])
    assert "Description" in changed_names(event)


# ---- flow control, keepalives, replay -------------------------------------------------------


async def test_flow_control_sends_exactly_what_was_requested(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    sf_emulator.control("POST", "config", {"pubsub_keepalive_seconds": 0.2})
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        published = await publish(stub, md, *(f"001{i:015d}" for i in range(250)))
        stream = Stream(stub, md, ELIGIBILITY, replay_preset=pb.ReplayPreset.EARLIEST)
        stream.request(100)
        first: list[pb.ConsumerEvent] = []
        while len(first) < 100:
            response = await stream.next()
            first.extend(response.events)
            if response.events:
                assert response.latest_replay_id == response.events[-1].replay_id
        assert response.pending_num_requested == 0
        quiet = await stream.next()  # a keepalive, with nothing more
        stream.request(50)
        second = await stream.events(50)
        await stream.close()

    assert len(first) == 100 and not quiet.events and quiet.pending_num_requested == 0
    assert [e.replay_id for e in first + second] == published[:150]
    assert [accounts(e) for e in second] == [f"001{i:015d}" for i in range(100, 150)]


async def test_keepalives_carry_the_topics_newest_replay_id_even_with_nothing_requested(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    sf_emulator.control("POST", "config", {"pubsub_keepalive_seconds": 0.3})
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        [newest] = await publish(stub, md, "001000000000001AAA")
        stream = Stream(stub, md, ELIGIBILITY, replay_preset=pb.ReplayPreset.LATEST)
        started = time.monotonic()
        keepalive = await stream.next()
        took = time.monotonic() - started
        await stream.close()

    assert not keepalive.events and keepalive.latest_replay_id == newest
    assert keepalive.pending_num_requested == 0 and keepalive.rpc_id
    assert 0.2 < took < 1.5


async def test_replay_presets_latest_earliest_and_custom(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        one, _two, _three = await publish(stub, md, "A1", "A2", "A3")
        earliest = Stream(
            stub, md, ELIGIBILITY, replay_preset=pb.ReplayPreset.EARLIEST, num_requested=10
        )
        custom = Stream(
            stub,
            md,
            ELIGIBILITY,
            replay_preset=pb.ReplayPreset.CUSTOM,
            replay_id=one,
            num_requested=10,
        )
        latest = Stream(
            stub, md, ELIGIBILITY, replay_preset=pb.ReplayPreset.LATEST, num_requested=10
        )
        retained = await earliest.events(3)
        after_one = await custom.events(2)
        await asyncio.sleep(0.2)
        await publish(stub, md, "A4")
        new = await latest.events(1)
        for stream in (earliest, custom, latest):
            await stream.close()

    assert [accounts(e) for e in retained] == ["A1", "A2", "A3"]
    assert [accounts(e) for e in after_one] == ["A2", "A3"]
    assert [accounts(e) for e in new] == ["A4"]


@pytest.mark.parametrize("kind", ["malformed", "other topic", "too new", "forgotten"])
async def test_a_bad_custom_replay_id_ends_the_stream_with_invalid_argument(
    sf_emulator: SalesforceEmulatorHandle, kind: str
) -> None:
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        replay_id, newest_id = await publish(stub, md, "A1", "A2")
        newest = int.from_bytes(newest_id[4:], "big")
        if kind == "forgotten":
            # Without a seed the numbering goes on and what was published is forgotten: A2 is
            # still a valid resume point (nothing after it is missing), A1 no more.
            sf_emulator.control("POST", "reset", {})
        bad = {
            "malformed": b"12345",
            "other topic": encode_replay_id(ORDERS, newest),
            "too new": encode_replay_id(ELIGIBILITY, newest + 1000),
            "forgotten": replay_id,
        }[kind]
        stream = Stream(stub, md, ELIGIBILITY, replay_preset=pb.ReplayPreset.CUSTOM, replay_id=bad)
        error = await stream.error()

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(
        "The Replay ID validation failed. Ensure that the Replay ID is valid. rpcId: "
    )
    assert trailers(error)["error-code"] == REPLAY_ERROR and trailers(error)["rpc-id"]


async def test_a_later_fetch_request_for_another_topic_is_refused(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        stream = Stream(stub, md, ELIGIBILITY, num_requested=1)
        stream.request(1, topic=ORDERS)
        error = await stream.error()

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_stream_with_nothing_requested_closes_when_idle(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    sf_emulator.control(
        "POST", "config", {"pubsub_keepalive_seconds": 0.1, "pubsub_idle_close_seconds": 0.4}
    )
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        stream = Stream(stub, md, ELIGIBILITY, num_requested=0)
        started = time.monotonic()
        responses = 0
        while (await stream.read()) is not aio.EOF:
            responses += 1
        took = time.monotonic() - started
        await stream.close()

    assert await stream.call.code() == grpc.StatusCode.OK
    assert responses >= 2 and 0.3 < took < 2


async def test_with_keepalives_off_open_streams_send_nothing(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    sf_emulator.control(
        "POST", "config", {"pubsub_keepalive_seconds": 0.1, "pubsub_keepalives": False}
    )
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        stream = Stream(stub, md, ELIGIBILITY, num_requested=5)
        await asyncio.sleep(0.1)
        await publish(stub, md, "A1")
        with pytest.raises(TimeoutError):
            await stream.next(within=0.6)
        sf_emulator.control("POST", "config", {"pubsub_keepalives": True})
        [event] = await stream.events(1)
        await stream.close()

    assert accounts(event) == "A1"


# ---- auth and the control API ---------------------------------------------------------------


async def test_calls_without_valid_auth_are_unauthenticated(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    request = pb.TopicRequest(topic_name=ORDERS)
    async with pubsub(sf_emulator) as stub:
        refusals = []
        for md in (
            (),
            metadata(sf_emulator, token="00D!not-a-token"),
            metadata(sf_emulator)[:2],  # no tenantid
            (*metadata(sf_emulator)[:2], ("tenantid", "00D000000000000AAA")),
        ):
            with pytest.raises(aio.AioRpcError) as refused:
                await stub.GetTopic(request, metadata=md)
            refusals.append(refused.value)

    for error in refusals:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details().startswith(
            "An authentication exception occurred. Provide valid authentication via metadata "
            "headers. rpcId: "
        )
        assert trailers(error)["error-code"] == AUTH_ERROR
        assert error.details().endswith(trailers(error)["rpc-id"])


async def test_expiring_tokens_ends_open_streams_and_refuses_the_next_call(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        stream = Stream(stub, md, ORDERS, num_requested=1)
        await asyncio.sleep(0.2)
        sf_emulator.control("POST", "tokens/expire")
        ended = await stream.error()
        with pytest.raises(aio.AioRpcError) as refused:
            await stub.GetTopic(pb.TopicRequest(topic_name=ORDERS), metadata=md)

    for error in (ended, refused.value):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert trailers(error)["error-code"] == AUTH_ERROR


async def test_dropping_sessions_ends_open_streams_with_unavailable(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        streams = [Stream(stub, md, topic, num_requested=1) for topic in (ORDERS, ELIGIBILITY)]
        await asyncio.sleep(0.2)
        dropped = sf_emulator.control("POST", "sessions/drop")
        errors = [await stream.error() for stream in streams]
        # The API itself stays up: a new call is answered.
        topic = await stub.GetTopic(pb.TopicRequest(topic_name=ORDERS), metadata=md)

    assert dropped["dropped"] == 2 and topic.can_subscribe
    for error in errors:
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details().startswith("RST_STREAM closed stream")


async def subscriptions(
    h: SalesforceEmulatorHandle, until: Callable[[list[Any]], Any] = bool
) -> list[Any]:
    """The control API's open Subscribe streams, once `until(them)` holds (within WAIT)."""
    deadline = time.monotonic() + WAIT
    while True:
        listed: list[Any] = h.control("GET", "pubsub/subscriptions")["subscriptions"]
        if until(listed) or time.monotonic() > deadline:
            return listed
        await asyncio.sleep(0.05)


async def test_the_control_api_lists_open_streams_and_their_flow_control(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    sf_emulator.control("POST", "config", {"pubsub_keepalive_seconds": 0.3})
    md = metadata(sf_emulator)
    async with pubsub(sf_emulator) as stub:
        await publish(stub, md, "A1", "A2", "A3", "A4", "A5")
        before = time.time()
        stream = Stream(
            stub, md, ELIGIBILITY, replay_preset=pb.ReplayPreset.EARLIEST, num_requested=3
        )
        await stream.events(3)
        first = await subscriptions(sf_emulator, lambda s: s and s[0]["sent"] == 3)
        stream.request(4)
        await stream.events(2)  # all that is left
        keepalive = await stream.next()
        second = await subscriptions(sf_emulator, lambda s: s and s[0]["keepalives"] >= 1)
        await stream.close()
        gone = await subscriptions(sf_emulator, lambda s: not s)

    [opened] = first
    assert opened["topic"] == ELIGIBILITY and opened["rpc_id"]
    assert (opened["requested"], opened["sent"], opened["pending"]) == (3, 3, 0)
    assert opened["max_outstanding"] == 3 and opened["keepalives"] == 0
    assert before - 1 <= opened["opened_at"] <= time.time()
    assert not keepalive.events
    [later] = second
    assert (later["requested"], later["sent"], later["pending"]) == (7, 5, 2)
    assert later["max_outstanding"] == 4 and later["keepalives"] >= 1
    assert later["opened_at"] == opened["opened_at"]
    assert gone == []


async def test_faults_match_the_grpc_method_path(sf_emulator: SalesforceEmulatorHandle) -> None:
    md = metadata(sf_emulator)
    request = pb.TopicRequest(topic_name=ORDERS)
    sf_emulator.control(
        "POST", "faults", {"kind": "latency", "ms": 400, "path": "/eventbus.v1.PubSub/GetTopic"}
    )
    sf_emulator.control(
        "POST", "faults", {"kind": "fail", "count": 1, "path": "/eventbus.v1.PubSub/GetSchema"}
    )
    async with pubsub(sf_emulator) as stub:
        started = time.monotonic()
        topic = await stub.GetTopic(request, metadata=md)
        slow = time.monotonic() - started
        with pytest.raises(aio.AioRpcError) as failed:
            await stub.GetSchema(pb.SchemaRequest(schema_id=topic.schema_id), metadata=md)
        await stub.GetSchema(pb.SchemaRequest(schema_id=topic.schema_id), metadata=md)
    logged = sf_emulator.control("GET", "requests?path=/eventbus.v1.PubSub/")["requests"]

    assert slow >= 0.4
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [(r["path"], r["status"]) for r in logged] == [
        ("/eventbus.v1.PubSub/GetTopic", 200),
        ("/eventbus.v1.PubSub/GetSchema", 503),
        ("/eventbus.v1.PubSub/GetSchema", 200),
    ]
