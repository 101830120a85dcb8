"""docker-compose.yml, the Dockerfile and deploy/ stay valid and consistent with the code.

Docker cannot run here, so the files are parsed and checked against the settings, the CLI, the
emulators and the migrations; what can run without Docker (the demo's certificate script, its
settings) runs. The image's pinned dependencies: tests/unit/test_packaging.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import ssl
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from cli.main import build_parser
from config.settings import API, LISTENER, WORKER, Settings, load_settings
from devstack.stack_file import stack_env
from emulators.cli import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parents[2]
ENGINE_IMAGE = "order-fulfillment:latest"
# The Dockerfile's `emulators` target: the engine's image plus the `dev` extra.
EMULATORS_IMAGE = "order-fulfillment-emulators:latest"
# ${VAR:-default} and ${VAR:?message}: compose's interpolation of its own variables.
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z_]+):(?P<kind>[-?])(?P<value>[^}]*)\}")


class _ComposeLoader(yaml.SafeLoader):
    """Reads compose's merge tags (`!override`, `!reset`) as the plain nodes they tag."""


def _tagged(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_ComposeLoader.add_multi_constructor("!", _tagged)


@cache
def _load_yaml(relative: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load((ROOT / relative).read_text(), _ComposeLoader)  # noqa: S506
    return data


def _compose() -> dict[str, Any]:
    return _load_yaml("docker-compose.yml")


def _defaulted(value: Any, variables: dict[str, str] | None = None) -> str:
    """A compose value as it reads with `variables` set (none: every default)."""
    given = variables or {}

    def value_of(match: re.Match[str]) -> str:
        if given.get(match["name"]):
            return given[match["name"]]
        return match["value"] if match["kind"] == "-" else ""

    return _INTERPOLATION.sub(value_of, str(value))


def _engine_services() -> dict[str, dict[str, Any]]:
    """The services of the engine image that run an engine process with its settings."""
    return {
        name: service
        for name, service in _compose()["services"].items()
        if service.get("image") == ENGINE_IMAGE and "env_file" in service
    }


def _env_file(relative: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (ROOT / relative).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def _module(relative: str) -> ModuleType:
    """A script of deploy/ (not a package), imported from its path."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mounted_file(service: dict[str, Any], target: str) -> Path:
    """The repository file a service mounts at `target`."""
    for volume in service.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        if rest.split(":")[0] == target:
            assert source.startswith("./"), volume
            return ROOT / source
    raise AssertionError(f"nothing is mounted at {target}")


def _subcommands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return set(sub.choices)  # type: ignore[arg-type]


def test_the_image_runs_cli_subcommands_or_the_demos_certificate_script() -> None:
    services = _compose()["services"]
    of_the_image = {
        n: s for n, s in services.items() if s.get("image") in {ENGINE_IMAGE, EMULATORS_IMAGE}
    }
    assert set(_engine_services()) >= {"migrate", "worker", "listener", "api"}
    for name, service in of_the_image.items():
        # Production's processes run the project without extras; the emulators have `dev`.
        target = "emulators" if service["image"] == EMULATORS_IMAGE else "production"
        assert service["build"] == {"context": ".", "target": target}, name
        assert (target == "emulators") == (service.get("profiles") == ["emulators"]), name
        if "entrypoint" not in service:
            assert service["command"][0] in _subcommands(), name
            continue
        # The one exception: a script of the repository, for the demo only.
        assert service["profiles"] == ["emulators"], name
        assert service["entrypoint"][0] == "python", name
        assert _mounted_file(service, service["entrypoint"][1]).is_file(), name


def test_engine_environment_names_are_settings() -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name, service in _engine_services().items():
        assert set(service["environment"]) <= known, name


def test_a_one_shot_job_registers_every_custom_search_attribute_in_the_engines_namespace() -> None:
    from devstack.services import SEARCH_ATTRIBUTES

    job = _service("temporal-search-attributes")
    script = _mounted_file(job, job["entrypoint"][1]).read_text()
    listed = re.search(r'^attributes="([^"]+)"', script, re.MULTILINE)
    assert listed is not None
    assert listed.group(1).split() == list(SEARCH_ATTRIBUTES)
    assert "--type Keyword" in script
    assert set(SEARCH_ATTRIBUTES.values()) == {"Keyword"}
    # The namespace it prepares is the one the engine's processes use.
    assert _defaulted(job["environment"]["TEMPORAL_NAMESPACE"]) == _defaulted(
        _service("worker")["environment"]["TEMPORAL_NAMESPACE"]
    )
    assert job["restart"] == "on-failure"


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # Tests, benchmarks and the docs' generators are for development: the image runs the engine.
    development = {"tests", "benchmarks", "docs_gen"}
    packages = [
        p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name not in development
    ]
    for package in packages:
        assert f"COPY {package} {package}" in dockerfile, package


# Each engine process that serves Prometheus metrics, with the setting naming its port.
METRICS_SETTING = {"worker": "worker_metrics_port", "listener": "listener_metrics_port"}
ENGINE_PROCESSES = sorted(METRICS_SETTING)


def _service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = _compose()["services"][name]
    return service


def _worker() -> dict[str, Any]:
    return _service("worker")


def _metrics_port(name: str) -> int:
    setting = METRICS_SETTING[name]
    configured = _service(name).get("environment", {}).get(setting.upper())
    if configured is None:
        configured = Settings.model_fields[setting].default
    return int(configured)


@pytest.mark.parametrize("name", ENGINE_PROCESSES)
def test_each_engine_process_runs_the_one_image_with_its_own_command(name: str) -> None:
    service = _service(name)
    assert service["image"] == "order-fulfillment:latest"
    assert service["command"] == [name]
    assert service["restart"] in {"always", "unless-stopped"}
    # Replicas cannot share one host port; Prometheus scrapes each on the compose network.
    assert "ports" not in service
    assert str(_metrics_port(name)) in {str(port) for port in service["expose"]}


def test_workers_scale_out_and_listeners_wait_as_hot_standbys() -> None:
    assert _worker()["deploy"]["replicas"] >= 2, "workers are stateless: run several"
    # One listener is active (it holds the Postgres lease); the others take over when it dies,
    # so the stream stops only for as long as a standby needs to notice.
    assert _service("listener")["deploy"]["replicas"] >= 2


@pytest.mark.parametrize("name", ENGINE_PROCESSES)
def test_the_health_check_asks_the_processes_own_metrics_port(name: str) -> None:
    service = _service(name)
    check = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{_metrics_port(name)}/metrics" in check
    assert service["healthcheck"]["test"][0] == "CMD", "the slim image has no shell tools"
    assert service["healthcheck"]["test"][1] == "python"


@pytest.mark.parametrize("name", [*ENGINE_PROCESSES, "api"])
def test_an_engine_process_starts_once_its_servers_are_healthy_and_the_schema_is_migrated(
    name: str,
) -> None:
    depends = _service(name)["depends_on"]
    for server in ("temporal", "postgres", "redis"):
        assert depends[server]["condition"] == "service_healthy", server
    assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_the_worker_starts_once_the_search_attributes_are_registered() -> None:
    assert _worker()["depends_on"]["temporal-search-attributes"]["condition"] == (
        "service_completed_successfully"
    ), "the workflow upserts the custom search attributes from its first task"


def test_every_health_condition_waits_on_a_service_that_has_a_health_check() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            continue
        for target, rule in depends.items():
            if rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"


def test_docker_lets_a_stopping_listener_finish_the_events_in_hand() -> None:
    listener = _service("listener")
    assert listener["stop_signal"] == "SIGTERM"
    # It gives the events in hand 10 s to finish (their cursors move only then), then closes
    # its session and gives up the lease; SIGKILL before that means replays, never losses.
    assert _seconds(listener["stop_grace_period"]) > 10


def test_docker_lets_running_activities_finish_before_it_kills_a_worker() -> None:
    worker = _worker()
    grace = float(
        worker.get("environment", {}).get(
            "WORKER_SHUTDOWN_GRACE_SECONDS",
            Settings.model_fields["worker_shutdown_grace_seconds"].default,
        )
    )
    assert worker["stop_signal"] == "SIGTERM"
    assert _seconds(worker["stop_grace_period"]) > grace


def _secret_settings() -> set[str]:
    return {
        name.upper()
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }


def test_no_secret_is_written_into_the_compose_file() -> None:
    secret_names = _secret_settings()
    assert {"TEMPORAL_PAYLOAD_KEYS", "TEMPORAL_API_KEY"} <= secret_names
    for name, service in _engine_services().items():
        assert not secret_names & set(service.get("environment", {})), name
        assert service["env_file"], f"{name} takes its secrets from an env file"


def _seconds(duration: str) -> float:
    units = {"s": 1.0, "m": 60.0}
    return float(duration[:-1]) * units[duration[-1]]


def _api_port() -> int:
    configured = _service("api")["environment"].get("API_PORT")
    return int(configured or Settings.model_fields["api_port"].default)


def _published(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port of a service's short-syntax `ports`."""
    published: dict[int, int] = {}
    for entry in service.get("ports", []):
        host, _, container = str(entry).rpartition(":")
        published[int(container)] = int(host.rpartition(":")[2])
    return published


def test_the_api_runs_the_one_image_listening_on_every_interface_of_its_container() -> None:
    api = _service("api")
    assert api["image"] == "order-fulfillment:latest"
    assert api["command"] == ["api"]
    assert api["restart"] in {"always", "unless-stopped"}
    # Settings default to 127.0.0.1, where a published port reaches nobody.
    assert api["environment"]["API_HOST"] == "0.0.0.0"
    assert _api_port() in _published(api), "the portal and the operators' browsers reach it"


def test_a_published_api_port_is_held_by_one_replica() -> None:
    api = _service("api")
    replicas = api.get("deploy", {}).get("replicas", 1)
    # Two containers cannot bind one host port: scaling out means a load balancer, no `ports`.
    assert "ports" not in api or replicas == 1


def test_the_api_health_check_asks_readiness_on_its_own_port() -> None:
    check = _service("api")["healthcheck"]["test"]
    assert check[:2] == ["CMD", "python"], "the slim image has no shell tools"
    assert f"127.0.0.1:{_api_port()}/api/health/ready" in " ".join(check)


# What production's compose variables name (docs/deployment.md), and what the demo's say.
_PRODUCTION = {
    "OIDC_ISSUER": "https://login.example.jp/realms/ops",
    "OIDC_AUDIENCE": "fulfillment-codec",
    "OIDC_JWKS_URL": "https://login.example.jp/realms/ops/protocol/openid-connect/certs",
    "OIDC_UI_CLIENT_ID": "temporal-ui",
}


@pytest.mark.parametrize("setup", ["production", "demo"])
def test_the_temporal_ui_can_decode_through_the_apis_codec(setup: str) -> None:
    """Would fail on a setup that cannot decode: a codec that wants a token the UI has not got
    (the ops token, or a sign-in the UI does not do), a provider the two disagree on, an origin
    CORS refuses, an endpoint the browser cannot reach."""
    variables = _PRODUCTION if setup == "production" else _env_file(DEMO_COMPOSE_ENV)
    ui_service, api_service = _service("temporal-ui"), _service("api")
    ui = {k: _defaulted(v, variables) for k, v in ui_service["environment"].items()}
    api = {k.lower(): _defaulted(v, variables) for k, v in api_service["environment"].items()}
    api.pop("temporal_payload_keys_file")  # the mounted secret; not this test's concern
    settings = load_settings(require=API, api_service_token="s" * 32, api_ops_token="o" * 32, **api)
    endpoint = urlsplit(ui["TEMPORAL_CODEC_ENDPOINT"])
    # The operator's browser calls the codec: the API's published port, not a compose name.
    assert endpoint.hostname in {"localhost", "127.0.0.1"}
    assert endpoint.port == _published(api_service)[_api_port()]
    assert endpoint.path == "/api/codec"
    signs_in = ui["TEMPORAL_AUTH_ENABLED"].lower() == "true"
    if setup == "production":
        # The UI signs operators in and passes their token; the codec checks it with the
        # same provider. The ops token is for the CLI: the UI can never send it.
        assert settings.codec_auth == "oidc"
        assert signs_in and ui["TEMPORAL_AUTH_TYPE"] == "oidc"
        assert ui["TEMPORAL_CODEC_PASS_ACCESS_TOKEN"].lower() == "true"
        assert ui["TEMPORAL_AUTH_ISSUER_URL"] == settings.api_codec_oidc_issuer
        assert ui["TEMPORAL_AUTH_CLIENT_ID"] and settings.api_codec_oidc_audience
        assert ui["TEMPORAL_AUTH_CALLBACK_URL"].endswith("/auth/sso/callback")
    else:
        # Nobody signs in to the demo's UI, so the demo's codec must want no token.
        assert not signs_in and settings.codec_auth == "none"
    # The browser's calls come from the UI's own origin, which CORS must allow.
    ui_origin = f"http://localhost:{_published(ui_service)[8080]}"
    assert ui_origin in settings.api_codec_cors_origins.split(",")


def test_the_temporal_ui_is_published_on_the_hosts_loopback_only() -> None:
    # It can signal, cancel and terminate workflows: a proxy with TLS publishes it, not Docker.
    (entry,) = _service("temporal-ui")["ports"]
    assert str(entry).startswith("127.0.0.1:")


def test_temporal_runs_as_a_server_on_the_bundled_postgres_not_the_dev_server() -> None:
    temporal = _service("temporal")
    image, _, version = temporal["image"].partition(":")
    assert image == "temporalio/server", "auto-setup is deprecated; start-dev is not for production"
    env = temporal["environment"]
    assert env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] in _compose()["services"]
    assert _service(env["POSTGRES_SEEDS"])["image"].startswith("postgres:")
    assert temporal["depends_on"]["temporal-schema"]["condition"] == (
        "service_completed_successfully"
    )
    assert int(env["NUM_HISTORY_SHARDS"]) >= 4
    # The schema job brings both databases to the schema of the same Temporal version.
    schema_job = _service("temporal-schema")
    assert schema_job["image"] == f"temporalio/admin-tools:{version}"
    assert _service("temporal-search-attributes")["image"] == schema_job["image"]
    script = _mounted_file(schema_job, schema_job["entrypoint"][1]).read_text()
    for database, schema in (("temporal", "temporal"), ("temporal_visibility", "visibility")):
        assert f"setup {database} {schema}\n" in script
    assert "update-schema" in script
    assert schema_job["environment"]["POSTGRES_USER"] == env["POSTGRES_USER"]
    assert schema_job["environment"]["SQL_PASSWORD"] == env["POSTGRES_PWD"]


def test_the_servers_dynamic_config_is_the_mounted_file() -> None:
    temporal = _service("temporal")
    path = temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    mounted = _mounted_file(temporal, "/etc/temporal/config/dynamicconfig")
    config = yaml.safe_load((mounted / Path(path).name).read_text())
    # Operators' retry and cancel are workflow updates.
    assert config["frontend.enableUpdateWorkflowExecution"][0]["value"] is True


def test_the_engine_reaches_the_bundled_servers_by_their_service_names() -> None:
    services = _compose()["services"]
    env = _service("worker")["environment"]
    host, _, port = _defaulted(env["TEMPORAL_ADDRESS"]).partition(":")
    assert host == "temporal"
    # Published for an operator's CLI on the host's loopback only: no authentication there.
    assert services["temporal"]["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert urlsplit(_defaulted(env["DATABASE_URL"])).hostname == "postgres"
    assert urlsplit(_defaulted(env["REDIS_URL"])).hostname == "redis"
    # Overridable from compose's variables, for your own servers.
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "DATABASE_URL", "REDIS_URL"):
        assert str(env[name]).startswith(f"${{{name}:-"), name


def test_the_bundled_postgres_gets_the_portal_table_the_migrations_check() -> None:
    from migrations import portal

    postgres = _service("postgres")
    initdb = _mounted_file(postgres, "/docker-entrypoint-initdb.d")
    scripts = sorted(initdb.glob("*.sql"))
    assert scripts, "no init script"
    text = " ".join(" ".join(path.read_text() for path in scripts).split())
    # Without the portal's id_mappings, `fulfillment migrate` refuses the database: the same
    # DDL the dev and test databases get (migrations.portal) stands in for the portal's.
    ddl = " ".join(portal._ID_MAPPINGS_DDL.split())
    assert ddl in text
    assert postgres["environment"]["POSTGRES_DB"] == urlsplit(
        _defaulted(_service("migrate")["environment"]["DATABASE_URL"])
    ).path.lstrip("/")


# --- Restart policies and health -----------------------------------------------------------

ONE_SHOTS = {"temporal-schema", "temporal-search-attributes", "migrate", "emulator-certs"}


def test_long_running_services_restart_and_one_shot_jobs_retry_only_on_failure() -> None:
    for name, service in _compose()["services"].items():
        if name in ONE_SHOTS:
            assert service["restart"] == "on-failure", name
        elif service.get("profiles") == ["tools"]:
            assert service["restart"] == "no", name
        else:
            assert service["restart"] in {"always", "unless-stopped"}, name


def test_every_long_running_service_but_the_web_ui_has_a_health_check() -> None:
    for name, service in _compose()["services"].items():
        if name in ONE_SHOTS or name == "temporal-ui" or service.get("profiles") == ["tools"]:
            continue
        assert service["healthcheck"]["test"], name


def test_one_shot_jobs_gate_what_needs_them() -> None:
    for name, service in _compose()["services"].items():
        for target, rule in service.get("depends_on", {}).items():
            if target in ONE_SHOTS:
                assert rule["condition"] == "service_completed_successfully", (name, target)


# --- The payload keys from a Docker secret ----------------------------------------------------

TEMPORAL_CLIENTS = ["worker", "listener", "api", "fulfillment"]


@pytest.mark.parametrize("name", TEMPORAL_CLIENTS)
def test_each_temporal_client_reads_the_payload_keys_from_the_mounted_secret(name: str) -> None:
    service = _service(name)
    (secret,) = service["secrets"]
    assert service["environment"]["TEMPORAL_PAYLOAD_KEYS_FILE"] == f"/run/secrets/{secret}"
    declared = _compose()["secrets"][secret]
    # From a file the operator keeps outside the repository; compose refuses to start without.
    assert _INTERPOLATION.fullmatch(declared["file"])["kind"] == "?"  # type: ignore[index]


def test_processes_that_do_not_talk_to_temporal_get_no_payload_keys() -> None:
    migrate = _service("migrate")
    assert "secrets" not in migrate
    assert "TEMPORAL_PAYLOAD_KEYS_FILE" not in migrate["environment"]


# --- The `emulators` profile: a self-contained demo ---------------------------------------------

DEMO_ENGINE_ENV = "deploy/emulators/engine.env"
DEMO_COMPOSE_ENV = "deploy/emulators/compose.env"
CERTS_MOUNT = "/var/lib/fulfillment/emulator-certs"


@pytest.mark.parametrize("name", sorted(DEFAULT_PORTS))
def test_the_emulators_profile_runs_each_emulator_with_demo_data(name: str) -> None:
    service = _service(name)
    assert service["profiles"] == ["emulators"]
    assert service["image"] == EMULATORS_IMAGE
    command = service["command"]
    assert command[:2] == ["emulate", name]
    assert "--demo" in command
    assert "--host=0.0.0.0" in command
    port = DEFAULT_PORTS[name]
    assert f"--port={port}" in command
    # Loopback only: the demo's control APIs are nobody else's business.
    assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert str(port) in " ".join(service["healthcheck"]["test"])
    # State survives a restart, like the local stack's.
    assert any(flag.startswith("--state-file=/var/lib/fulfillment/") for flag in command)


def test_the_demo_points_every_upstream_of_the_engine_at_an_emulator() -> None:
    env = _env_file(DEMO_ENGINE_ENV)
    for setting, emulator in (
        ("SF_TOKEN_URL", "salesforce"),
        ("SF_INSTANCE_URL", "salesforce"),
        ("WHMCS_API_URL", "whmcs"),
        ("FREEBIT_BASE_URL", "freebit"),
    ):
        url = urlsplit(env[setting])
        assert (url.hostname, url.port) == (emulator, DEFAULT_PORTS[emulator]), setting
    assert set(env) <= {name.upper() for name in Settings.model_fields}
    # The keys come from the secret file; both would stop every process at start.
    assert "TEMPORAL_PAYLOAD_KEYS" not in env


@pytest.mark.parametrize(
    ("name", "required"), [("worker", WORKER), ("listener", LISTENER), ("api", API)]
)
def test_the_demo_settings_start_every_engine_process(
    name: str, required: tuple[str, ...], tmp_path: Path
) -> None:
    make_certs = _module("deploy/emulators/make_certs.py").make_certs
    make_certs(tmp_path, ["salesforce"])
    service = _service(name)
    (secret,) = service["secrets"]
    keys = ROOT / _env_file(DEMO_COMPOSE_ENV)["TEMPORAL_PAYLOAD_KEYS_SECRET"]
    # What the container sees: the env file, under the service's environment; the volume's
    # and the secret's files where this test put them.
    seen = {**_env_file(DEMO_ENGINE_ENV)}
    variables = _env_file(DEMO_COMPOSE_ENV)
    seen.update(
        {key: _defaulted(value, variables) for key, value in service["environment"].items()}
    )
    mounts = {CERTS_MOUNT: str(tmp_path), f"/run/secrets/{secret}": str(keys)}
    values: dict[str, Any] = {}
    for key, value in seen.items():
        for mount, local in mounts.items():
            value = value.replace(mount, local)
        values[key.lower()] = value
    settings = load_settings(require=required, **values)
    assert settings.temporal_payload_keys is not None


def test_the_demo_compose_env_selects_the_profile_and_files_that_exist() -> None:
    env = _env_file(DEMO_COMPOSE_ENV)
    assert env["COMPOSE_PROFILES"] == "emulators"
    assert (ROOT / env["ENGINE_ENV_FILE"]).is_file()
    assert (ROOT / env["TEMPORAL_PAYLOAD_KEYS_SECRET"]).is_file()
    for service in _engine_services().values():
        assert service["env_file"] == "${ENGINE_ENV_FILE:-.env}"
    assert (
        "${TEMPORAL_PAYLOAD_KEYS_SECRET:?" in _compose()["secrets"]["temporal_payload_keys"]["file"]
    )


def test_engine_processes_wait_for_the_emulators_they_call_when_the_profile_is_on() -> None:
    calls = {
        "worker": {"salesforce", "whmcs", "freebit"},
        "listener": {"salesforce"},
        "api": {"salesforce"},
    }
    for name, emulators in calls.items():
        depends = _service(name)["depends_on"]
        for emulator in emulators:
            # Without the profile the emulator is absent, and must not block the start.
            assert depends[emulator] == {"condition": "service_healthy", "required": False}


def test_every_engine_process_starts_after_the_demo_certificates_its_settings_name() -> None:
    # A process checks SF_CA_FILE and SF_JWT_KEY_FILE at start; a one-shot that exits non-zero
    # before they exist fails `up` for everything waiting on it.
    services = _compose()["services"]

    def waits_for_certificates(name: str) -> bool:
        depends = services[name].get("depends_on", {})
        return "emulator-certs" in depends or any(waits_for_certificates(d) for d in depends)

    for name in _engine_services():
        if services[name].get("profiles") != ["tools"]:
            assert waits_for_certificates(name), name


def test_the_demo_certificates_are_made_for_the_host_the_engine_dials() -> None:
    job = _service("emulator-certs")
    directory, *names = job["command"]
    assert directory == CERTS_MOUNT
    assert urlsplit(_env_file(DEMO_ENGINE_ENV)["SF_TOKEN_URL"]).hostname in names
    salesforce = _service("salesforce")
    assert f"--certs-dir={CERTS_MOUNT}" in salesforce["command"]
    assert salesforce["depends_on"]["emulator-certs"]["condition"] == (
        "service_completed_successfully"
    )
    for name in ("emulator-certs", "salesforce"):
        assert f"emulator-certs:{CERTS_MOUNT}" in _service(name)["volumes"], name
    # Every engine process can read them (its env file names them), none can change them.
    for name, service in _engine_services().items():
        assert f"emulator-certs:{CERTS_MOUNT}:ro" in service["volumes"], name
    env = _env_file(DEMO_ENGINE_ENV)
    for setting in ("SF_CA_FILE", "SF_JWT_KEY_FILE"):
        assert env[setting].startswith(f"{CERTS_MOUNT}/"), setting


def _handshake(ca: Path, cert: Path, key: Path, server_name: str) -> None:
    """A TLS handshake in memory: does a client trusting `ca` accept `cert` for `server_name`?"""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(ca))
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    client = client_context.wrap_bio(pipes[0], pipes[1], server_hostname=server_name)
    server = server_context.wrap_bio(pipes[2], pipes[3], server_side=True)
    for _ in range(10):
        done = True
        for side, outgoing, incoming in (
            (client, pipes[1], pipes[2]),
            (server, pipes[3], pipes[0]),
        ):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                done = False
            incoming.write(outgoing.read())
        if done:
            return
    raise AssertionError("handshake did not finish")


def test_the_demo_certificate_is_trusted_for_salesforce_and_kept_across_runs(
    tmp_path: Path,
) -> None:
    from emulators.salesforce.tls import ensure_certs

    make_certs = _module("deploy/emulators/make_certs.py").make_certs
    paths = make_certs(tmp_path, ["salesforce", "localhost", "127.0.0.1"])
    _handshake(paths.ca, paths.server_cert, paths.server_key, "salesforce")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(paths.ca, paths.server_cert, paths.server_key, "whmcs")
    made = {path: path.read_bytes() for path in tmp_path.iterdir()}
    assert {path.name for path in made} >= {"ca.pem", "jwt-private.pem", "jwt-public.pem"}
    # The emulator, and the job's next run, keep what is there: the engine's trust holds.
    make_certs(tmp_path, ["salesforce"])
    ensure_certs(tmp_path)
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == made


def test_the_demo_payload_key_is_a_valid_key_file() -> None:
    keys = ROOT / _env_file(DEMO_COMPOSE_ENV)["TEMPORAL_PAYLOAD_KEYS_SECRET"]
    settings = load_settings(temporal_payload_keys_file=keys, temporal_payload_keys=None)
    assert settings.temporal_payload_keys is not None


def test_the_fulfillment_tool_runs_the_demo_order_against_the_compose_network() -> None:
    tool = _service("fulfillment")
    assert tool["profiles"] == ["tools"]
    stack_file = _mounted_file(tool, f"{tool['working_dir']}/.dev/stack.json")
    stack = yaml.safe_load(stack_file.read_text())
    env = stack_env(stack)
    engine_env = _env_file(DEMO_ENGINE_ENV)
    # `demo order` lays the stack's values over the container's settings: they must agree.
    for name, value in env.items():
        if name in engine_env:
            assert engine_env[name] == value, name
    assert env["TEMPORAL_ADDRESS"] == _defaulted(tool["environment"]["TEMPORAL_ADDRESS"])
    assert "TEMPORAL_PAYLOAD_KEYS" not in env, "the container has them from the secret"
    # The links it prints are for the operator's browser, on the host.
    ui = urlsplit(stack["temporal"]["ui_url"])
    assert _published(_service("temporal-ui"))[8080] == ui.port
    assert f"{urlsplit(stack['api']['url']).port}:8000" in _service("api")["ports"]


# --- A Temporal cluster or Temporal Cloud ----------------------------------------------------

EXTERNAL = "deploy/compose.temporal-external.yml"
BUNDLED_TEMPORAL = {"temporal", "temporal-schema", "temporal-search-attributes", "temporal-ui"}


def test_the_external_temporal_override_leaves_the_bundled_server_out() -> None:
    override = _load_yaml(EXTERNAL)["services"]
    for name in BUNDLED_TEMPORAL:
        assert override[name]["profiles"] == ["bundled-temporal"], name
    assert not BUNDLED_TEMPORAL & {n for n, s in _compose()["services"].items() if "profiles" in s}


@pytest.mark.parametrize("name", ["worker", "listener", "api"])
def test_with_external_temporal_processes_keep_every_other_dependency(name: str) -> None:
    override = _load_yaml(EXTERNAL)["services"][name]
    base = _service(name)["depends_on"]
    expected = {k: v for k, v in base.items() if k not in BUNDLED_TEMPORAL}
    assert override["depends_on"] == expected
    assert "!override" in (ROOT / EXTERNAL).read_text()


@pytest.mark.parametrize("name", TEMPORAL_CLIENTS)
def test_with_external_temporal_the_address_and_namespace_must_be_given(name: str) -> None:
    env = _load_yaml(EXTERNAL)["services"][name]["environment"]
    for setting in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE"):
        match = _INTERPOLATION.fullmatch(env[setting])
        assert match is not None and match["name"] == setting and match["kind"] == "?"


# --- The image ---------------------------------------------------------------------------


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _stages() -> dict[str, str]:
    """The Dockerfile's stages: name -> its text from its FROM line."""
    dockerfile = _dockerfile()
    starts = [m.start() for m in re.finditer(r"^FROM ", dockerfile, re.MULTILINE)]
    stages = {}
    for begin, end in zip(starts, [*starts[1:], len(dockerfile)], strict=True):
        text = dockerfile[begin:end]
        name = re.match(r"FROM \S+ AS (\S+)", text)
        assert name is not None, text.splitlines()[0]
        stages[name[1]] = text
    return stages


def test_the_image_is_slim_runs_as_a_fixed_unprivileged_user_and_starts_the_cli() -> None:
    stages = _stages()
    bases = {re.match(r"FROM (\S+)", text)[1] for text in stages.values()}  # type: ignore[index]
    assert all(image.endswith("-slim") for image in bases - set(stages))
    base = stages["base"]
    assert re.search(r"^USER 10001:10001$", base, re.MULTILINE)
    assert 'ENTRYPOINT ["fulfillment"]' in base
    # The directories named volumes are mounted at belong to that user.
    for directory in ("/var/lib/fulfillment/emulator-certs", "/var/lib/fulfillment/emulator-state"):
        assert directory in base
    # Production is the default target (the last stage); both final targets run on that base.
    assert list(stages)[-1] == "production"
    assert stages["production"].startswith("FROM base AS production")
    assert "COPY --from=build /opt/fulfillment /opt/fulfillment" in stages["production"]
    assert stages["emulators"].startswith("FROM base AS emulators")
    assert "COPY --from=emulators-build /opt/fulfillment /opt/fulfillment" in stages["emulators"]


def test_the_image_installs_the_hashed_pins_and_the_project_without_resolving() -> None:
    stages = _stages()
    build = stages["build"]
    flat = re.sub(r"\\\n\s*", "", build)  # continuation lines joined
    assert "--require-hashes --only-binary=:all: --requirement requirements/runtime.txt" in flat
    assert "pip install --no-deps --no-build-isolation ." in build
    # The production target's virtualenv is the build stage's: the `dev` extra is only added in
    # emulators-build, from its own pins.
    assert "requirements/dev.txt" not in build and "[dev]" not in build
    assert "--require-hashes" in stages["emulators-build"]
    assert "--requirement requirements/dev.txt" in stages["emulators-build"]
    assert not (ROOT / "deploy/docker/runtime_requirements.py").exists()


def test_the_build_context_leaves_secrets_and_local_environments_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", ".dev", ".git", "secrets", "tests"} <= ignored


# --- Prometheus and Grafana (profile observability) -------------------------------------------


def test_the_observability_profile_loads_the_rules_and_the_dashboard_with_no_clicks() -> None:
    mounts = {}
    for name in ("prometheus", "grafana"):
        service = _service(name)
        assert service["profiles"] == ["observability"]
        assert all(str(port).startswith("127.0.0.1:") for port in service["ports"])
        for volume in service["volumes"]:
            local, container = volume.split(":")[:2]
            assert (ROOT / local).exists(), volume
            mounts[container] = ROOT / local
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    rules = mounts["/etc/prometheus/alerts.yml"].read_text()
    assert jobs == {"fulfillment-worker", "fulfillment-listener", "fulfillment-api"}
    assert all(f'job="{job}"' in rules for job in jobs), "the rules watch the jobs scraped"
    provisioning = mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards/fulfillment.yml").read_text())[
        "providers"
    ]
    assert mounts[f"{provider['options']['path']}/fulfillment.json"].name == (
        "fulfillment-dashboard.json"
    )


def test_every_dashboard_panel_uses_the_datasource_variable_and_has_a_unit() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/fulfillment-dashboard.json").read_text())
    (variable,) = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    for wanted in (
        "temporal_worker_task_slots_available",
        "temporal_activity_schedule_to_start_latency_bucket",
        "temporal_workflow_task_execution_failed_total",
        "fulfillment_salesforce_api_usage",
        "fulfillment_cache_outbox_depth",
    ):
        assert wanted in exprs
