"""One Prometheus endpoint per worker: our own metrics and the Temporal SDK's, side by side.

The SDK's runtime exports its metrics (workflow and activity task latencies, slots, polls, and
the workflow's own counters from `workflow.metric_meter()`) through an HTTP server of its own;
it listens on a private loopback port, and the worker's `/metrics` (on `WORKER_METRICS_PORT`)
answers with prometheus_client's registry followed by the SDK's text, so one scrape target shows
everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import httpx
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from config.logging import get_logger

log = get_logger(__name__)


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sdk_runtime() -> tuple[Runtime, str]:
    """A Temporal runtime exporting its metrics on a private port; returns it and that URL."""
    port = _free_loopback_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"127.0.0.1:{port}",
                counters_total_suffix=True,
                durations_as_seconds=True,
            )
        )
    )
    return runtime, f"http://127.0.0.1:{port}/metrics"


def metrics_app(sdk_metrics_url: str | None) -> Starlette:
    async def metrics(_request: Request) -> Response:
        body = generate_latest(REGISTRY)
        if sdk_metrics_url is not None:
            try:
                # A connection per scrape (every few seconds at most): nothing to keep open.
                async with httpx.AsyncClient(timeout=2.0) as http:
                    reply = await http.get(sdk_metrics_url)
                body += b"\n" + reply.content
            except httpx.HTTPError as error:
                # Our own figures still answer when the SDK's exporter does not.
                log.warning("metrics.sdk_unavailable", error=type(error).__name__)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", metrics)])


class _QuietServer(uvicorn.Server):
    # The worker handles SIGTERM itself (graceful shutdown); uvicorn must not take the signal.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class MetricsServer:
    """`/metrics` on `host:port`, served from the worker's event loop."""

    def __init__(self, host: str, port: int, sdk_metrics_url: str | None) -> None:
        config = uvicorn.Config(
            metrics_app(sdk_metrics_url),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it (e.g. the port is taken)
                raise RuntimeError("metrics server stopped before it started")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
