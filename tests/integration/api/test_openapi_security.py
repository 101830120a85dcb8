"""The served schema is docs/openapi.json, and declaring the bearer schemes changed no answer.

The schemes (`ServiceToken`, `OpsToken`, api/auth.py) are in the routes' dependencies for the
schema's sake only; the token checks answer exactly as before: `{code, message}` bodies, the
`WWW-Authenticate` challenge, 400 for two Authorization headers.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import SecretStr

from api.openapi import render
from tests.fixtures.api import OPS_TOKEN, SERVICE_TOKEN, Api, serve_api
from tests.fixtures.engine import Engine
from tests.integration.api._support import sf_id

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"
REQUIRED = {"code": "unauthorized", "message": "a bearer token is required"}


async def test_the_served_schema_is_the_committed_one(api: Api) -> None:
    served = (await api.http.get("/api/openapi.json")).json()
    assert render(served) == COMMITTED.read_text("utf-8")


async def test_a_token_that_is_not_a_bearer_token_is_refused_as_before(api: Api) -> None:
    url = f"/api/orders/{sf_id('801')}/fulfillment"
    for header in ("Basic dXNlcjpwYXNz", "Bearer", SERVICE_TOKEN, "Token " + OPS_TOKEN):
        reply = await api.http.get(url, headers={"Authorization": header})
        assert reply.status_code == 401, header
        assert reply.json() == REQUIRED, header
        assert reply.headers["www-authenticate"] == "Bearer", header
    unknown = await api.http.get(url, headers={"Authorization": "Bearer nope"})
    assert unknown.json() == {"code": "unauthorized", "message": "unknown token"}


async def test_the_scheme_name_is_matched_in_any_case(api: Api) -> None:
    reply = await api.http.get(
        "/api/ops/fulfillments", headers={"Authorization": f"bEaReR {OPS_TOKEN}"}
    )
    assert reply.status_code == 200


async def test_two_authorization_headers_are_still_a_400(api: Api) -> None:
    headers = httpx.Headers(
        [("Authorization", f"Bearer {SERVICE_TOKEN}"), ("Authorization", f"Bearer {OPS_TOKEN}")]
    )
    reply = await api.http.get(f"/api/orders/{sf_id('801')}/fulfillment", headers=headers)
    assert reply.status_code == 400
    assert reply.json() == {
        "code": "bad_request",
        "message": "one Authorization header, not several",
    }


async def test_the_docs_page_loads_the_schema_with_its_schemes(engine: Engine) -> None:
    settings = engine.settings.model_copy(
        update={
            "api_service_token": SecretStr(SERVICE_TOKEN),
            "api_ops_token": SecretStr(OPS_TOKEN),
            "api_docs": True,
        }
    )
    async with serve_api(settings) as served:
        page = await served.http.get("/api/docs")
        schema = (await served.http.get("/api/openapi.json")).json()
    assert page.status_code == 200
    assert "/api/openapi.json" in page.text
    assert set(schema["components"]["securitySchemes"]) == {"ServiceToken", "OpsToken"}


async def test_a_token_rotation_serves_both_tokens_of_a_scope(engine: Engine) -> None:
    # Mid-rotation: the new ops token is listed before the old one; both work, each only for
    # its own scope, and a token of neither list is unknown.
    new_ops = "ops-token-new-for-tests-0123456789abc"
    settings = engine.settings.model_copy(
        update={
            "api_service_token": SecretStr(SERVICE_TOKEN),
            "api_ops_token": SecretStr(f"{new_ops},{OPS_TOKEN}"),
        }
    )
    async with serve_api(settings) as served:
        for token in (new_ops, OPS_TOKEN):
            reply = await served.http.get(
                "/api/ops/fulfillments", headers={"Authorization": f"Bearer {token}"}
            )
            assert reply.status_code == 200, reply.text
        portal = await served.http.get(
            f"/api/orders/{sf_id('801')}/fulfillment",
            headers={"Authorization": f"Bearer {new_ops}"},
        )
        assert portal.status_code == 403
        unknown = await served.http.get(
            "/api/ops/fulfillments", headers={"Authorization": f"Bearer {new_ops}x"}
        )
        assert unknown.status_code == 401
