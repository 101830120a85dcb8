"""docs/openapi.json is the schema the app serves, and it says which token each route takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from api.openapi import render, schema
from config.settings import load_settings

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"
METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return schema()


def test_the_committed_schema_is_what_the_app_serves_now() -> None:
    assert COMMITTED.read_text("utf-8") == render(), (
        "docs/openapi.json is stale: run `python -m api.openapi > docs/openapi.json`"
    )


def test_no_setting_changes_the_schema() -> None:
    configured = load_settings(
        api_docs=True,
        api_codec_auth="none",
        api_codec_cors_origins="https://temporal-ui.example.jp",
    )
    assert render(create_app(configured).openapi()) == render()


def test_the_committed_text_is_sorted_indented_and_ends_with_one_newline() -> None:
    text = COMMITTED.read_text("utf-8")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_both_tokens_are_http_bearer_schemes_with_a_description(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {"ServiceToken", "OpsToken"}
    for name, token in (("ServiceToken", "API_SERVICE_TOKEN"), ("OpsToken", "API_OPS_TOKEN")):
        assert schemes[name]["type"] == "http"
        assert schemes[name]["scheme"] == "bearer"
        assert token in schemes[name]["description"]


def test_every_operator_route_requires_the_ops_token(document: dict[str, Any]) -> None:
    ops = [(p, m, o) for p, m, o in operations(document) if p.startswith("/api/ops/")]
    assert len(ops) >= 8
    for path, method, operation in ops:
        assert operation.get("security") == [{"OpsToken": []}], (method, path)


def test_every_portal_read_requires_the_service_token(document: dict[str, Any]) -> None:
    portal = [
        (p, m, o)
        for p, m, o in operations(document)
        if p.startswith(("/api/orders/", "/api/accounts/"))
    ]
    assert {p for p, _, _ in portal} == {
        "/api/orders/{sfOrderId}/fulfillment",
        "/api/accounts/{sfAccountId}/orders",
    }
    for path, method, operation in portal:
        assert method == "get", path
        assert operation.get("security") == [{"ServiceToken": []}], path


def test_health_public_webhook_and_codec_routes_declare_no_bearer_token(
    document: dict[str, Any],
) -> None:
    # The webhook is signed (X-WHMCS-Signature), the codec's check depends on API_CODEC_AUTH
    # (docs/api.md): neither takes one of the two tokens the schemes describe.
    others = [
        (p, m, o)
        for p, m, o in operations(document)
        if p.startswith(("/api/health", "/api/public/", "/api/webhooks/", "/api/codec/"))
    ]
    assert len(others) >= 8
    for path, method, operation in others:
        assert "security" not in operation, (method, path)


def test_every_operation_is_one_of_the_audiences_above(document: dict[str, Any]) -> None:
    prefixes = (
        "/api/ops/",
        "/api/orders/",
        "/api/accounts/",
        "/api/health",
        "/api/public/",
        "/api/webhooks/",
        "/api/codec/",
    )
    unplaced = [p for p, _, _ in operations(document) if not p.startswith(prefixes)]
    assert unplaced == [], "a new kind of route: say in docs/api.md (and here) who may call it"


def test_the_scheme_adds_no_authorization_parameter(document: dict[str, Any]) -> None:
    # The header is the scheme's; a parameter of the same name would make clients send two.
    for path, method, operation in operations(document):
        names = {p["name"].casefold() for p in operation.get("parameters", [])}
        assert "authorization" not in names, (method, path)
