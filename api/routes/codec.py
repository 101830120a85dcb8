"""The Temporal UI's remote codec: `POST /api/codec/decode` and `/api/codec/encode`.

History stays encrypted (`TEMPORAL_PAYLOAD_KEYS`); the UI, started with `--ui-codec-endpoint`
pointing here, sends the payloads it shows and gets them back decoded, so an operator reads
inputs and results in clear while the server never holds them so. The body is the protobuf JSON
of `temporal.api.common.v1.Payloads` in both directions. In production the UI passes the
operator's token (`codec.passAccessToken`) and this endpoint requires the ops token;
`API_CODEC_REQUIRE_AUTH=false` opens it for the local stack only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api.auth import ops_scope
from api.errors import ApiError, ErrorBody
from api.services import ApiServices, services
from config.temporal import EncryptionCodec, PayloadDecryptionError, parse_payload_keys

router = APIRouter(tags=["temporal ui codec"])
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


def _authorized(request: Request, api: Annotated[ApiServices, Depends(services)]) -> None:
    if api.settings.api_codec_require_auth:
        ops_scope(request, api)


async def _payloads(request: Request) -> Payloads:
    try:
        return json_format.Parse(await request.body(), Payloads())
    except (json_format.ParseError, UnicodeDecodeError) as error:
        raise ApiError(400, "bad_request", f"not a Payloads document: {error}") from None


def _answer(payloads: Payloads) -> Response:
    return Response(json_format.MessageToJson(payloads), media_type="application/json")


@router.post("/api/codec/decode", responses=_RESPONSES, dependencies=[Depends(_authorized)])
async def decode(request: Request, api: Annotated[ApiServices, Depends(services)]) -> Response:
    codec = _codec(api)
    payloads = await _payloads(request)
    try:
        decoded = await codec.decode(list(payloads.payloads))
    except PayloadDecryptionError as error:
        raise ApiError(400, "bad_request", str(error)) from None
    return _answer(Payloads(payloads=decoded))


@router.post("/api/codec/encode", responses=_RESPONSES, dependencies=[Depends(_authorized)])
async def encode(request: Request, api: Annotated[ApiServices, Depends(services)]) -> Response:
    codec = _codec(api)
    payloads = await _payloads(request)
    return _answer(Payloads(payloads=await codec.encode(list(payloads.payloads))))
