"""Operators' OIDC access tokens, as the Temporal UI passes them to the codec.

The UI signs an operator in with the identity provider and, with `codec.passAccessToken`, sends
their access token to the codec as `Authorization: Bearer …`. Here it must be a JWT signed by one
of the provider's keys (its JWKS), issued by `API_CODEC_OIDC_ISSUER` for
`API_CODEC_OIDC_AUDIENCE`, unexpired, and carrying `API_CODEC_REQUIRED_CLAIM` when that is set.
Providers that issue opaque access tokens cannot be used (docs/deployment.md).

The key set is fetched once and kept; a token signed with a key id it does not hold fetches it
again (the provider rotated its keys), at most once per `refresh_interval`, so a stream of
forged key ids cannot make the API hammer the provider. Only asymmetric algorithms are
accepted: a shared-secret (HS*) or unsigned token says nothing about the provider.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx
import jwt

from config.logging import get_logger

log = get_logger(__name__)

_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# Clocks of the provider and the API disagree a little.
_LEEWAY_SECONDS = 30


class InvalidOperatorTokenError(Exception):
    """The token is not an operator's valid access token; the message says why (no secrets)."""


class IdentityProviderUnavailableError(Exception):
    """The provider's key set could not be fetched: nobody can be checked right now."""


class OidcVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        required_claim: tuple[str, str] | None,
        http: httpx.AsyncClient,
        refresh_interval: float = 30.0,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._jwks_url = jwks_url
        self._required_claim = required_claim
        self._http = http
        self._refresh_interval = refresh_interval
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> Mapping[str, Any]:
        """The token's claims, if it is a valid operator token; else InvalidOperatorTokenError."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidOperatorTokenError("not a JWT access token") from None
        algorithm = header.get("alg")
        if algorithm not in _ALGORITHMS:
            raise InvalidOperatorTokenError(f"signing algorithm {algorithm!r} is not accepted")
        key = await self._key(str(header.get("kid") or ""))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidOperatorTokenError("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidOperatorTokenError("the token is not issued for this API") from None
        except jwt.InvalidIssuerError:
            raise InvalidOperatorTokenError("the token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidOperatorTokenError("the token's signature does not verify") from None
        except jwt.PyJWTError as error:
            raise InvalidOperatorTokenError(f"invalid token: {error}") from None
        self._check_claim(claims)
        return claims

    def _check_claim(self, claims: Mapping[str, Any]) -> None:
        if self._required_claim is None:
            return
        name, wanted = self._required_claim
        held = claims.get(name)
        if held == wanted or (isinstance(held, list) and wanted in held):
            return
        raise InvalidOperatorTokenError(f"the token does not carry {name}={wanted}")

    async def _key(self, kid: str) -> jwt.PyJWK:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and self._may_refresh():
                await self._fetch()
        if kid not in self._keys:
            raise InvalidOperatorTokenError("the token is signed with an unknown key")
        return self._keys[kid]

    def _may_refresh(self) -> bool:
        return (
            self._fetched_at is None
            or time.monotonic() - self._fetched_at >= self._refresh_interval
        )

    async def _fetch(self) -> None:
        try:
            reply = await self._http.get(self._jwks_url)
            reply.raise_for_status()
            key_set = jwt.PyJWKSet.from_dict(reply.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as error:
            log.error("codec.jwks_unavailable", url=self._jwks_url, error=type(error).__name__)
            raise IdentityProviderUnavailableError(
                f"the identity provider's keys could not be fetched ({type(error).__name__})"
            ) from None
        self._fetched_at = time.monotonic()
        self._keys = {key.key_id: key for key in key_set.keys if key.key_id}
        log.info("codec.jwks_fetched", keys=len(self._keys))
