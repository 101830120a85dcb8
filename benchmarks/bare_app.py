"""The baseline of the API read benchmark: a bare FastAPI route that returns a fixed document.

    python -m benchmarks.bare_app --port N --document FILE

Same framework, server and path shape as the real route, no auth, no id checks, no Redis, no
middleware: what FastAPI and uvicorn cost on this machine for this JSON, and nothing else.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI


def create_app(document: dict[str, Any]) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/api/orders/{sf_order_id}/fulfillment")
    async def fulfillment(sf_order_id: str) -> dict[str, Any]:
        return document

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--document", type=Path, required=True, help="JSON file to answer")
    args = parser.parse_args()
    document = json.loads(args.document.read_text(encoding="utf-8"))
    # As `fulfillment api` runs the real one (api/main.py): one process, no access log.
    uvicorn.run(
        create_app(document),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
