"""The public catalog, `GET /api/public/services/catalog`: no auth, never personalized.

Nothing of the request but the client address (for the rate limit) and `If-None-Match` is read:
cookies and Authorization are ignored, and the response carries nothing that depends on who
asks (no rate-limit counters either), so a browser, a CDN or a proxy may share one copy.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from api.catalog import Catalog, CatalogReader, CatalogUnavailableError
from api.errors import ApiError, ErrorBody
from api.ratelimit import RateLimiter
from api.services import ApiServices, services
from config.logging import get_logger

log = get_logger(__name__)

router = APIRouter(tags=["public catalog"])

PATH = "/api/public/services/catalog"
# Errors are about this moment (and, for 429, this client): no cache may keep them.
_NOT_STORED = {"Cache-Control": "no-store"}


def catalog_reader(
    request: Request, api: Annotated[ApiServices, Depends(services)]
) -> CatalogReader:
    # Per process, made on first use: it holds the fill in flight and the outage fallback.
    reader: CatalogReader | None = getattr(request.app.state, "catalog_reader", None)
    if reader is None:
        reader = CatalogReader(
            client=api.redis,
            cache=api.cache,
            salesforce=api.salesforce,
            pricebook=api.settings.catalog_pricebook_name,
            ttl_seconds=api.settings.services_cache_safety_ttl_seconds,
        )
        request.app.state.catalog_reader = reader
    return reader


def catalog_limiter(
    request: Request, api: Annotated[ApiServices, Depends(services)]
) -> RateLimiter:
    limiter: RateLimiter | None = getattr(request.app.state, "catalog_limiter", None)
    if limiter is None:
        limiter = RateLimiter(
            api.redis,
            key_prefix=f"{api.keys.prefix}ratelimit:public-catalog:",
            limit=api.settings.catalog_rate_limit_per_minute,
            period=60.0,
        )
        request.app.state.catalog_limiter = limiter
    return limiter


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110's weak comparison, as If-None-Match asks: `W/` is ignored, `*` matches."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "Cache-Control": {"description": "public, max-age=…, s-maxage=…"},
            "ETag": {"description": "strong validator of the body"},
        }
    },
    304: {"description": "not modified: the If-None-Match ETag is current"},
    429: {
        "model": ErrorBody,
        "description": "this client address made too many requests",
        "headers": {"Retry-After": {"description": "seconds to wait"}},
    },
    503: {"model": ErrorBody, "description": "the catalog is unavailable"},
}


@router.get(
    PATH,
    response_model=Catalog,
    responses=_RESPONSES,
    summary="The public catalog: active products of the portal price book with prices",
)
async def public_catalog(
    request: Request,
    reader: Annotated[CatalogReader, Depends(catalog_reader)],
    limiter: Annotated[RateLimiter, Depends(catalog_limiter)],
    api: Annotated[ApiServices, Depends(services)],
) -> Response:
    # The address uvicorn reports: the peer, or X-Forwarded-For from a trusted proxy only.
    address = request.client.host if request.client else "unknown"
    verdict = await limiter.hit(address)
    if not verdict.allowed:
        raise ApiError(
            429,
            "rate_limited",
            "too many requests from this address; retry later",
            headers={**_NOT_STORED, "Retry-After": verdict.retry_after_header},
        )
    try:
        document = await reader.read()
    except CatalogUnavailableError as exc:
        log.warning("catalog.unavailable", error=str(exc))
        raise ApiError(
            503,
            "unavailable",
            "the catalog is unavailable; try again later",
            headers={**_NOT_STORED, "Retry-After": "5"},
        ) from None
    max_age = api.settings.catalog_max_age_seconds
    headers = {
        "Cache-Control": f"public, max-age={max_age}, s-maxage={max_age}",
        "ETag": document.etag,
    }
    if etag_matches(request.headers.get("if-none-match"), document.etag):
        return Response(status_code=304, headers=headers)
    return Response(document.body, media_type="application/json", headers=headers)
