"""Health without auth, over real HTTP."""

from __future__ import annotations

import asyncpg

from domain.errors import ErrorCode
from domain.fulfillment import FulfillmentStatus
from tests.fixtures.api import Api
from tests.integration.api._support import Record


async def test_liveness_and_readiness_answer_without_auth(api: Api) -> None:
    assert (await api.http.get("/api/health")).json() == {"status": "ok"}
    ready = await api.http.get("/api/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": True, "redis": True, "temporal": True}


async def test_metrics_count_requests_by_route_template(api: Api) -> None:
    await api.http.get("/api/health")
    text = (await api.http.get("/metrics")).text
    assert 'fulfillment_api_requests_total{method="GET",route="/api/health",status="200"}' in text


async def test_errors_are_json_with_a_code_and_no_trace(api: Api) -> None:
    missing = await api.http.get("/api/nowhere")
    assert missing.status_code == 404
    assert missing.json() == {"code": "not_found", "message": "Not Found"}


async def test_an_oversized_body_is_refused_before_it_is_read(api: Api) -> None:
    reply = await api.http.post("/api/health", content=b"x" * (300 * 1024))
    assert reply.status_code == 413
    assert reply.json()["code"] == "payload_too_large"


async def test_the_openapi_schema_is_published(api: Api) -> None:
    schema = (await api.http.get("/api/openapi.json")).json()
    assert "/api/health/ready" in schema["paths"]


async def test_every_503_a_health_route_can_answer_is_in_the_schema(api: Api) -> None:
    paths = (await api.http.get("/api/openapi.json")).json()["paths"]
    for route in ("/api/health/ready", "/api/health/cdc", "/api/health/services/cache"):
        assert "503" in paths[route]["get"]["responses"], route


async def test_the_cdc_health_says_disconnected_with_no_listener(api: Api) -> None:
    reply = await api.http.get("/api/health/cdc")
    assert reply.status_code == 503
    assert reply.json()["connected"] is False


def gauge(text: str, name: str, labels: str = "") -> float:
    """The value of one sample of a gauge in a Prometheus exposition."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{wanted} not in /metrics")


async def test_metrics_say_how_things_stand_now(
    api: Api, record: Record, pool: asyncpg.Pool
) -> None:
    await record(
        "801000000000001AAA",
        "001000000000001AAA",
        status=FulfillmentStatus.FAILED,
        error_code=ErrorCode.PAYMENT_METHOD_MISSING,
    )
    await record(
        "801000000000002AAA",
        "001000000000001AAA",
        status=FulfillmentStatus.FAILED,
        error_code=ErrorCode.PAYMENT_METHOD_MISSING,
    )
    await record("801000000000003AAA", "001000000000001AAA", status=FulfillmentStatus.FAILED)
    await record("801000000000004AAA", "001000000000001AAA", status=FulfillmentStatus.ACTIVATED)
    await pool.execute(
        "INSERT INTO cache_invalidation_outbox (keys, reason, created_at)"
        " VALUES ('{portal:orders:detail:x}', 'test', now() - interval '10 minutes')"
    )
    await pool.execute(
        "INSERT INTO cdc_dead_letters (channel, replay_id, reason, message)"
        " VALUES ('/data/OrderChangeEvent', 7, 'malformed', '{}')"
    )

    text = (await api.http.get("/metrics")).text

    assert gauge(text, "fulfillment_failed_fulfillments", 'code="PAYMENT_METHOD_MISSING"') == 2
    assert gauge(text, "fulfillment_failed_fulfillments", 'code="none"') == 1
    assert gauge(text, "fulfillment_failed_fulfillments", 'code="INVALID_ORDER"') == 0
    assert gauge(text, "fulfillment_cache_outbox_depth") == 1
    assert 590 <= gauge(text, "fulfillment_cache_outbox_oldest_seconds") <= 700
    assert gauge(text, "fulfillment_dead_letters_waiting") == 1
    for dependency in ("postgres", "redis", "temporal"):
        assert gauge(text, "fulfillment_api_dependency_up", f'dependency="{dependency}"') == 1
