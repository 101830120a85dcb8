"""Salesforce OAuth: one cached access token shared by REST and streaming.

`SalesforceAuth` gets and caches the org's token with the flow `SF_AUTH_FLOW` names: the JWT
bearer flow by default (a connected app's signing key), client credentials, or, as an explicit
opt-in that warns at start, username-password (Salesforce is retiring it and blocks it by default
in orgs created since Summer '23). The REST client and the streaming authenticator share one
instance, so a refresh by one serves the other, and closing the REST client leaves it open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import httpx
import jwt
from aiosfstream_ng.auth import AuthenticatorBase
from pydantic import SecretStr

from clients.errors import ClientError, ConfigurationError, System, TransientError
from clients.http import DEFAULT_TIMEOUT, tls_context, transient_status, transport_error
from clients.metrics import observe
from clients.retry import NO_RETRY, RetryPolicy
from config.logging import get_logger
from config.settings import Settings

log = get_logger(__name__)

AuthFlow = Literal["password", "client_credentials", "jwt"]
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

# OAuth token endpoint `error` values that mean our credentials or app setup are wrong.
SALESFORCE_TOKEN_CONFIG_ERRORS = frozenset(
    {
        "invalid_grant",
        "invalid_client",
        "invalid_client_id",
        "invalid_client_credentials",
        "unsupported_grant_type",
        "invalid_request",
        "inactive_user",
        "inactive_org",
        "unauthorized_client",
    }
)


def classify_token_error(status: int, body: object) -> ClientError:
    """The taxonomy error for a failed OAuth token request."""
    error = body.get("error") if isinstance(body, Mapping) else None
    description = body.get("error_description") if isinstance(body, Mapping) else None
    detail = ": ".join(str(part) for part in (error, description) if part) or f"HTTP {status}"
    if transient_status(status):
        return TransientError(System.SALESFORCE, "token request failed", detail=detail)
    if error in SALESFORCE_TOKEN_CONFIG_ERRORS or status in (400, 401, 403, 404):
        return ConfigurationError(System.SALESFORCE, "token request refused", detail=detail)
    return TransientError(System.SALESFORCE, "token request failed", detail=detail)


# ---------------------------------------------------------------------------------------------
# OAuth tokens, shared by REST and streaming.


@dataclass(frozen=True)
class SalesforceToken:
    access_token: SecretStr = field(repr=False)
    instance_url: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    # The org's id, from the reply's identity URL (`…/id/<org id>/<user id>`): the Pub/Sub API
    # wants it as `tenantid`.
    org_id: str | None = None


class SalesforceAuth:
    """Gets, caches and refreshes the org's access token; safe to share between tasks."""

    def __init__(
        self,
        token_url: str,
        *,
        client_id: str,
        flow: AuthFlow = "jwt",
        client_secret: SecretStr | None = None,
        username: str | None = None,
        password: SecretStr | None = None,
        jwt_private_key: SecretStr | None = None,
        jwt_audience: str | None = None,
        instance_url: str | None = None,
        ca_file: Path | str | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
    ) -> None:
        needed: dict[AuthFlow, tuple[str, ...]] = {
            "password": ("client_secret", "username", "password"),
            "client_credentials": ("client_secret",),
            "jwt": ("username", "jwt_private_key"),
        }
        given = {
            "client_secret": client_secret,
            "username": username,
            "password": password,
            "jwt_private_key": jwt_private_key,
        }
        missing = [name for name in needed[flow] if not given[name]]
        if missing:
            raise ValueError(f"Salesforce {flow} flow needs {', '.join(missing)}")
        self.token_url = token_url
        self.flow: AuthFlow = flow
        self._client_id = client_id
        self._client_secret = client_secret
        self._username = username
        self._password = password
        self._jwt_private_key = jwt_private_key
        parts = urlsplit(token_url)
        # Salesforce wants the login host (login/test.salesforce.com or My Domain) as audience.
        self._jwt_audience = jwt_audience or f"{parts.scheme}://{parts.netloc}"
        self._instance_url = instance_url
        # No retry by default: callers retry the whole call (REST reads) or reconnect (streaming),
        # and a retry here too would multiply token requests under an outage.
        self._retry = retry or NO_RETRY
        self._http = httpx.AsyncClient(timeout=timeout, verify=tls_context(ca_file))
        if flow == "password":
            log.warning(
                "salesforce.password_flow",
                hint="Salesforce is retiring the username-password flow; use SF_AUTH_FLOW=jwt",
            )
        self._token: SalesforceToken | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        if not settings.sf_token_url or not settings.sf_client_id:
            raise ValueError("SF_TOKEN_URL and SF_CLIENT_ID must be set")
        key = settings.sf_jwt_private_key
        if key is None and settings.sf_jwt_key_file is not None:
            key = SecretStr(settings.sf_jwt_key_file.read_text())
        return cls(
            settings.sf_token_url,
            client_id=settings.sf_client_id,
            flow=settings.sf_auth_flow,
            client_secret=settings.sf_client_secret,
            username=settings.sf_username,
            password=settings.sf_password,
            jwt_private_key=key,
            instance_url=settings.sf_instance_url,
            ca_file=settings.sf_ca_file,
        )

    def __repr__(self) -> str:
        return f"SalesforceAuth(token_url={self.token_url!r}, flow={self.flow!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def token(self, *, stale: str | None = None) -> SalesforceToken:
        """The cached token, or a new one when there is none or the caller's `stale` was refused.

        Passing the refused token (rather than "force") lets many callers that saw the same
        rejection share one refresh.
        """
        async with self._lock:
            current = self._token
            if current is not None and current.access_token.get_secret_value() != stale:
                return current
            self._token = await self._retry.run(self._fetch)
            log.info("salesforce.token_acquired", flow=self.flow, refresh=current is not None)
            return self._token

    def streaming_authenticator(self) -> SalesforceStreamingAuthenticator:
        return SalesforceStreamingAuthenticator(self)

    async def _fetch(self) -> SalesforceToken:
        async with observe(System.SALESFORCE, "oauth_token"):
            try:
                response = await self._http.post(self.token_url, data=self._grant())
            except httpx.TransportError as exc:
                # A token request changes nothing: repeating it is always safe.
                raise transport_error(System.SALESFORCE, exc, write=False) from None
            try:
                body = response.json()
            except ValueError:
                body = None
            if response.status_code != 200 or not isinstance(body, dict):
                raise classify_token_error(response.status_code, body)
            access_token = body.get("access_token")
            instance_url = self._instance_url or body.get("instance_url")
            if not isinstance(access_token, str) or not isinstance(instance_url, str):
                raise TransientError(System.SALESFORCE, "token reply lacks token or instance_url")
            return SalesforceToken(
                SecretStr(access_token),
                instance_url,
                str(body.get("token_type") or "Bearer"),
                _org_id(body.get("id")),
            )

    def _grant(self) -> dict[str, str]:
        if self.flow == "jwt":
            assert self._jwt_private_key is not None and self._username is not None
            claims = {
                "iss": self._client_id,
                "sub": self._username,
                "aud": self._jwt_audience,
                "exp": int(time.time()) + 180,
            }
            assertion = jwt.encode(
                claims, self._jwt_private_key.get_secret_value(), algorithm="RS256"
            )
            return {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
        assert self._client_secret is not None
        grant = {
            "grant_type": self.flow,
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
        }
        if self.flow == "password":
            assert self._username is not None and self._password is not None
            grant |= {"username": self._username, "password": self._password.get_secret_value()}
        return grant


class SalesforceStreamingAuthenticator(AuthenticatorBase):
    """aiosfstream-ng authenticator backed by `SalesforceAuth`.

    The streaming client calls `authenticate()` at start and again after a `401::`/`403::`
    reply; in the second case the token it holds was refused, so it is passed as `stale` and a
    fresh one is fetched (and then shared with REST). Failures surface as the taxonomy's
    errors (`ConfigurationError` for refused credentials, `TransientError` otherwise).
    """

    def __init__(self, auth: SalesforceAuth) -> None:
        super().__init__()
        self._auth = auth

    def __repr__(self) -> str:
        return f"SalesforceStreamingAuthenticator(auth={self._auth!r})"

    async def _authenticate(self) -> tuple[int, dict[str, Any]]:
        token = await self._auth.token(stale=self.access_token)
        return 200, {
            "access_token": token.access_token.get_secret_value(),
            "token_type": token.token_type,
            "instance_url": token.instance_url,
        }


def _org_id(identity: object) -> str | None:
    """`https://login.salesforce.com/id/00D…/005…` → `00D…`; None when the reply has none."""
    if not isinstance(identity, str):
        return None
    parts = urlsplit(identity).path.split("/")
    if len(parts) >= 4 and parts[-3] == "id" and parts[-2]:
        return parts[-2]
    return None
