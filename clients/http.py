"""What the httpx-based clients share: TLS context, timeouts, the pooled form POST, and the
mapping of transport failures and HTTP statuses onto the taxonomy.

The one question a failed write must answer is whether it reached the upstream:

- connect failures (refused, DNS, connect timeout, no free pooled connection) happened before a
  byte of the request was sent: `TransientError`, safe to repeat;
- a TLS verification failure is our trust configuration: `ConfigurationError`;
- anything after the request went out (read timeout, reset, a truncated reply) leaves a write's
  outcome unknown: `OutcomeUnknownError` (a read just gets a `TransientError`).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import httpx

from clients.errors import (
    ClientError,
    ConfigurationError,
    OutcomeUnknownError,
    System,
    TransientError,
)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10)
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def tls_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """A verifying TLS context; `ca_file` adds a private CA (the emulator's) to the trust store."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def _caused_by_tls_verification(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def transport_error(system: System, exc: httpx.TransportError, *, write: bool) -> ClientError:
    """The taxonomy error for a transport failure; names the kind, never the URL or body."""
    if isinstance(exc, _NOT_SENT):
        if _caused_by_tls_verification(exc):
            return ConfigurationError(system, "TLS verification failed (check the CA setting)")
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        return TransientError(system, f"connection {kind}", detail=type(exc).__name__)
    if write:
        return OutcomeUnknownError(
            system, "reply lost after the request was sent", detail=type(exc).__name__
        )
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return TransientError(system, f"request {kind}", detail=type(exc).__name__)


def transient_status(status: int) -> bool:
    """HTTP statuses that a later repeat of the same request may get past."""
    return status in (408, 425, 429) or status >= 500


def status_error(
    system: System, operation: str, response: httpx.Response, *, write: bool
) -> TransientError:
    """The taxonomy error for a transient HTTP status.

    A 429 means the upstream refused before doing anything; any other 5xx/408 to a write may
    come after the write took effect (a proxy timing out, a crash after commit).
    """
    status = response.status_code
    retry_after = retry_after_seconds(response)
    if write and status != 429:
        return OutcomeUnknownError(
            system, f"{operation} failed with HTTP {status}", retry_after=retry_after
        )
    return TransientError(system, f"{operation} failed with HTTP {status}", retry_after=retry_after)


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class FormApiClient:
    """Base of the clients of form-encoded JSON APIs; one instance per process."""

    def __init__(self, system: System, timeout: httpx.Timeout) -> None:
        self._system = system
        self._http = httpx.AsyncClient(timeout=timeout, limits=DEFAULT_LIMITS)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def _post_form(
        self, url: str, form: Mapping[str, str], *, write: bool
    ) -> tuple[httpx.Response, Any]:
        """POST `form`; return the response and its JSON body (None when the body is not JSON).

        A transport failure raises the taxonomy's error for a read or a write (see module
        docstring), naming neither URL nor form (the form carries credentials).
        """
        try:
            response = await self._http.post(url, data=form)
        except httpx.TransportError as exc:
            raise transport_error(self._system, exc, write=write) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        return response, body
