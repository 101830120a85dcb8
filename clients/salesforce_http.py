"""Running simple-salesforce's blocking `requests` calls from asyncio, abortably.

simple-salesforce is synchronous, so each call runs on a bounded thread pool. A thread cannot be
interrupted, but its socket can: every connection the pool opens registers its socket with the
call that uses it, and a cancelled call (its activity cancelled, or its deadline passed) shuts
that socket down, so the blocked read returns at once and the thread is free for the next call
instead of waiting out a read timeout.

`requests_error` maps every `requests` failure onto the taxonomy, split by whether the request
could have reached Salesforce.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPSConnection
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError

from clients.errors import (
    ClientError,
    ConfigurationError,
    OutcomeUnknownError,
    System,
    TransientError,
    UnrecognisedError,
)

T = TypeVar("T")


class _CallSockets:
    """The sockets one call's requests used; `abort` shuts them down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._aborted = False

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if not self._aborted:
                return
        _shutdown(sock)

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Current(threading.local):
    call: _CallSockets | None = None


_current = _Current()


class _TrackedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self._track()

    def request(self, *args: Any, **kwargs: Any) -> None:
        # A kept-alive connection does not connect again: register it for this call too.
        self._track()
        super().request(*args, **kwargs)

    def _track(self) -> None:
        call = _current.call
        if call is not None and self.sock is not None:
            call.add(self.sock)


class _TrackedHTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _TrackingAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            **self.poolmanager.pool_classes_by_scheme,
            "https": _TrackedHTTPSConnectionPool,
        }


def abortable_session(pool_size: int) -> requests.Session:
    """A session whose HTTPS sockets a cancelled call can shut down; `pool_size` connections."""
    session = requests.Session()
    session.mount("https://", _TrackingAdapter(pool_connections=1, pool_maxsize=pool_size))
    return session


async def run_abortably(executor: ThreadPoolExecutor, call: Callable[[], T]) -> T:
    """Run `call` on `executor`; if the awaiting task is cancelled, abort its sockets."""
    sockets = _CallSockets()

    def run() -> T:
        _current.call = sockets
        try:
            return call()
        finally:
            _current.call = None

    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(executor, functools.partial(run))
    except asyncio.CancelledError:
        sockets.abort()
        raise


def requests_error(exc: requests.RequestException, *, write: bool) -> ClientError:
    """The taxonomy error for a `requests` failure: never sent, outcome unknown, or ours."""
    system = System.SALESFORCE
    if isinstance(exc, requests.exceptions.SSLError):
        return ConfigurationError(system, "TLS verification failed (check SF_CA_FILE)")
    if isinstance(exc, requests.exceptions.ConnectTimeout) or _never_connected(exc):
        return TransientError(system, "connection failed", detail=type(exc).__name__)
    if isinstance(
        exc,
        requests.exceptions.InvalidURL
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema
        | requests.exceptions.TooManyRedirects,
    ):
        return ConfigurationError(system, "request refused locally", detail=type(exc).__name__)
    # Everything else happened after the request may have gone out: a read timeout, a reset,
    # a truncated or undecodable reply.
    if write:
        return OutcomeUnknownError(
            system, "reply lost after the request was sent", detail=type(exc).__name__
        )
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        return UnrecognisedError(system, "reply is not JSON")
    kind = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "failed"
    return TransientError(system, f"request {kind}", detail=type(exc).__name__)


def _never_connected(exc: requests.RequestException) -> bool:
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, NewConnectionError | NameResolutionError)
