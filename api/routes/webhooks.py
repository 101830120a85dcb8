"""The WHMCS webhook, `POST /api/webhooks/whmcs`: a signed "this client's billing data changed".

Signature scheme (the WHMCS hook that calls us must sign the same way):

    X-WHMCS-Timestamp: <Unix time in whole seconds, when the hook signed>
    X-WHMCS-Signature: sha256=<lower-case hex of HMAC-SHA256(key, timestamp + "." + body)>

`key` is `WHMCS_WEBHOOK_SECRET` (its UTF-8 bytes), `timestamp` the header's exact text and
`body` the raw request bytes as sent. The signature is checked in constant time over the raw
bytes *before* the body is parsed, and a timestamp further than
`WHMCS_WEBHOOK_TOLERANCE_SECONDS` from our clock (either way) is refused, so a captured request
can be replayed only within that window. Inside it, each accepted signature is remembered in
Redis (set if absent, expiring after twice the window) with the answer it got: a replay gets the
same answer and acts no more. Without Redis a replay acts again, which only invalidates the same
keys again.

A valid request names the client (`{"event": "InvoicePaid", "client_id": 42}`) and its
`whmcs:subscriptions|invoices|client:<id>` keys are deleted; if Redis refuses, they wait in the
outbox and the worker's drainer deletes them later: the webhook is answered 202 either way.
A forged, stale or unsigned request is 401 and changes nothing; without a configured secret the
route is 503 (it cannot tell a genuine request from a forged one).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.exceptions import RedisError

from api.errors import ApiError, ErrorBody
from api.services import ApiServices, services
from clients.cache import CacheUnavailableError
from clients.errors import ClientError
from config.logging import get_logger

log = get_logger(__name__)

router = APIRouter(tags=["webhooks"])

TIMESTAMP_HEADER = "X-WHMCS-Timestamp"
SIGNATURE_HEADER = "X-WHMCS-Signature"
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_CHALLENGE = {"WWW-Authenticate": 'HMAC-SHA256 realm="whmcs-webhook"'}


class SignatureError(Exception):
    """The request is not proven to come from WHMCS now; `str()` says why (safe to answer)."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-WHMCS-Signature` value for this timestamp and body."""
    message = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    *,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    tolerance: float,
) -> None:
    """Raise `SignatureError` unless `signature` signs `timestamp` + body within `tolerance`."""
    if not timestamp or not signature:
        raise SignatureError(f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError(f"{TIMESTAMP_HEADER} is not a Unix time in seconds")
    if abs(now - int(timestamp)) > tolerance:
        raise SignatureError(f"{TIMESTAMP_HEADER} is outside the accepted window")
    given = _SIGNATURE.fullmatch(signature.strip())
    if given is None:
        raise SignatureError(f"{SIGNATURE_HEADER} is not sha256=<64 hex digits>")
    expected = sign(secret, timestamp, body).removeprefix("sha256=")
    if not hmac.compare_digest(expected.encode(), given.group(1).lower().encode()):
        raise SignatureError("the signature does not match")


class WhmcsEvent(BaseModel):
    # WHMCS hooks carry more than we read; what we do not know is ignored, not refused.
    model_config = ConfigDict(extra="ignore", frozen=True)

    event: str = Field(min_length=1, max_length=100, description="the WHMCS hook point")
    # A PHP hook often sends ids as text ("42"); that is accepted, a bool or a fraction is not.
    client_id: int = Field(gt=0, le=2**63 - 1, description="the WHMCS client id")

    @field_validator("client_id", mode="before")
    @classmethod
    def _no_bool_or_fraction(cls, value: Any) -> Any:
        if isinstance(value, bool | float):
            raise ValueError("must be an integer")
        return value


class WebhookAccepted(BaseModel):
    client_id: int
    keys: int = Field(description="cache keys invalidated (or queued) for this client")
    deferred: bool = Field(description="Redis was unavailable: the keys wait in the outbox")


def _body_schema() -> dict[str, Any]:
    # The body is read raw (the signature covers its bytes), so its schema is stated here.
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": WhmcsEvent.model_json_schema()}},
        },
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": description,
            }
            for name, description in (
                (TIMESTAMP_HEADER, "Unix time in seconds when the hook signed"),
                (SIGNATURE_HEADER, 'sha256=<hex HMAC-SHA256 of timestamp + "." + body>'),
            )
        ],
    }


