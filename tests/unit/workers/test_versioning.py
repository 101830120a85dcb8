"""Which Worker Deployment and build a worker declares, from its settings."""

from __future__ import annotations

import re
from importlib import metadata

from temporalio.common import VersioningBehavior

from config.settings import load_settings
from workers.versioning import build_id, deployment_config
from workflows.order_fulfillment import OrderFulfillment
from workflows.reconciliation import FulfillmentReconciliation


def test_without_a_deployment_name_workers_run_unversioned() -> None:
    assert deployment_config(load_settings()) is None
    assert deployment_config(load_settings(worker_deployment_name="")) is None


def test_a_named_deployment_declares_the_build_the_settings_give() -> None:
    config = deployment_config(
        load_settings(worker_deployment_name="fulfillment", worker_build_id="2026.12.07-1")
    )
    assert config is not None and config.use_worker_versioning
    assert (config.version.deployment_name, config.version.build_id) == (
        "fulfillment",
        "2026.12.07-1",
    )


def test_the_default_build_id_is_the_package_version_and_the_checkouts_commit() -> None:
    built = build_id(load_settings())
    version = metadata.version("order-fulfillment")
    assert re.fullmatch(rf"{re.escape(version)}(\+[0-9a-f]{{12}})?", built), built


def test_fulfillments_upgrade_with_the_deployment_and_reconciliations_stay_pinned() -> None:
    # docs/workflow-changes.md says why: a fulfillment waits up to 14 days, a pass minutes.
    assert OrderFulfillment.__temporal_workflow_definition.versioning_behavior is (  # type: ignore[attr-defined]
        VersioningBehavior.AUTO_UPGRADE
    )
    assert FulfillmentReconciliation.__temporal_workflow_definition.versioning_behavior is (  # type: ignore[attr-defined]
        VersioningBehavior.PINNED
    )
