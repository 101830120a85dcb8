"""docker-compose.yml stays valid and consistent with the code (Docker itself cannot run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from cli.main import build_parser
from config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _subcommands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return set(sub.choices)  # type: ignore[arg-type]


def test_engine_services_run_existing_cli_subcommands() -> None:
    services = _compose()["services"]
    engine = {
        name: s for name, s in services.items() if s.get("image") == "order-fulfillment:latest"
    }
    assert engine, "no engine service in docker-compose.yml"
    for name, service in engine.items():
        assert service["command"][0] in _subcommands(), name


def test_engine_environment_names_are_settings() -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name, service in _compose()["services"].items():
        if service.get("image") != "order-fulfillment:latest":
            continue
        assert set(service["environment"]) <= known, name


def test_compose_registers_every_custom_search_attribute() -> None:
    from devstack.services import SEARCH_ATTRIBUTES

    command = " ".join(_compose()["services"]["temporal-search-attributes"]["command"])
    for name in SEARCH_ATTRIBUTES:
        assert name in command


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # Tests and benchmarks are for development: the image runs the engine only.
    packages = [
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").exists() and p.name not in {"tests", "benchmarks"}
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


def test_no_secret_is_written_into_the_compose_file() -> None:
    secret_names = {
        name.upper()
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }
    assert "TEMPORAL_PAYLOAD_KEYS" in secret_names
    for name, service in _compose()["services"].items():
        if service.get("image") != "order-fulfillment:latest":
            continue
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
        published[int(container)] = int(host)
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


def test_the_temporal_ui_decodes_payloads_through_the_apis_codec_with_a_token() -> None:
    ui, api = _service("temporal-ui"), _service("api")
    endpoint = urlsplit(ui["environment"]["TEMPORAL_CODEC_ENDPOINT"])
    # The operator's browser calls the codec: the API's published port, not a compose name.
    assert endpoint.hostname in {"localhost", "127.0.0.1"}
    assert endpoint.port == _published(api)[_api_port()]
    assert endpoint.path == "/api/codec"
    # Production keeps the codec behind the ops token: the UI must send one.
    assert str(ui["environment"]["TEMPORAL_CODEC_PASS_ACCESS_TOKEN"]).lower() == "true"
    assert "API_CODEC_REQUIRE_AUTH" not in api["environment"], "the default (on) holds"
    # ... and the browser's calls come from the UI's own origin, which CORS must allow.
    ui_origin = f"http://{endpoint.hostname}:{_published(ui)[8080]}"
    origins = api["environment"].get(
        "API_CODEC_CORS_ORIGINS", Settings.model_fields["api_codec_cors_origins"].default
    )
    assert ui_origin in origins.split(",")