@router.post(
    "/api/webhooks/whmcs",
    status_code=202,
    response_model=WebhookAccepted,
    responses={
        401: {"model": ErrorBody, "description": "missing, forged or stale signature"},
        422: {"model": ErrorBody, "description": "the signed body is not a valid event"},
        503: {"model": ErrorBody, "description": "no secret configured, or storage down"},
    },
    openapi_extra=_body_schema(),
    summary="WHMCS says a client's billing data changed: invalidate its cached reads",
)
async def whmcs_webhook(
    request: Request, api: Annotated[ApiServices, Depends(services)]
) -> WebhookAccepted:
    secret = api.settings.whmcs_webhook_secret
    if secret is None or not secret.get_secret_value():
        raise ApiError(503, "unavailable", "the WHMCS webhook is not configured")
    body = await request.body()
    try:
        verify_signature(
            secret.get_secret_value(),
            timestamp=request.headers.get(TIMESTAMP_HEADER),
            signature=request.headers.get(SIGNATURE_HEADER),
            body=body,
            now=time.time(),
            tolerance=api.settings.whmcs_webhook_tolerance_seconds,
        )
    except SignatureError as exc:
        log.warning("webhook.whmcs_refused", reason=str(exc))
        raise ApiError(401, "unauthorized", str(exc), headers=_CHALLENGE) from None
    try:
        event = WhmcsEvent.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ApiError(422, "invalid_request", problems) from None
    seen = _seen_key(api, request.headers.get(SIGNATURE_HEADER) or "")
    first = await _first_answer(api, seen)
    if first is not None:
        log.info("webhook.whmcs_replayed", whmcs_client_id=first.client_id)
        return first
    keys = api.keys.for_whmcs_client(event.client_id)
    deferred = False
    try:
        await api.cache.delete(keys)
    except CacheUnavailableError as down:
        try:
            await api.store.defer_invalidation(keys, f"whmcs webhook {event.event}")
        except ClientError:
            # Neither Redis nor Postgres: say so, and WHMCS's caller may send it again.
            raise ApiError(503, "unavailable", "cannot invalidate now; retry later") from None
        deferred = True
        log.warning("webhook.whmcs_invalidation_deferred", error=str(down))
    log.info("webhook.whmcs", hook=event.event, whmcs_client_id=event.client_id, deferred=deferred)
    answer = WebhookAccepted(client_id=event.client_id, keys=len(keys), deferred=deferred)
    await _remember(api, seen, answer, ttl=2 * api.settings.whmcs_webhook_tolerance_seconds)
    return answer


def _seen_key(api: ApiServices, signature: str) -> str:
    digest = hashlib.sha256(signature.encode()).hexdigest()[:32]
    return f"{api.settings.cache_key_prefix}webhooks:whmcs:seen:{digest}"


async def _first_answer(api: ApiServices, key: str) -> WebhookAccepted | None:
    try:
        stored = await api.redis.get(key)
    except (RedisError, OSError) as error:
        log.warning("webhook.replay_check_unavailable", error=type(error).__name__)
        return None
    if stored is None:
        return None
    try:
        return WebhookAccepted.model_validate_json(stored)
    except ValidationError:
        return None


async def _remember(api: ApiServices, key: str, answer: WebhookAccepted, *, ttl: int) -> None:
    try:
        await api.redis.set(key, answer.model_dump_json(), nx=True, ex=ttl)
    except (RedisError, OSError) as error:
        log.warning("webhook.replay_record_unavailable", error=type(error).__name__)
