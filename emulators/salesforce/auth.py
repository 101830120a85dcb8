"""OAuth 2.0 token endpoint and the sessions it hands out.

`POST /services/oauth2/token` (form-encoded) accepts the password, client_credentials and JWT
bearer grants with the configured `Credentials` and answers as Salesforce does: the token reply
`{"access_token","instance_url","id","token_type","issued_at","signature"}`, or a 400 with
`{"error","error_description"}` (`invalid_client_id`, `invalid_client`, `invalid_grant`,
`unsupported_grant_type`). `SessionStore` keeps the issued sessions (bounded, with Salesforce's
inactivity timeout) and can expire all of them at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import jwt
from cryptography import x509
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulators.salesforce import ids

# Fixed, so tokens survive a data reset and the user named in change events stays the same.
ORG_ID = ids.to_18("00D5g00000EmUlA")
USER_ID = ids.to_18("0055g00000EmUlA")

DEFAULT_CLIENT_ID = "3MVG9emulator.fulfillment.local"
DEFAULT_CLIENT_SECRET = "emulator-client-secret"
DEFAULT_USERNAME = "integration@fulfillment.local"
DEFAULT_PASSWORD = "emulator-password"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Audiences Salesforce accepts in a JWT bearer assertion; the emulator's own URL is also accepted.
_KNOWN_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")


@dataclass(frozen=True)
class Credentials:
    """The connected app and integration user the emulator accepts."""

    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    username: str = DEFAULT_USERNAME
    password: str = DEFAULT_PASSWORD
    # PEM public key or certificate that verifies JWT bearer assertions; None refuses that grant.
    jwt_public_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Session:
    token: str
    user_id: str
    username: str
    client_id: str
    issued_at: float
    last_used: float


class SessionStore:
    """Issued sessions by access token; the oldest are forgotten beyond `max_sessions`."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        timeout_seconds: float = 2 * 3600,
        max_sessions: int = 1000,
    ) -> None:
        self.clock = clock
        self.timeout_seconds = timeout_seconds
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def issue(self, *, user_id: str, username: str, client_id: str) -> Session:
        now = self.clock()
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(72)}"
        session = Session(token, user_id, username, client_id, now, now)
        self._sessions[token] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def lookup(self, token: str) -> Session | None:
        """The live session for `token`, its inactivity clock restarted; None if unknown/expired."""
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self.clock()
        if now - session.last_used > self.timeout_seconds:
            del self._sessions[token]
            return None
        session.last_used = now
        return session

    def is_valid(self, token: str) -> bool:
        return self.lookup(token) is not None

    def expire_all(self) -> int:
        count = len(self._sessions)
        self._sessions.clear()
        return count

    def to_state(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self._sessions.values()]

    def load_state(self, state: list[dict[str, Any]]) -> None:
        self._sessions = OrderedDict((s["token"], Session(**s)) for s in state)


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


class TokenEndpoint:
    """`/services/oauth2/token` for one set of credentials."""

    def __init__(
        self,
        credentials: Callable[[], Credentials],
        sessions: SessionStore,
        clock: Callable[[], float],
    ) -> None:
        self._credentials = credentials
        self.sessions = sessions
        self.clock = clock
        self.routes = [Route("/services/oauth2/token", self.endpoint, methods=["POST"])]

    async def endpoint(self, request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        instance_url = str(request.base_url).rstrip("/")
        try:
            client_id = self.authenticate(form, request.headers.get("authorization"), instance_url)
        except OAuthError as exc:
            return JSONResponse(
                {"error": exc.error, "error_description": exc.description}, status_code=exc.status
            )
        creds = self._credentials()
        session = self.sessions.issue(user_id=USER_ID, username=creds.username, client_id=client_id)
        issued_at = str(int(session.issued_at * 1000))
        identity = f"{instance_url}/id/{ORG_ID}/{USER_ID}"
        signature = base64.b64encode(
            hmac.new(
                creds.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
            ).digest()
        ).decode()
        return JSONResponse(
            {
                "access_token": session.token,
                "instance_url": instance_url,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
                "signature": signature,
            }
        )

    def authenticate(
        self, form: dict[str, str], authorization: str | None, instance_url: str
    ) -> str:
        """Check the grant; return the client id it was made for."""
        creds = self._credentials()
        grant = form.get("grant_type")
        if grant == "password":
            self._check_client(creds, form.get("client_id"), form.get("client_secret"))
            if form.get("username") != creds.username or form.get("password") != creds.password:
                raise OAuthError("invalid_grant", "authentication failure")
            return creds.client_id
        if grant == "client_credentials":
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
            if authorization and authorization.lower().startswith("basic "):
                client_id, client_secret = _basic(authorization)
            self._check_client(creds, client_id, client_secret)
            return creds.client_id
        if grant == JWT_GRANT:
            self._check_assertion(creds, form.get("assertion", ""), instance_url)
            return creds.client_id
        raise OAuthError("unsupported_grant_type", "grant type not supported")

    @staticmethod
    def _check_client(creds: Credentials, client_id: str | None, client_secret: str | None) -> None:
        if client_id != creds.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if client_secret != creds.client_secret:
            raise OAuthError("invalid_client", "invalid client credentials")

    def _check_assertion(self, creds: Credentials, assertion: str, instance_url: str) -> None:
        if creds.jwt_public_key is None:
            raise OAuthError("invalid_grant", "invalid assertion")
        try:
            claims = jwt.decode(
                assertion,
                _verifying_key(creds.jwt_public_key),
                algorithms=["RS256"],
                # Checked below: simple-salesforce sends `exp` as a string, which Salesforce
                # accepts and PyJWT's own check rejects.
                options={"verify_exp": False, "verify_aud": False, "verify_iss": False},
            )
        except jwt.InvalidTokenError:
            raise OAuthError("invalid_grant", "invalid assertion") from None
        if claims.get("iss") != creds.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if claims.get("sub") != creds.username:
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if not any(str(a).rstrip("/") in (*_KNOWN_AUDIENCES, instance_url) for a in audiences):
            raise OAuthError("invalid_grant", "audience is invalid")
        try:
            expires = float(claims.get("exp", ""))
        except (TypeError, ValueError):
            raise OAuthError("invalid_grant", "invalid assertion") from None
        if expires < self.clock():
            raise OAuthError("invalid_grant", "expired authorization code")


def _basic(authorization: str) -> tuple[str | None, str | None]:
    try:
        decoded = base64.b64decode(authorization.split(" ", 1)[1]).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret


def _verifying_key(pem: str) -> Any:
    if "BEGIN CERTIFICATE" in pem:
        return x509.load_pem_x509_certificate(pem.encode()).public_key()
    return pem
