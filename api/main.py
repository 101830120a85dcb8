"""The API process (`fulfillment api`): uvicorn serving `create_app` on API_HOST:API_PORT."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from api.server import HeaderTimeoutH11Protocol
from config.settings import Settings


def run_api(settings: Settings) -> None:
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,
        # Headers must arrive within 10 s (api/server.py); bodies are limited by api/middleware.
        http=HeaderTimeoutH11Protocol,
        # Behind a proxy the client address comes from X-Forwarded-For (the rate limit uses it).
        proxy_headers=True,
        forwarded_allow_ips=settings.api_trusted_proxies,
    )
