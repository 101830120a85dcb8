"""What the httpx-based clients share: TLS context, timeouts, the pooled form POST, and
transport-failure mapping.

An HTTP status or a transport exception that says "try again later" becomes a `TransientError`
here, in one place, so WHMCS and Freebit classify them identically. `FormApiClient` is the base
both clients build on: one pooled `httpx.AsyncClient`, closed with `aclose()` or `async with`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import httpx

from clients.errors import System, TransientError

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10)


def tls_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """A verifying TLS context; `ca_file` adds a private CA (the emulator's) to the trust store."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def transient_from_transport(system: System, exc: httpx.TransportError) -> TransientError:
    """Timeouts and connection failures; the message names the kind, never the URL or body."""
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "connection failed"
    return TransientError(system, f"request {kind}", detail=type(exc).__name__)


def transient_status(status: int) -> bool:
    """HTTP statuses that a later repeat of the same request may get past."""
    return status in (408, 425, 429) or status >= 500


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

    async def _post_form(self, url: str, form: Mapping[str, str]) -> tuple[httpx.Response, Any]:
        """POST `form`; return the response and its JSON body (None when the body is not JSON).

        A timeout or connection failure raises `TransientError`, naming neither URL nor form
        (the form carries credentials).
        """
        try:
            response = await self._http.post(url, data=form)
        except httpx.TransportError as exc:
            raise transient_from_transport(self._system, exc) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        return response, body
