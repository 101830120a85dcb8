"""The engine's processes in `fulfillment dev`: planned with the whole engine environment pointed
at the dev stack, the payload key made once and shared by every engine child."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from config.settings import WORKER, env_name, load_settings
from config.temporal import parse_payload_keys
from devstack.launcher import Launcher, _parser, _wipe
from devstack.stack_file import merge, write_stack
from devstack.supervisor import Component

# What a developer may have in the shell for real upstreams; none of it may reach the dev worker.
REAL_UPSTREAM = {
    "SF_TOKEN_URL": "https://login.salesforce.com/services/oauth2/token",
    "SF_CLIENT_ID": "real-consumer-key",
    "SF_USERNAME": "integration@example.com",
    "SF_JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----real-----END PRIVATE KEY-----",
    "WHMCS_API_URL": "https://billing.example.com/includes/api.php",
    "WHMCS_IDENTIFIER": "real-identifier",
    "WHMCS_SECRET": "real-secret",
    "WHMCS_ACCESS_KEY": "real-access-key",
    "FREEBIT_BASE_URL": "https://freebit.example.com/emptool/api/",
    "FREEBIT_OEM_ID": "real-oem",
    "FREEBIT_OEM_KEY": "real-oem-key",
}


def launcher(dev_dir: Path, *flags: str, **environ: str) -> tuple[Launcher, list[str]]:
    said: list[str] = []
    args = _parser().parse_args(["--dir", str(dev_dir), "--free-ports", *flags])
    return Launcher(args, environ, say=said.append), said


def planned(dev_dir: Path, *flags: str, **environ: str) -> tuple[dict[str, Any], Launcher]:
    """The stack.json the plan would write, and the launcher (its ports)."""
    chosen, _ = launcher(dev_dir, *flags, **environ)
    stack: dict[str, Any] = {}
    for step in chosen.plan():
        merge(stack, step.stack)
    return stack, chosen


def worker(dev_dir: Path, *flags: str, **environ: str) -> Component | None:
    chosen, _ = launcher(dev_dir, *flags, **environ)
    steps = [step for step in chosen.plan() if step.name == "worker"]
    return steps[0].component if steps else None


def settings_from(env: dict[str, str | None]) -> Any:
    return load_settings(
        require=WORKER, **{name.lower(): value for name, value in env.items() if value is not None}
    )


def test_the_worker_runs_after_the_emulators_with_every_setting_pointed_at_the_stack(
    tmp_path: Path,
) -> None:
    chosen, _ = launcher(tmp_path)
    steps = chosen.plan()
    names = [step.name for step in steps]
    assert names.index("worker") > names.index("migrations")
    assert names.index("worker") > max(names.index(f"{e}-emulator") for e in ("whmcs", "freebit"))
    stack: dict[str, Any] = {}
    for step in steps:
        merge(stack, step.stack)

    component = steps[names.index("worker")].component
    assert component is not None
    assert component.argv[-1] == "worker"
    settings = settings_from(dict(component.env))
    port = chosen.ports.worker_metrics
    assert component.ports == (port,), "its metrics port is checked free with the others"
    assert settings.worker_metrics_port == port
    assert settings.temporal_address == stack["temporal"]["address"]
    assert settings.temporal_task_queue == "order-fulfillment"
    assert settings.database_url == stack["database_url"]
    assert settings.redis_url == stack["redis_url"]
    assert settings.sf_instance_url == stack["salesforce"]["instance_url"]
    assert settings.sf_instance_url.startswith("https://localhost:")
    assert settings.sf_token_url == f"{settings.sf_instance_url}/services/oauth2/token"
    assert settings.sf_auth_flow == "jwt"
    assert settings.sf_jwt_key_file and settings.sf_jwt_key_file.is_file()
    assert settings.sf_ca_file and settings.sf_ca_file.is_file()
    assert settings.whmcs_api_url == stack["whmcs"]["api_url"]
    assert settings.freebit_base_url == stack["freebit"]["base_url"]
    assert settings.temporal_payload_keys is not None
    assert settings.temporal_payload_keys.get_secret_value() == stack["temporal"]["payload_keys"]
    assert stack["worker"]["metrics_url"] == f"http://127.0.0.1:{port}/metrics"
    assert component.url == stack["worker"]["metrics_url"], "printed in the summary"


def test_the_payload_key_is_made_once_kept_private_and_wiped_only_by_fresh(
    tmp_path: Path,
) -> None:
    first, _ = planned(tmp_path)
    key = first["temporal"]["payload_keys"]
    ((key_id, material),) = parse_payload_keys(key)
    assert len(material) == 32 and key_id.startswith("dev-")
    assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600

    again, _ = planned(tmp_path)
    assert again["temporal"]["payload_keys"] == key, "histories stay readable after a restart"

    _wipe(tmp_path, keep=tmp_path / "launcher.lock")  # what --fresh does
    fresh, _ = planned(tmp_path)
    assert fresh["temporal"]["payload_keys"] != key


def test_stack_env_hands_the_payload_key_to_a_shell_but_not_the_workers_port(
    tmp_path: Path,
) -> None:
    stack, chosen = planned(tmp_path)
    write_stack(tmp_path, stack)
    lines = (tmp_path / "stack.env").read_text().splitlines()
    env = {name: shlex.split(value)[0] for name, value in (line.split("=", 1) for line in lines)}
    assert env["TEMPORAL_PAYLOAD_KEYS"] == stack["temporal"]["payload_keys"]
    # A second worker run from that shell must not fight the dev worker for its port.
    assert "WORKER_METRICS_PORT" not in env
    assert json.loads((tmp_path / "stack.json").read_text())["worker"]["metrics_url"]
    assert (tmp_path / "stack.env").stat().st_mode & 0o777 == 0o600
    assert chosen.ports.worker_metrics != 9101, "--free-ports moves it too"


def test_the_developers_own_upstream_settings_do_not_reach_the_dev_worker(
    tmp_path: Path,
) -> None:
    component = worker(tmp_path, **REAL_UPSTREAM)
    assert component is not None
    for name in REAL_UPSTREAM:
        assert component.env[name] != REAL_UPSTREAM[name], name
    # Unset rather than overridden: the stack has no inline key or access key to give.
    assert component.env["SF_JWT_PRIVATE_KEY"] is None
    assert component.env["WHMCS_ACCESS_KEY"] is None
    # Nor from a .env file where the launcher was started (Settings reads one in its cwd).
    assert component.cwd == tmp_path.resolve()


def test_no_worker_leaves_the_worker_and_its_port_to_the_developer(tmp_path: Path) -> None:
    stack, _ = planned(tmp_path, "--no-worker")
    assert worker(tmp_path, "--no-worker") is None
    assert "worker" not in stack
    assert stack["temporal"]["payload_keys"], "a worker of one's own needs the key too"


def test_without_emulators_the_worker_needs_the_upstreams_from_the_environment(
    tmp_path: Path,
) -> None:
    chosen, said = launcher(tmp_path, "--no-emulators")
    assert "worker" not in [step.name for step in chosen.plan()]
    (note,) = [line for line in said if line.startswith("worker")]
    for name in ("SF_TOKEN_URL", "WHMCS_API_URL", "FREEBIT_OEM_KEY"):
        assert name in note
    assert "--no-emulators" in note

    component = worker(tmp_path, "--no-emulators", **REAL_UPSTREAM)
    assert component is not None, "real upstreams given in the environment are used"
    for name in REAL_UPSTREAM:
        assert name not in component.env, f"{name} is inherited as it is"
    provided = {env_name(name) for name in WORKER} - set(REAL_UPSTREAM)
    assert provided <= {name for name, value in component.env.items() if value}
