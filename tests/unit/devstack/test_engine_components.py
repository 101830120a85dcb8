"""The engine's processes in `fulfillment dev` (the worker, the CDC listener, the API): planned
with the whole engine environment pointed at the dev stack, the payload key made once and shared
by every engine child, the API's tokens held by the API alone."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from config.payload_keys import parse_payload_keys
from config.settings import API, LISTENER, WORKER, env_name, load_settings
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


def engine_child(name: str, dev_dir: Path, *flags: str, **environ: str) -> Component | None:
    chosen, _ = launcher(dev_dir, *flags, **environ)
    steps = [step for step in chosen.plan() if step.name == name]
    return steps[0].component if steps else None


def worker(dev_dir: Path, *flags: str, **environ: str) -> Component | None:
    return engine_child("worker", dev_dir, *flags, **environ)


def listener(dev_dir: Path, *flags: str, **environ: str) -> Component | None:
    return engine_child("listener", dev_dir, *flags, **environ)


def settings_from(env: Any, require: tuple[str, ...] = WORKER) -> Any:
    return load_settings(
        require=require, **{name.lower(): value for name, value in env.items() if value is not None}
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


def test_stack_env_hands_the_payload_key_to_a_shell_but_not_the_engine_childrens_ports(
    tmp_path: Path,
) -> None:
    stack, chosen = planned(tmp_path)
    write_stack(tmp_path, stack)
    lines = (tmp_path / "stack.env").read_text().splitlines()
    env = {name: shlex.split(value)[0] for name, value in (line.split("=", 1) for line in lines)}
    assert env["TEMPORAL_PAYLOAD_KEYS"] == stack["temporal"]["payload_keys"]
    # A second worker or listener run from that shell must not fight the dev one for its port.
    assert "WORKER_METRICS_PORT" not in env
    assert "LISTENER_METRICS_PORT" not in env
    written = json.loads((tmp_path / "stack.json").read_text())
    assert written["worker"]["metrics_url"] and written["listener"]["metrics_url"]
    assert (tmp_path / "stack.env").stat().st_mode & 0o777 == 0o600
    assert chosen.ports.worker_metrics != 9101, "--free-ports moves it too"
    assert chosen.ports.listener_metrics not in {9101, 9102}


@pytest.mark.parametrize("name", ["worker", "listener"])
def test_the_developers_own_upstream_settings_do_not_reach_a_dev_engine_child(
    tmp_path: Path, name: str
) -> None:
    component = engine_child(name, tmp_path, **REAL_UPSTREAM)
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


def test_the_listener_runs_after_the_worker_subscribed_to_the_emulator_by_name(
    tmp_path: Path,
) -> None:
    chosen, _ = launcher(tmp_path)
    steps = chosen.plan()
    names = [step.name for step in steps]
    # Events it receives start workflows that the worker must be there to take.
    assert names.index("listener") > names.index("worker")
    assert names.index("listener") > names.index("migrations"), "its lease and cursor tables"
    assert names.index("listener") > names.index("salesforce-emulator")
    stack: dict[str, Any] = {}
    for step in steps:
        merge(stack, step.stack)

    component = steps[names.index("listener")].component
    assert component is not None
    assert component.argv[-1] == "listener"
    assert component.restartable, "the supervisor brings it back when it dies"
    settings = settings_from(component.env, LISTENER)
    port = chosen.ports.listener_metrics
    assert component.ports == (port,), "its metrics port is checked free with the others"
    assert port != chosen.ports.worker_metrics
    assert settings.listener_metrics_port == port
    # aiohttp keeps no cookie from a server addressed by IP, and the Streaming API's session
    # lives in its cookie: by address, the listener's second long poll would be refused.
    assert settings.sf_instance_url.startswith("https://localhost:")
    assert settings.sf_token_url.startswith("https://localhost:")
    assert settings.sf_ca_file and settings.sf_ca_file.is_file()
    assert settings.sf_jwt_key_file and settings.sf_jwt_key_file.is_file()
    assert settings.database_url == stack["database_url"]
    assert settings.redis_url == stack["redis_url"]
    assert settings.temporal_address == stack["temporal"]["address"]
    assert settings.temporal_payload_keys is not None, "it writes workflow inputs"
    assert settings.temporal_payload_keys.get_secret_value() == stack["temporal"]["payload_keys"]
    the_worker = steps[names.index("worker")].component
    assert the_worker is not None
    # The dev org has no history: a listener with no cursor replays what Salesforce retains.
    assert settings.cdc_initial_replay == -2
    assert settings.cdc_transport == "cometd"
    assert settings.sf_pubsub_endpoint == stack["salesforce"]["pubsub_address"]
    shared = {k: v for k, v in component.env.items() if not k.startswith(("LISTENER_", "CDC_"))}
    assert shared == {k: v for k, v in the_worker.env.items() if not k.startswith("WORKER_")}, (
        "one engine environment for every child"
    )
    assert stack["listener"]["metrics_url"] == f"http://127.0.0.1:{port}/metrics"
    assert component.url == stack["listener"]["metrics_url"], "printed in the summary"
    assert component.ready is not None


def test_listener_metrics_port_moves_by_flag_or_dev_variable(tmp_path: Path) -> None:
    by_flag, _ = launcher(tmp_path, "--listener-metrics-port", "19102")
    by_env, _ = launcher(tmp_path, DEV_LISTENER_METRICS_PORT="19103")
    assert by_flag.ports.listener_metrics == 19102
    assert by_env.ports.listener_metrics == 19103
    component = listener(tmp_path, "--listener-metrics-port", "19102")
    assert component is not None
    assert component.env["LISTENER_METRICS_PORT"] == "19102"


def test_the_listener_takes_the_pub_sub_api_by_flag_or_variable(tmp_path: Path) -> None:
    for flags, environ in (((), {}), (("--cdc-transport", "pubsub"), {})):
        component = listener(tmp_path, *flags, **environ)
        assert component is not None
        expected = "pubsub" if flags else "cometd"
        assert settings_from(component.env, LISTENER).cdc_transport == expected
    component = listener(tmp_path, CDC_TRANSPORT="pubsub")
    assert component is not None
    assert settings_from(component.env, LISTENER).cdc_transport == "pubsub"
    # The flag wins over the shell's variable.
    component = listener(tmp_path, "--cdc-transport", "cometd", CDC_TRANSPORT="pubsub")
    assert component is not None
    assert settings_from(component.env, LISTENER).cdc_transport == "cometd"


def test_no_listener_leaves_the_listener_and_its_port_to_the_developer(tmp_path: Path) -> None:
    stack, chosen = planned(tmp_path, "--no-listener")
    assert listener(tmp_path, "--no-listener") is None
    assert "listener" not in stack
    assert worker(tmp_path, "--no-listener") is not None, "the worker still runs"
    ports = [port for step in chosen.plan() for port in step.ports]
    assert chosen.ports.listener_metrics not in ports
    assert stack["salesforce"]["token_url"], "a listener of one's own finds Salesforce"


def test_without_emulators_the_listener_needs_only_salesforce_from_the_environment(
    tmp_path: Path,
) -> None:
    chosen, said = launcher(tmp_path, "--no-emulators")
    assert "listener" not in [step.name for step in chosen.plan()]
    (note,) = [line for line in said if line.startswith("listener")]
    assert "SF_TOKEN_URL" in note and "SF_CLIENT_ID" in note
    assert "WHMCS" not in note and "FREEBIT" not in note, "it never talks to them"
    assert "--no-emulators" in note

    salesforce_only = {k: v for k, v in REAL_UPSTREAM.items() if k.startswith("SF_")}
    chosen, _ = launcher(tmp_path, "--no-emulators", **salesforce_only)
    names = [step.name for step in chosen.plan()]
    assert "listener" in names, "a real Salesforce given in the environment is used"
    assert "worker" not in names
    component = listener(tmp_path, "--no-emulators", **salesforce_only)
    assert component is not None
    for name in salesforce_only:
        assert name not in component.env, f"{name} is inherited as it is"


def api(dev_dir: Path, *flags: str, **environ: str) -> Component | None:
    return engine_child("api", dev_dir, *flags, **environ)


def test_the_api_runs_last_on_the_stack_with_the_dev_tokens(tmp_path: Path) -> None:
    chosen, _ = launcher(tmp_path)
    steps = chosen.plan()
    names = [step.name for step in steps]
    assert names[-1] == "api", "it serves what the others write"
    assert names.index("api") > names.index("migrations")
    stack: dict[str, Any] = {}
    for step in steps:
        merge(stack, step.stack)

    component = steps[-1].component
    assert component is not None
    assert component.argv[-1] == "api"
    assert component.restartable
    settings = settings_from(component.env, API)
    port = chosen.ports.api
    assert component.ports == (port,), "its port is checked free with the others"
    assert port != 8000, "--free-ports moves it too"
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", port)
    assert stack["api"]["url"] == f"http://127.0.0.1:{port}" == component.url
    assert settings.api_service_token is not None and settings.api_ops_token is not None
    assert settings.api_service_token.get_secret_value() == stack["api"]["service_token"]
    assert settings.api_ops_token.get_secret_value() == stack["api"]["ops_token"]
    assert settings.api_service_token != settings.api_ops_token, "two scopes, two tokens"
    assert settings.whmcs_webhook_secret is not None
    assert settings.whmcs_webhook_secret.get_secret_value() == stack["whmcs"]["webhook_secret"]
    assert settings.database_url == stack["database_url"]
    assert settings.redis_url == stack["redis_url"]
    assert settings.temporal_address == stack["temporal"]["address"]
    assert settings.temporal_payload_keys is not None, "the codec decrypts with the stack's key"
    assert settings.temporal_payload_keys.get_secret_value() == stack["temporal"]["payload_keys"]
    assert settings.sf_token_url == stack["salesforce"]["token_url"], "the catalog's source"
    assert component.ready is not None


def test_the_temporal_ui_decodes_payloads_through_the_dev_apis_codec(tmp_path: Path) -> None:
    chosen, _ = launcher(tmp_path)
    steps = {step.name: step for step in chosen.plan()}
    component = steps["api"].component
    assert component is not None
    settings = settings_from(component.env, API)
    codec = f"http://127.0.0.1:{chosen.ports.api}/api/codec"
    assert steps["api"].stack["api"]["codec_url"] == codec
    # The dev UI has no login and so no token to pass: an authenticated codec would answer it
    # 401 for every payload.
    assert settings.codec_auth == "none"
    ui = chosen.ports.temporal_ui
    origins = settings.api_codec_cors_origins.split(",")
    assert f"http://127.0.0.1:{ui}" in origins and f"http://localhost:{ui}" in origins, (
        "the browser calls from the UI's origin, on whatever port the UI was given"
    )
    temporal_shown, api_shown = steps["Temporal"].shown, steps["api"].shown
    assert temporal_shown is not None and codec in temporal_shown[1]
    assert api_shown is not None and codec in api_shown[1]
    assert f"http://127.0.0.1:{chosen.ports.api}" in api_shown[1]


def test_only_the_api_child_holds_the_api_tokens_and_the_webhook_secret(tmp_path: Path) -> None:
    mine = {"API_SERVICE_TOKEN": "shell-token", "API_OPS_TOKEN": "shell-ops"}
    stack, _ = planned(tmp_path, **mine)
    the_api = api(tmp_path, **mine)
    assert the_api is not None
    assert the_api.env["API_SERVICE_TOKEN"] == stack["api"]["service_token"] != "shell-token"
    for name in ("worker", "listener"):
        component = engine_child(name, tmp_path, **mine)
        assert component is not None
        for secret in ("API_SERVICE_TOKEN", "API_OPS_TOKEN", "WHMCS_WEBHOOK_SECRET"):
            assert component.env[secret] is None, f"{name} gets no {secret}, not even the shell's"


def test_api_port_moves_by_flag_or_dev_variable(tmp_path: Path) -> None:
    by_flag, _ = launcher(tmp_path, "--api-port", "18000")
    by_env, _ = launcher(tmp_path, DEV_API_PORT="18001")
    assert (by_flag.ports.api, by_env.ports.api) == (18000, 18001)
    component = api(tmp_path, "--api-port", "18000")
    assert component is not None
    assert component.env["API_PORT"] == "18000"
    temporal = next(step for step in by_flag.plan() if step.name == "Temporal")
    assert temporal.shown is not None and "127.0.0.1:18000/api/codec" in temporal.shown[1]


def test_stack_env_gives_a_shell_the_api_url_and_tokens_but_not_its_port(tmp_path: Path) -> None:
    stack, _ = planned(tmp_path)
    write_stack(tmp_path, stack)
    lines = (tmp_path / "stack.env").read_text().splitlines()
    env = {name: shlex.split(value)[0] for name, value in (line.split("=", 1) for line in lines)}
    assert env["API_URL"] == stack["api"]["url"]
    assert env["API_SERVICE_TOKEN"] == stack["api"]["service_token"]
    assert env["API_OPS_TOKEN"] == stack["api"]["ops_token"]
    # `fulfillment api` from that shell must not fight the dev one for its port.
    assert "API_PORT" not in env


def test_api_tokens_are_made_once_and_kept_across_restarts(tmp_path: Path) -> None:
    first, _ = planned(tmp_path)
    again, _ = planned(tmp_path)
    assert first["api"]["service_token"] == again["api"]["service_token"]
    assert first["api"]["ops_token"] == again["api"]["ops_token"]
    kept = json.loads((tmp_path / "secrets.json").read_text())
    assert kept["api_service_token"] == first["api"]["service_token"]


def test_no_api_leaves_the_api_its_port_and_the_ui_codec_to_the_developer(tmp_path: Path) -> None:
    stack, chosen = planned(tmp_path, "--no-api")
    assert api(tmp_path, "--no-api") is None
    assert "url" not in stack["api"], "stack.json never names a part that does not run"
    assert stack["api"]["service_token"], "an API of one's own uses the stack's tokens"
    steps = chosen.plan()
    assert chosen.ports.api not in [port for step in steps for port in step.ports]
    temporal = next(step for step in steps if step.name == "Temporal")
    assert temporal.shown is not None and "/api/codec" not in temporal.shown[1]
