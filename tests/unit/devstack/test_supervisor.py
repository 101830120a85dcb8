"""The supervisor's restart policy, with cheap real child processes and a hand-driven clock."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from devstack.process import ServiceError, group_alive, live_children
from devstack.supervisor import Backoff, Component, Supervisor


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def wait_exit(supervisor: Supervisor, name: str) -> None:
    process = supervisor.process(name)
    assert process is not None
    process.popen.wait(timeout=10)


CRASHING = python("import sys; print('cannot reach the database', flush=True); sys.exit(3)")


def test_backoff_grows_exponentially_up_to_its_cap() -> None:
    backoff = Backoff(initial=0.5, factor=2.0, maximum=3.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_dying_child_is_restarted_after_growing_delays_saying_why(tmp_path: Path) -> None:
    said: list[str] = []
    clock = FakeClock()
    supervisor = Supervisor(
        tmp_path, say=said.append, backoff=Backoff(initial=1.0, factor=2.0), clock=clock
    )
    first = supervisor.start(Component("worker", CRASHING))
    wait_exit(supervisor, "worker")

    supervisor.check()
    assert "worker exited with exit code 3; restarting in 1.0s" in said[-1]
    assert "cannot reach the database" in said[-1]
    assert supervisor.process("worker") is None
    assert supervisor.next_due() == 1.0

    clock.now += 0.9
    supervisor.check()
    assert supervisor.process("worker") is None, "restarted before its delay was over"

    clock.now += 0.1
    supervisor.check()
    second = supervisor.process("worker")
    assert second is not None and second.pid != first.pid
    assert supervisor.restarts("worker") == 1

    wait_exit(supervisor, "worker")
    supervisor.check()
    assert "restarting in 2.0s" in said[-1]
    supervisor.stop_all()


def test_a_child_that_ran_long_enough_restarts_from_the_initial_delay(tmp_path: Path) -> None:
    said: list[str] = []
    clock = FakeClock()
    supervisor = Supervisor(
        tmp_path, say=said.append, backoff=Backoff(initial=1.0, reset_after=60.0), clock=clock
    )
    supervisor.start(Component("listener", CRASHING))
    for _ in range(2):
        wait_exit(supervisor, "listener")
        supervisor.check()
        clock.now += 10
        supervisor.check()
    assert "restarting in 2.0s" in said[-2]

    wait_exit(supervisor, "listener")
    clock.now += 60  # it "ran" for a minute before this exit
    supervisor.check()
    assert "restarting in 1.0s" in said[-1]
    supervisor.stop_all()


def test_a_component_that_is_not_restartable_stays_down(tmp_path: Path) -> None:
    said: list[str] = []
    supervisor = Supervisor(tmp_path, say=said.append)
    supervisor.start(Component("seed", python("import sys; sys.exit(0)"), restartable=False))
    wait_exit(supervisor, "seed")
    supervisor.check()
    assert said == [
        f"seed exited with exit code 0; it is not restarted (log {tmp_path / 'seed.log'})"
    ]
    assert supervisor.next_due() is None


def test_a_component_that_never_gets_ready_fails_with_its_log(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path)
    never = Component(
        "api",
        python("import time; print('binding 127.0.0.1:1', flush=True); time.sleep(60)"),
        ready=lambda: False,
        ready_timeout=0.5,
    )
    with pytest.raises(ServiceError, match="api was not ready after") as error:
        supervisor.start(never)
    assert "binding 127.0.0.1:1" in str(error.value)
    assert not [c for c in live_children() if c.name == "api"], "the unready child is stopped"


def test_stop_all_kills_a_child_that_ignores_sigterm_with_its_own_children(
    tmp_path: Path,
) -> None:
    stubborn = python(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "stubborn.log"
    supervisor = Supervisor(tmp_path)
    process = supervisor.start(
        Component(
            "stubborn",
            stubborn,
            ready=lambda: log.exists() and "up" in log.read_text(),
            stop_grace=0.5,
        )
    )
    started = time.monotonic()
    supervisor.stop_all()
    assert time.monotonic() - started < 5
    assert process.exit_code() == -9
    assert not group_alive(process.pid), "the grandchild was killed with its group"


def test_a_variable_set_to_none_is_taken_out_of_the_inherited_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SF_JWT_PRIVATE_KEY", "the developer's own key")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    report = tmp_path / "env.json"
    supervisor = Supervisor(tmp_path)
    supervisor.start(
        Component(
            "worker",
            python(
                "import json, os, sys, time\n"
                f"open({str(report)!r} + '.tmp', 'w').write(json.dumps(dict(os.environ)))\n"
                f"os.replace({str(report)!r} + '.tmp', {str(report)!r})\n"
                "time.sleep(60)\n"
            ),
            env={"SF_JWT_PRIVATE_KEY": None, "SF_JWT_KEY_FILE": "/dev/stack/key.pem"},
            ready=report.exists,
        )
    )
    supervisor.stop_all()
    seen = json.loads(report.read_text())
    assert "SF_JWT_PRIVATE_KEY" not in seen
    assert seen["SF_JWT_KEY_FILE"] == "/dev/stack/key.pem"
    assert seen["LOG_LEVEL"] == "DEBUG", "the rest is inherited"
