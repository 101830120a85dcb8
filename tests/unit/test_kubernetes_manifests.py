"""deploy/kubernetes/ renders, and what it renders runs the engine as the runbook says.

The base and the production overlay are rendered with `kubectl kustomize` (Debian's
`kubernetes-client`; .ci/run installs it) and the objects checked: the three Deployments with
probes, resources, graceful termination and a locked-down pod; the migrate Job; the
PodDisruptionBudgets; the API's Service and Ingress; secrets only ever referenced; the
PodMonitor and PrometheusRule against deploy/prometheus; the dashboard ConfigMap; and every
setting a process needs given to it, by loading the settings each container would see. Where
kubectl is missing the rendering tests skip, saying how to install it.

Debian's kubectl (1.20) carries kustomize 2.0, which lacks most of what kustomize added since
(`labels`, `components`, `replicas`, `patches`, `envs`, generator `options`); the
kustomizations keep to what it reads, and a test here holds them to it wherever a newer kubectl
does the rendering.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from api.routes.health import router as health_router
from config.settings import API, LISTENER, MIGRATE, WORKER, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy/kubernetes"
TARGETS = {"base": KUSTOMIZE / "base", "production": KUSTOMIZE / "overlays/production"}
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
DASHBOARD = ROOT / "deploy/grafana/fulfillment-dashboard.json"
KUBECTL = shutil.which("kubectl")
NO_KUBECTL = (
    "kubectl is not installed, so deploy/kubernetes cannot be rendered: "
    "`apt-get install kubernetes-client` (Debian; .ci/run installs it where it can)"
)

# Each Deployment: its command, the settings it cannot start without, its replicas' floor.
PROCESSES = {
    "fulfillment-worker": ("worker", WORKER),
    "fulfillment-listener": ("listener", LISTENER),
    "fulfillment-api": ("api", API),
}
MIGRATE_JOB = "fulfillment-migrate"
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
# Settings whose value is a secret: SecretStr fields, and the URLs that carry a password.
SECRET_SETTINGS = {
    name.upper()
    for name, field in Settings.model_fields.items()
    if field.annotation is not None and SecretStr in getattr(field.annotation, "__args__", ())
} | {"DATABASE_URL", "REDIS_URL"}
# Files that hold key material: they must come from a Secret, never a ConfigMap.
SECRET_FILES = {"TEMPORAL_PAYLOAD_KEYS_FILE", "SF_JWT_KEY_FILE", "TEMPORAL_TLS_KEY_FILE"}

Doc = dict[str, Any]


def _render(target: str) -> list[Doc]:
    if KUBECTL is None:
        print(NO_KUBECTL)
        pytest.skip(NO_KUBECTL)
    return _rendered(target)


@cache
def _rendered(target: str) -> list[Doc]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(TARGETS[target])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {target} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(params=sorted(TARGETS))
def docs(request: pytest.FixtureRequest) -> list[Doc]:
    return _render(request.param)


def _objects(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = _objects(docs, kind)
    assert name in found, f"no {kind} {name}; there are {sorted(found)}"
    return found[name]


def _workloads(docs: list[Doc]) -> dict[str, Doc]:
    """The three Deployments and the migrate Job."""
    deployments = _objects(docs, "Deployment")
    return {**deployments, MIGRATE_JOB: _one(docs, "Job", MIGRATE_JOB)}


def _pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def _container(workload: Doc) -> Doc:
    containers = _pod_spec(workload)["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    container: Doc = containers[0]
    return container


def _env(workload: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in _container(workload).get("env", [])}


def _config_map_env(docs: list[Doc], workload: Doc) -> dict[str, str]:
    """The variables a container takes from ConfigMaps whole (envFrom)."""
    maps = _objects(docs, "ConfigMap")
    values: dict[str, str] = {}
    for source in _container(workload).get("envFrom", []):
        assert "secretRef" not in source, "a Secret taken whole hides which settings it sets"
        values.update(maps[source["configMapRef"]["name"]]["data"])
    return values


def _matches(selector: Doc, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "NotIn" and value in expression["values"]:
            return False
        if expression["operator"] == "Exists" and value is None:
            return False
    return True


def _pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def _port(container: Doc, name_or_number: str | int) -> Doc:
    for port in container.get("ports", []):
        if name_or_number in (port.get("name"), port["containerPort"]):
            return dict(port)
    raise AssertionError(f"no container port {name_or_number!r}")


def _alert_rules() -> dict[str, Doc]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def _render_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_monitoring", KUSTOMIZE / "render_monitoring.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Every field kustomize 2.0 (Debian's kubectl 1.20) reads that these kustomizations may use.
KUSTOMIZE_2_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "bases",
    "images",
    "configMapGenerator",
    "patchesStrategicMerge",
    "patchesJson6902",
}
KUSTOMIZE_2_GENERATOR_FIELDS = {"name", "behavior", "env", "files", "literals"}


# --- the generated copies ---------------------------------------------------------------------


def test_the_generated_monitoring_files_are_current() -> None:
    for path, text in _render_script().outputs().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: run python deploy/kubernetes/render_monitoring.py"
        )


def test_the_kustomizations_keep_to_what_debians_kubectl_reads() -> None:
    for path in sorted(KUSTOMIZE.rglob("kustomization.yaml")):
        kustomization = yaml.safe_load(path.read_text())
        where = path.relative_to(ROOT)
        assert set(kustomization) <= KUSTOMIZE_2_FIELDS, f"{where}: {set(kustomization)}"
        for generator in kustomization.get("configMapGenerator", []):
            assert set(generator) <= KUSTOMIZE_2_GENERATOR_FIELDS, f"{where}: {set(generator)}"
        # kustomize 2.0 takes a directory only under `bases`.
        for resource in kustomization.get("resources", []):
            assert (path.parent / resource).is_file(), f"{where}: {resource} is no file"


# --- the processes ----------------------------------------------------------------------------


def test_the_three_deployments_run_the_engine_image_with_their_command(docs: list[Doc]) -> None:
    deployments = _objects(docs, "Deployment")
    assert set(deployments) == set(PROCESSES)
    images = {_container(workload)["image"] for workload in _workloads(docs).values()}
    assert len(images) == 1, f"one image, one tag for every process: {images}"
    for name, (command, _) in PROCESSES.items():
        deployment = deployments[name]
        assert _container(deployment)["args"] == [command]
        assert "command" not in _container(deployment), "the image's entrypoint is `fulfillment`"
        assert deployment["spec"]["replicas"] >= 2, name
        assert _matches(deployment["spec"]["selector"], _pod_labels(deployment))


def test_every_deployment_has_probes_on_its_named_ports(docs: list[Doc]) -> None:
    api_paths = {route.path for route in health_router.routes}  # type: ignore[attr-defined]
    for name, deployment in _objects(docs, "Deployment").items():
        container = _container(deployment)
        env = _env(deployment)
        assert all(port.get("name") for port in container["ports"]), f"{name}: unnamed port"
        for probe in ("livenessProbe", "readinessProbe"):
            assert probe in container, f"{name} has no {probe}"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe not in container:
                continue
            check = container[probe]["httpGet"]
            port = _port(container, check["port"])
            if name == "fulfillment-api":
                assert check["path"] in api_paths, check
                assert port["containerPort"] == int(env["API_PORT"]["value"])
            else:
                # The metrics server is the process's one HTTP endpoint.
                assert check["path"] == "/metrics", check
                setting = f"{PROCESSES[name][0].upper()}_METRICS_PORT"
                assert port["containerPort"] == int(env[setting]["value"]), name


def test_every_workload_has_resources_and_a_locked_down_pod(docs: list[Doc]) -> None:
    for name, workload in _workloads(docs).items():
        container = _container(workload)
        pod = _pod_spec(workload)
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name} {bound}"
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, f"{name}: the image's user"
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        assert pod["automountServiceAccountToken"] is False, name
        # A Service named `api` in the namespace would otherwise set API_PORT=tcp://…
        assert pod["enableServiceLinks"] is False, name


def test_termination_grace_outlasts_each_process_shutdown(docs: list[Doc]) -> None:
    deployments = _objects(docs, "Deployment")
    worker = deployments["fulfillment-worker"]
    default = Settings.model_fields["worker_shutdown_grace_seconds"].default
    grace = float(_env(worker).get("WORKER_SHUTDOWN_GRACE_SECONDS", {}).get("value", default))
    assert _pod_spec(worker)["terminationGracePeriodSeconds"] > max(grace, default)
    # The listener drains the events in hand for up to 10 s, then closes its session.
    listener = deployments["fulfillment-listener"]
    assert _pod_spec(listener)["terminationGracePeriodSeconds"] > 10
    # The API's preStop pause comes out of its grace; requests in flight need the rest.
    api = deployments["fulfillment-api"]
    pause = int(_container(api)["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert _pod_spec(api)["terminationGracePeriodSeconds"] >= pause + 15


def test_the_migrate_job_runs_migrate_once_per_deploy(docs: list[Doc]) -> None:
    job = _one(docs, "Job", MIGRATE_JOB)
    assert _container(job)["args"] == ["migrate"]
    assert _pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    assert job["spec"]["backoffLimit"] >= 1
    # Applied on its own before the rest (`-l app.kubernetes.io/component=migrate`): it must
    # need nothing else of the kustomization, only the Secret created beforehand.
    assert _pod_labels(job)["app.kubernetes.io/component"] == "migrate"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migrate"
    assert "envFrom" not in _container(job)
    assert "secretKeyRef" in _env(job)["DATABASE_URL"]["valueFrom"]


def test_a_disruption_budget_keeps_a_replica_of_each_process(docs: list[Doc]) -> None:
    budgets = _objects(docs, "PodDisruptionBudget")
    for name, deployment in _objects(docs, "Deployment").items():
        covering = [
            budget
            for budget in budgets.values()
            if _matches(budget["spec"]["selector"], _pod_labels(deployment))
        ]
        assert len(covering) == 1, f"{name}: {len(covering)} budgets"
        minimum = covering[0]["spec"]["minAvailable"]
        # At least one stays; fewer than all, or a node drain could never finish.
        assert 1 <= minimum < deployment["spec"]["replicas"], name
        others = [d for d in _workloads(docs).values() if d is not deployment]
        assert not any(_matches(covering[0]["spec"]["selector"], _pod_labels(d)) for d in others)


def test_the_service_and_ingress_route_to_the_api_port(docs: list[Doc]) -> None:
    api = _one(docs, "Deployment", "fulfillment-api")
    api_port = int(_env(api)["API_PORT"]["value"])
    assert _env(api)["API_HOST"]["value"] == "0.0.0.0"
    services = _objects(docs, "Service")
    assert list(services) == ["fulfillment-api"]
    service = services["fulfillment-api"]
    selected = [
        name
        for name, workload in _workloads(docs).items()
        if all(_pod_labels(workload).get(k) == v for k, v in service["spec"]["selector"].items())
    ]
    assert selected == ["fulfillment-api"]
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    for port in ports.values():
        assert _port(_container(api), port["targetPort"])["containerPort"] == api_port
    ingress = _one(docs, "Ingress", "fulfillment-api")
    for rule in ingress["spec"]["rules"]:
        assert rule["host"]
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "fulfillment-api"
            assert backend["port"].get("name") in ports or backend["port"].get("number") in {
                port["port"] for port in ports.values()
            }
            # /metrics answers without authentication: it stays inside the cluster.
            assert path["path"] == "/api", path


def test_the_production_ingress_has_its_host_and_tls() -> None:
    ingress = _one(_render("production"), "Ingress", "fulfillment-api")
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts == {host for tls in ingress["spec"]["tls"] for host in tls["hosts"]}
    assert ingress["metadata"]["namespace"] == "fulfillment"


# --- secrets ----------------------------------------------------------------------------------


def test_no_secret_value_is_in_the_manifests(docs: list[Doc]) -> None:
    for secret in _objects(docs, "Secret").values():
        assert not secret.get("data") and not secret.get("stringData"), secret["metadata"]
    for name, config_map in _objects(docs, "ConfigMap").items():
        leaked = set(config_map.get("data", {})) & (SECRET_SETTINGS | {"TEMPORAL_PAYLOAD_KEYS"})
        assert not leaked, f"ConfigMap {name} holds secrets {leaked}"
    for name, workload in _workloads(docs).items():
        env = _env(workload)
        assert "TEMPORAL_PAYLOAD_KEYS" not in env, f"{name}: the keys come from a mounted file"
        for variable in set(env) & SECRET_SETTINGS:
            source = env[variable]
            assert "value" not in source, f"{name}: {variable} written into the manifest"
            assert "secretKeyRef" in source["valueFrom"], f"{name}: {variable}"


def test_secret_files_are_mounted_from_secrets(docs: list[Doc]) -> None:
    for name, workload in _workloads(docs).items():
        container = _container(workload)
        volumes = {volume["name"]: volume for volume in _pod_spec(workload).get("volumes", [])}
        mounts = {
            mount["mountPath"]: volumes[mount["name"]]
            for mount in container.get("volumeMounts", [])
        }
        for variable, source in _env(workload).items():
            if not variable.endswith("_FILE"):
                continue
            path = source["value"]
            holders = [v for mount, v in mounts.items() if path.startswith(mount.rstrip("/") + "/")]
            assert holders, f"{name}: {variable}={path} is on no mounted volume"
            if variable in SECRET_FILES:
                assert "secret" in holders[0], f"{name}: {variable} must come from a Secret"
                # Readable by the image's group (fsGroup), nobody else.
                assert holders[0]["secret"]["defaultMode"] & 0o007 == 0
                assert _pod_spec(workload)["securityContext"]["fsGroup"] == 10001


# --- settings ---------------------------------------------------------------------------------


def test_every_variable_set_is_a_setting(docs: list[Doc]) -> None:
    for name, workload in _workloads(docs).items():
        names = set(_env(workload)) | set(_config_map_env(docs, workload))
        unknown = names - SETTING_NAMES
        assert not unknown, f"{name} sets {sorted(unknown)}, which no setting reads"


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No setting from this machine's environment or a `.env`: only what a pod would get."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def _stand_in_secret(variable: str) -> str:
    if variable == "DATABASE_URL":
        return "postgresql://fulfillment:password@postgres:5432/fulfillment"
    if variable == "REDIS_URL":
        return "redis://:password@redis:6379/0"
    return f"stand-in-for-{variable.lower()}-{'x' * 32}"


def _stand_in_file(variable: str) -> str:
    if variable == "TEMPORAL_PAYLOAD_KEYS_FILE":
        return f"k2026:{base64.b64encode(bytes(32)).decode()}\n"
    if variable.endswith("KEY_FILE"):
        return "-----BEGIN PRIVATE KEY-----\nstand-in\n-----END PRIVATE KEY-----\n"
    return "-----BEGIN CERTIFICATE-----\nstand-in\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_process_gets_every_setting_it_requires(
    target: str, clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings each container would see, secrets and files stood in for, load with the
    process's own `require` (and its checks: the Salesforce flow, the tokens, the codec)."""
    docs = _render(target)
    requirements = {**{name: need for name, (_, need) in PROCESSES.items()}, MIGRATE_JOB: MIGRATE}
    for name, workload in _workloads(docs).items():
        environment = dict(_config_map_env(docs, workload))
        for variable, source in _env(workload).items():
            if "value" in source:
                environment[variable] = source["value"]
            elif "secretKeyRef" in source["valueFrom"]:
                if not source["valueFrom"]["secretKeyRef"].get("optional"):
                    environment[variable] = _stand_in_secret(variable)
            else:
                raise AssertionError(f"{name}: {variable} from {source['valueFrom']}")
        for variable, value in list(environment.items()):
            if variable.endswith("_FILE"):
                stand_in = clean_environment / name / value.lstrip("/")
                stand_in.parent.mkdir(parents=True, exist_ok=True)
                stand_in.write_text(_stand_in_file(variable))
                environment[variable] = str(stand_in)
        with monkeypatch.context() as scoped:
            for variable, value in environment.items():
                scoped.setenv(variable, value)
            settings = load_settings(require=requirements[name])
        missing = [field for field in requirements[name] if getattr(settings, field) is None]
        assert not missing, f"{name} lacks {missing}"


