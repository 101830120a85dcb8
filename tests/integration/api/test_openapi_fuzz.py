"""The published OpenAPI schema, tried against the real app by schemathesis.

Every operation of `/api/openapi.json` gets generated requests, valid ones and invalid ones, each
sent once with the portal's token and once with the operators', to the app as `fulfillment api`
serves it: `create_app(settings)` opening its own Postgres, Redis, Temporal and Salesforce in its
lifespan. No answer may be a server error, and every answer must be one the schema declares, in
status code, content type, headers and body.

The engine around it is healthy and live, so that a 5xx can only mean a fault: the CDC listener
runs (else `/api/health/cdc` rightly answers 503), and the read model holds fulfillments for the
ids the schema gives as examples, which Hypothesis tries first (so the reads answer 200 with a
body to check, not only 404s). The app and the listener each run in a thread on an event loop of
their own, since schemathesis calls the app synchronously.

The operations are driven one by one with Hypothesis here rather than through schemathesis'
pytest loader (`schemathesis.pytest.from_fixture`), which sets a private attribute that pytest 9
no longer has. Every failing operation is reported, each with the request that broke it as curl.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.core.result import Ok

from api.app import create_app
from cdc_listener.main import run_listener
from config.settings import Settings
from domain.errors import ErrorCode
from domain.fulfillment import FulfillmentStatus, Step
from emulators.common.server import ThreadedServer
from tests.fixtures.engine import Engine
from tests.integration.api._support import Record

SERVICE_TOKEN = "fuzz-service-token-0123456789abcdef"
OPS_TOKEN = "fuzz-ops-token-fedcba9876543210"
# The ids the schema gives as examples (api/params.py).
EXAMPLE_ORDER, EXAMPLE_ACCOUNT = "801000000000001AAA", "001000000000001AAA"
# schemathesis' own names (its schemathesis.toml `[checks]`): no 5xx, and every answer one the
# schema declares. Checks that judge the API's choices rather than its schema (whether invalid
# data is refused with exactly a 4xx, say) are left out: the API's own tests decide those.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
# Per operation and mode; with both tokens, about 25 x 2 x 2 requests per operation, the whole
# schema in well under a minute. Raise it locally to look harder.
MAX_EXAMPLES = 25

Operation = APIOperation[Any, Any, Any, Any]


@contextmanager
def listener_running(app_settings: Settings) -> Iterator[None]:
    """The real CDC listener on a loop of its own, until the block ends."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(run_listener(app_settings, stop=stop, instance="fuzz-listener"),),
        name="fuzz-listener",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


@pytest_asyncio.fixture
async def example_fulfillments(record: Record) -> None:
    await record(
        EXAMPLE_ORDER,
        EXAMPLE_ACCOUNT,
        status=FulfillmentStatus.ACTIVATED,
        step=Step.INVALIDATE_CACHES,
        whmcs_order_id=101,
        whmcs_invoice_id=202,
        whmcs_service_ids=(303, 304),
    )
    await record(
        "801000000000002AAA",
        EXAMPLE_ACCOUNT,
        status=FulfillmentStatus.FAILED,
        step=Step.VALIDATE_PAYMENT_METHOD,
        error_code=ErrorCode.PAYMENT_METHOD_MISSING,
        error_message="WHMCS has no payment method for client 7",
    )


@pytest.fixture
def served_api(engine: Engine, example_fulfillments: None) -> Iterator[str]:
    app_settings = engine.settings.model_copy(
        update={
            "api_service_token": SecretStr(SERVICE_TOKEN),
            "api_ops_token": SecretStr(OPS_TOKEN),
            "whmcs_webhook_secret": SecretStr("fuzz-webhook-secret"),
            "listener_metrics_port": 0,
        }
    )
    with listener_running(app_settings), ThreadedServer(create_app(app_settings)) as server:
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.base_url}/api/health/cdc").status_code != 200:
            assert time.monotonic() < deadline, "the listener never connected"
            time.sleep(0.2)
        yield server.base_url


def _exercise(operation: Operation, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        # The schema's examples first, then generated requests. The first failing request is
        # reported as it was sent: shrinking it only costs time.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def send(case: Case[Operation]) -> None:
        for token in (SERVICE_TOKEN, OPS_TOKEN):
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, timeout=10)

    send()


def _answered(base_url: str) -> dict[tuple[str, str], float]:
    """Requests the app answered so far, by route template and status (its own metrics)."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text):
        for sample in family.samples:
            if sample.name == "fulfillment_api_requests_total":
                key = (sample.labels["route"], sample.labels["status"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def test_no_generated_request_makes_the_api_fail_or_break_its_schema(served_api: str) -> None:
    before = _answered(served_api)
    checks = {"enabled": False, **{name: {"enabled": True} for name in CHECKS}}
    schema = schemathesis.openapi.from_url(
        f"{served_api}/api/openapi.json",
        config=schemathesis.Config.from_dict({"base-url": served_api, "checks": checks}),
        timeout=10,
    )
    failures: dict[str, str] = {}
    tried = 0
    for loaded in schema.get_all_operations():
        assert isinstance(loaded, Ok), f"the schema does not load: {loaded.err()}"
        operation = loaded.ok()
        tried += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _exercise(operation, mode)
            except Unsatisfiable:
                # Nothing of it can be made invalid (no parameters, no body): nothing to send.
                assert mode is GenerationMode.NEGATIVE, operation.label
            # Failed checks come as a group (a BaseExceptionGroup); a request that got no
            # answer as an ordinary exception.
            except (Exception, BaseExceptionGroup) as failure:
                failures[f"{operation.label} ({mode.value})"] = (
                    f"{type(failure).__name__}: {failure}"
                )
    assert tried >= 14, "every route of the API is in the schema"
    assert not failures, "\n\n".join(f"== {label}\n{text}" for label, text in failures.items())
    # The requests got past the doors (auth, id checks) to the handlers: a fuzz answered only
    # 401 and 422 would prove little about the bodies.
    after = _answered(served_api)
    reached = {key for key, count in after.items() if count > before.get(key, 0.0)}
    for route in ("/api/orders/{sfOrderId}/fulfillment", "/api/accounts/{sfAccountId}/orders"):
        assert (route, "200") in reached, sorted(reached)
