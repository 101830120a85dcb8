"""The request log counts each test's own requests, whatever was still in flight before it."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from emulators.common.requestlog import RequestLog, RequestLogMiddleware


def _scope(path: str) -> Scope:
    return {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": []}


async def _ignore(_message: Message) -> None:
    return None


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_a_request_in_flight_when_the_log_is_cleared_is_not_counted_afterwards() -> None:
    release = asyncio.Event()

    async def slow_app(_scope: Scope, _receive: Receive, send: Send) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    log = RequestLog()
    app = RequestLogMiddleware(slow_app, log)
    in_flight = asyncio.create_task(app(_scope("/slow"), _no_body, _ignore))
    await asyncio.sleep(0)
    log.clear()  # a new test starts counting here
    release.set()
    await in_flight
    await app(_scope("/fresh"), _no_body, _ignore)
    assert [record.path for record in log.entries()] == ["/fresh"]


async def test_a_client_that_left_before_its_body_is_recorded_as_499() -> None:
    from starlette.requests import Request

    async def reads_body(scope: Scope, receive: Receive, _send: Send) -> None:
        await Request(scope, receive).body()

    async def disconnect() -> Message:
        return {"type": "http.disconnect"}

    log = RequestLog()
    await RequestLogMiddleware(reads_body, log)(
        _scope("/services/data/v60.0/query/"), disconnect, _ignore
    )
    assert [(r.path, r.status) for r in log.entries()] == [("/services/data/v60.0/query/", 499)]
