"""What every request goes through, outermost first, as plain ASGI (no task groups, so an error
raised while a body streams in reaches its handler as itself, never wrapped):

- `Hardened`: counts every response in `fulfillment_api_requests_total`, 5xx and refusals made
  before routing included (a request that raises is counted as the 500 it becomes), labelled
  with a known method (others `OTHER`) and the route's template, never the raw path, so no
  client can grow `/metrics`; adds `X-Content-Type-Options: nosniff` to every response and
  `Cache-Control: no-store` to every private one that says nothing else; answers HEAD on GET
  routes; refuses a request with two `Authorization` headers.
- `BodyLimit`: 413 for a body over the cap (by Content-Length, or while it streams in), 408 for a
  client that stops sending its body.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors

REQUESTS = Counter(
    "fulfillment_api_requests",
    "HTTP requests by method, route template and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "fulfillment_api_request_duration_seconds",
    "HTTP request latency by method and route template",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Responses anyone may cache (the public catalog sets its own Cache-Control).
_PUBLIC = ("/api/public/", "/api/health", "/metrics", "/api/openapi.json", "/api/docs")
# The docs page (API_DOCS only) runs Swagger UI from its CDN and nothing else.
_DOCS_POLICY = (
    b"default-src 'none'; script-src https://cdn.jsdelivr.net 'unsafe-inline'; "
    b"style-src https://cdn.jsdelivr.net; img-src https://fastapi.tiangolo.com data:; "
    b"connect-src 'self'; frame-ancestors 'none'"
)


class Hardened:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        head = scope["method"] == "HEAD"
        status = 500
        private = not scope["path"].startswith(_PUBLIC)

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.append((b"x-content-type-options", b"nosniff"))
                if private and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                if scope["path"] == "/api/docs":
                    headers.append((b"content-security-policy", _DOCS_POLICY))
                message = {**message, "headers": headers}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        authorizations = [n for n, _ in scope.get("headers", []) if n.lower() == b"authorization"]
        try:
            if len(authorizations) > 1:
                reply = errors.error_response(
                    400, "bad_request", "one Authorization header, not several"
                )
                await reply(scope, receive, sending)
            else:
                # HEAD is a GET without the body: routes declare GET only.
                inner = {**scope, "method": "GET"} if head else scope
                await self.app(inner, receive, sending)
                scope["route"] = inner.get("route")
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            LATENCY.labels(method, route).observe(time.perf_counter() - started)
            REQUESTS.labels(method, route, str(status)).inc()


class BodyLimit:
    """413 for a body over `limit` bytes, by Content-Length or while it streams in; 408 when the
    client stops sending it for `idle` seconds."""

    def __init__(self, app: ASGIApp, *, limit: int, idle: float) -> None:
        self.app = app
        self.limit = limit
        self.idle = idle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await errors.error_response(413, "payload_too_large", "request body too large")(
                scope, receive, send
            )
            return
        seen = 0
        complete = False

        async def limited() -> Message:
            nonlocal seen, complete
            if complete:
                # Past the body, receive only waits for the client to go: no deadline then.
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=self.idle)
            except TimeoutError:
                raise errors.ApiError(
                    408, "request_timeout", "the request body stopped arriving"
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise errors.ApiError(413, "payload_too_large", "request body too large")
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, limited, send)
