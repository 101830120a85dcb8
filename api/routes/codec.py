"""The Temporal UI's remote codec: `POST /api/codec/decode` and `/api/codec/encode`.

History stays encrypted (`TEMPORAL_PAYLOAD_KEYS`); the UI, started with `--ui-codec-endpoint`
pointing here, sends the payloads it shows and gets them back decoded, so an operator reads
inputs and results in clear while the server never holds them so. The body is the protobuf JSON
of `temporal.api.common.v1.Payloads` in both directions.

Who may use it is `API_CODEC_AUTH`: in production "oidc", the access token of an operator the UI
signed in (`codec.passAccessToken`), checked by `api.oidc`; "token", the ops token, for the CLI's
`--codec-endpoint`; "none" for the local stack only. Encode matters as much as decode: the UI
encodes a signal's input here before sending it. The `X-Namespace` the UI sends must name our
namespace (in "oidc" mode it must be sent), so a UI pointed at another namespace cannot use our
keys.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api.auth import ops_scope
from api.errors import ApiError, ErrorBody
from api.oidc import IdentityProviderUnavailableError, InvalidOperatorTokenError
from api.services import ApiServices, services
from config.logging import get_logger
from config.payload_keys import parse_payload_keys
from temporal_connection.codec import EncryptionCodec, PayloadDecryptionError

log = get_logger(__name__)
router = APIRouter(tags=["temporal ui codec"])
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {
        "model": ErrorBody,
        "description": "not a Payloads document, or a payload that no key opens",
    },
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    503: {"model": ErrorBody, "description": "no payload keys configured"},
}


def _codec(api: ApiServices) -> EncryptionCodec:
    keys = api.settings.temporal_payload_keys
    if keys is None or not keys.get_secret_value():
        raise ApiError(503, "unavailable", "TEMPORAL_PAYLOAD_KEYS is not set")
    return EncryptionCodec(parse_payload_keys(keys.get_secret_value()))


async def _authorized(request: Request, api: Annotated[ApiServices, Depends(services)]) -> None:
    mode = api.settings.codec_auth
    namespace = request.headers.get("x-namespace")
    ours = api.settings.temporal_namespace
    if (namespace is not None and namespace != ours) or (namespace is None and mode == "oidc"):
        raise ApiError(403, "forbidden", f"this codec serves the namespace {ours!r} only")
    if mode == "token":
        ops_scope(request, api)
    elif mode == "oidc":
        await _operator_token(request, api)


async def _operator_token(request: Request, api: ApiServices) -> None:
    assert api.oidc is not None, "open_services builds the verifier in oidc mode"
    kind, _, token = request.headers.get("authorization", "").partition(" ")
    if kind.casefold() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "sign in to the Temporal UI", headers=_CHALLENGE)
    try:
        await api.oidc.verify(token)
    except InvalidOperatorTokenError as invalid:
        raise ApiError(401, "unauthorized", str(invalid), headers=_CHALLENGE) from None
    except IdentityProviderUnavailableError as down:
        raise ApiError(503, "unavailable", str(down)) from None


async def _payloads(request: Request) -> Payloads:
    try:
        return json_format.Parse(await request.body(), Payloads())
    except (json_format.ParseError, UnicodeDecodeError) as error:
        # The parser's words go to the log; the caller learns what was expected.
        log.info("codec.bad_document", error=str(error)[:200])
        raise ApiError(400, "bad_request", "not a Payloads document") from None


def _answer(payloads: Payloads) -> Response:
    return Response(json_format.MessageToJson(payloads), media_type="application/json")


@router.post("/api/codec/decode", responses=_RESPONSES, dependencies=[Depends(_authorized)])
async def decode(request: Request, api: Annotated[ApiServices, Depends(services)]) -> Response:
    codec = _codec(api)
    payloads = await _payloads(request)
    try:
        decoded = await codec.decode(list(payloads.payloads))
    except PayloadDecryptionError as error:
        # Which key ids are configured is not the caller's business: the log has it.
        log.warning("codec.undecryptable", error=str(error))
        raise ApiError(
            400, "bad_request", "a payload could not be decrypted with the configured keys"
        ) from None
    return _answer(Payloads(payloads=decoded))


@router.post("/api/codec/encode", responses=_RESPONSES, dependencies=[Depends(_authorized)])
async def encode(request: Request, api: Annotated[ApiServices, Depends(services)]) -> Response:
    codec = _codec(api)
    payloads = await _payloads(request)
    return _answer(Payloads(payloads=await codec.encode(list(payloads.payloads))))