# --- monitoring -------------------------------------------------------------------------------


def test_the_pod_monitor_scrapes_each_process_as_the_alerts_name_it(docs: list[Doc]) -> None:
    monitor = _one(docs, "PodMonitor", "fulfillment")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    watched = set(re.findall(r'job="([^"]+)"', ALERTS.read_text()))
    jobs = set()
    for name, deployment in _objects(docs, "Deployment").items():
        assert _matches(monitor["spec"]["selector"], _pod_labels(deployment)), name
        container = _container(deployment)
        named = {port["name"] for port in container["ports"]}
        endpoints = [e for e in monitor["spec"]["podMetricsEndpoints"] if e["port"] in named]
        assert len(endpoints) == 1, f"{name}: scraped by {len(endpoints)} endpoints"
        endpoint = endpoints[0]
        assert endpoint["path"] == "/metrics"
        (relabel,) = [r for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
        (source,) = relabel["sourceLabels"]
        label = source.removeprefix("__meta_kubernetes_pod_label_")
        value = next(
            v for k, v in _pod_labels(deployment).items() if re.sub(r"\W", "_", k) == label
        )
        jobs.add(relabel["replacement"].replace("$1", value))
    migrate = _pod_labels(_one(docs, "Job", MIGRATE_JOB))
    assert not _matches(monitor["spec"]["selector"], migrate), "the Job serves no metrics"
    assert jobs == watched == {f"fulfillment-{command}" for command, _ in PROCESSES.values()}


def test_the_prometheus_rule_holds_every_alert(docs: list[Doc]) -> None:
    rule = _one(docs, "PrometheusRule", "fulfillment-alerts")
    rendered = {
        r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r
    }
    assert rendered == _alert_rules()


def test_the_dashboard_config_map_holds_the_dashboard(docs: list[Doc]) -> None:
    dashboards = [
        config_map
        for config_map in _objects(docs, "ConfigMap").values()
        if config_map["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 1
    (text,) = dashboards[0]["data"].values()
    assert json.loads(text) == json.loads(DASHBOARD.read_text())
