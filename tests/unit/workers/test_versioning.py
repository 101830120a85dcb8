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


def test_every_workflow_type_upgrades_with_the_deployment() -> None:
    # docs/workflow-changes.md says why; a behavior in a workflow.defn would be sent by
    # unversioned workers too, and the server refuses it there.
    config = deployment_config(load_settings(worker_deployment_name="fulfillment"))
    assert config is not None
    assert config.default_versioning_behavior is VersioningBehavior.AUTO_UPGRADE
    for workflow_class in (OrderFulfillment, FulfillmentReconciliation):
        definition = getattr(workflow_class, "__temporal_workflow_definition")
        assert definition.versioning_behavior is VersioningBehavior.UNSPECIFIED
