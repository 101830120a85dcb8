"""Running an emulator app: `serve` (blocking, for the CLI) and `ThreadedServer` (for tests).

    with ThreadedServer(app) as server:          # free port on 127.0.0.1, ready on return
        httpx.post(f"{server.base_url}/includes/api.php", data=...)

    serve(app, host="127.0.0.1", port=8702)      # until SIGINT/SIGTERM, then a clean shutdown

Both pass `ssl_certfile`/`ssl_keyfile` to uvicorn for TLS (`base_url` is then https://).

When shutdown begins, before uvicorn waits for requests in flight, every callable listed in the
app's `app.state.on_server_shutdown` is called: the emulator app shell registers the release of
replies a "hang" fault is holding there, so a held request never delays a stop.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterable
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_START_TIMEOUT = 10.0


class _Server(uvicorn.Server):
    # uvicorn re-raises the captured signal after shutting down, which turns Ctrl-C into a
    # KeyboardInterrupt traceback and SIGTERM into death by signal; an emulator should just exit 0.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in _HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = getattr(self.config.app, "state", None)
        hooks: Iterable[Callable[[], object]] = getattr(state, "on_server_shutdown", ())
        for hook in hooks:
            hook()
        await super().shutdown(sockets=sockets)


def _config(
    app: ASGIApp, host: str, port: int, ssl_certfile: str | None, ssl_keyfile: str | None
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )


def serve(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> None:
    """Serve `app` until SIGINT or SIGTERM, then shut down cleanly (lifespan shutdown runs)."""
    _Server(_config(app, host, port, ssl_certfile, ssl_keyfile)).run()


class ThreadedServer:
    """Runs an ASGI app with uvicorn on a background thread; for tests and embedded use."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._tls = ssl_certfile is not None
        self._config = _config(app, host, port, ssl_certfile, ssl_keyfile)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = port

    @property
    def base_url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> ThreadedServer:
        """Bind, start serving, and return once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        # Binding here, before the thread starts, gives the port to the caller without a race.
        # proto must be IPPROTO_TCP explicitly: asyncio only disables Nagle on accepted sockets
        # whose proto says TCP, and with Nagle on every response waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(128)
        sock.set_inheritable(True)
        self._socket = sock
        self.port = sock.getsockname()[1]
        server = _Server(self._config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"emulator:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive():
                raise RuntimeError("emulator server thread exited during startup")
            if time.monotonic() > deadline:
                raise RuntimeError("emulator server did not start in time")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Ask the server to finish (running lifespan shutdown) and wait for the thread."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=_START_TIMEOUT)
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
