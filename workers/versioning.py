"""Worker Versioning: the Worker Deployment and build a worker declares (workflow-changes.md).

Opt-in with WORKER_DEPLOYMENT_NAME. A versioned worker declares its deployment and build id; the
server sends it work once its version is made current (or ramping), so a deploy is rolled out
and back with `temporal worker deployment set-current-version` instead of by replacing workers.
Unset, workers run unversioned as before (the dev stack, the tests, the benchmarks).
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import WorkerDeploymentConfig

from config.settings import Settings

_SOURCE = Path(__file__).resolve().parents[1]


def build_id(settings: Settings) -> str:
    """WORKER_BUILD_ID, else the package version plus the checkout's commit where there is one."""
    if settings.worker_build_id:
        return settings.worker_build_id
    try:
        version = metadata.version("order-fulfillment")
    except metadata.PackageNotFoundError:
        version = "0"
    commit = _commit()
    return f"{version}+{commit}" if commit else version


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """The worker's versioning, or None for an unversioned worker."""
    if not settings.worker_deployment_name:
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(
            deployment_name=settings.worker_deployment_name, build_id=build_id(settings)
        ),
        use_worker_versioning=True,
        # Every workflow type auto-upgrades (docs/workflow-changes.md says why). A type's own
        # behavior would go in its `workflow.defn`, and unversioned workers (the dev stack,
        # the tests) would send it too, which the server refuses.
        default_versioning_behavior=VersioningBehavior.AUTO_UPGRADE,
    )


def _commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(_SOURCE), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None
