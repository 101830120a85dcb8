"""Health without auth, over real HTTP."""

from __future__ import annotations

from tests.fixtures.api import Api


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
