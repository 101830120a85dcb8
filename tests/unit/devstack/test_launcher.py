"""`fulfillment dev` plans the whole stack first, so every port is checked before anything runs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devstack.launcher import Launcher, _parser, check_ports
from devstack.process import ServiceError, free_port


def claims(dev_dir: Path, *flags: str, **environ: str) -> dict[str, tuple[int, ...]]:
    args = _parser().parse_args(["--dir", str(dev_dir), "--free-ports", *flags])
    launcher = Launcher(args, environ)
    return {step.name: step.ports for step in launcher.plan() if step.ports}


def test_every_server_the_stack_runs_claims_its_ports(tmp_path: Path) -> None:
    planned = claims(tmp_path)
    assert list(planned) == [
        "Temporal",
        "Postgres",
        "Redis",
        "salesforce-emulator",
        "whmcs-emulator",
        "freebit-emulator",
        "worker",
        "listener",
        "api",
    ]
    assert len(planned["Temporal"]) == 2, "the frontend and the Web UI"
    assert len(planned["salesforce-emulator"]) == 2, "the REST and the Pub/Sub API"
    every = [port for ports in planned.values() for port in ports]
    assert len(set(every)) == len(every) == 11


def test_servers_given_by_url_or_left_out_claim_no_port(tmp_path: Path) -> None:
    planned = claims(
        tmp_path,
        "--no-emulators",
        DATABASE_URL="postgresql://somewhere/fulfillment",
        REDIS_URL="redis://somewhere/0",
    )
    # The API needs no upstream: it runs on the servers alone.
    assert list(planned) == ["Temporal", "api"]


def test_two_parts_given_one_port_are_refused_naming_both(tmp_path: Path) -> None:
    port = free_port()
    args = _parser().parse_args(
        ["--dir", str(tmp_path), "--redis-port", str(port), "--whmcs-port", str(port)]
    )
    launcher = Launcher(args, {})
    steps = launcher.plan()
    with pytest.raises(ServiceError) as refused:
        check_ports([(s.name, p) for s in steps for p in s.ports], launcher.ports)
    assert str(refused.value) == (
        f"Redis and whmcs-emulator both want port 127.0.0.1:{port}; give one of them another "
        f"port (--redis-port N, DEV_REDIS_PORT=N or --whmcs-port N, DEV_WHMCS_PORT=N or "
        "--free-ports)"
    )


def test_a_taken_port_is_refused_naming_the_part_and_how_to_move_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = _parser().parse_args(["--dir", str(tmp_path), "--temporal-ui-port", str(port)])
        launcher = Launcher(args, {})
        with pytest.raises(ServiceError) as refused:
            check_ports([("Temporal", launcher.ports.temporal_ui)], launcher.ports)
    assert str(refused.value) == (
        f"Temporal: port 127.0.0.1:{port} is already in use; choose another port "
        "(--temporal-ui-port N, DEV_TEMPORAL_UI_PORT=N or --free-ports)"
    )
