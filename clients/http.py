"""What the httpx-based clients share: TLS context, timeouts, and transport-failure mapping.

An HTTP status or a transport exception that says "try again later" becomes a `TransientError`
here, in one place, so WHMCS and Freebit classify them identically.
"""

from __future__ import annotations

import ssl
from pathlib import Path

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
