"""`fulfillment emulate {salesforce,whmcs,freebit}`: run one emulator in the foreground.

    fulfillment emulate whmcs [--host H] [--port P] [--state-file F] [--seed N] [--demo]
                              [--settings JSON]
    fulfillment emulate salesforce [...] [--certs-dir D] [--pubsub-port P]

`main(argv)` takes the arguments after `emulate` (a leading "emulate" is tolerated) and returns
the exit code. Default ports: salesforce 8701 (TLS), whmcs 8702, freebit 8703, and the
Salesforce emulator's Pub/Sub API (gRPC over TLS, always served, on 127.0.0.1) 8704. `--demo` seeds
the demo dataset when the state (after loading `--state-file`) is empty; `--settings` applies a
JSON object of emulator settings (credentials, delays, …) as `POST /__emulator__/config` would.
Each emulator package is imported only when chosen, so one broken emulator never stops another.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from typing import Any

from emulators.common.server import serve

DEFAULT_PORTS = {"salesforce": 8701, "whmcs": 8702, "freebit": 8703}
DEFAULT_PUBSUB_PORT = 8704
# The emulators' own needs (trustme, python-multipart) are not the engine's: they come with the
# `dev` extra (devstack/extra.py lists them; the emulators import nothing of devstack).
INSTALL_HINT = "install the dev extra: pip install 'order-fulfillment[dev]'"
# What each emulator imports (or Starlette imports for it, to read form bodies) beyond the engine.
_NEEDS = {
    "salesforce": ("trustme", "python_multipart"),
    "whmcs": ("python_multipart",),
    "freebit": ("python_multipart",),
}


def _missing(name: str) -> list[str]:
    missing = []
    for module in _NEEDS[name]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            missing.append(module)
    return missing


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fulfillment emulate", description="Run a local emulator of an outside system."
    )
    parser.add_argument("name", choices=sorted(DEFAULT_PORTS), help="which system to emulate")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, help="default: salesforce 8701, whmcs 8702, freebit 8703"
    )
    parser.add_argument("--state-file", help="load state from this JSON file and keep it saved")
    parser.add_argument("--seed", type=int, help="seed for ids and random choices")
    parser.add_argument(
        "--demo", action="store_true", help="seed the demo dataset if state is empty"
    )
    parser.add_argument("--settings", help="JSON object of emulator settings to apply at start")
    parser.add_argument(
        "--certs-dir", help="salesforce only: where its TLS files live (default .dev/certs)"
    )
    parser.add_argument(
        "--pubsub-port",
        type=int,
        default=DEFAULT_PUBSUB_PORT,
        help=f"salesforce only: the Pub/Sub API's (gRPC) port on 127.0.0.1 "
        f"(default {DEFAULT_PUBSUB_PORT})",
    )
    return parser


def main(argv: list[str]) -> int:
    args_list = argv[1:] if argv[:1] == ["emulate"] else argv
    args = _parser().parse_args(args_list)
    try:
        settings = _settings(args.settings)
    except ValueError as exc:
        print(f"fulfillment emulate: --settings: {exc}", file=sys.stderr)
        return 2
    missing = _missing(args.name)
    if missing:
        print(
            f"fulfillment emulate: {', '.join(missing)} not installed; {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    port = args.port if args.port is not None else DEFAULT_PORTS[args.name]
    options: dict[str, Any] = {
        "seed": args.seed,
        "state_file": args.state_file,
        "demo": args.demo,
        "settings": settings,
    }
    if args.name == "whmcs":
        from emulators.whmcs.app import create_app as create_whmcs

        serve(create_whmcs(**options), host=args.host, port=port)
        return 0
    if args.name == "freebit":
        from emulators.freebit.app import create_app as create_freebit

        serve(create_freebit(**options), host=args.host, port=port)
        return 0
    if args.certs_dir is not None:
        options["certs_dir"] = args.certs_dir
    options["pubsub_port"] = args.pubsub_port
    return _serve_salesforce(args.host, port, options)


def _serve_salesforce(host: str, port: int, options: dict[str, Any]) -> int:
    try:
        from emulators.salesforce.app import create_app as create_salesforce
    except ImportError as exc:
        print(
            f"fulfillment emulate: the Salesforce emulator is not available ({exc})",
            file=sys.stderr,
        )
        return 1
    app = create_salesforce(**options)
    # The Salesforce app makes (once) and names its own certificate; REST clients require TLS.
    serve(
        app,
        host=host,
        port=port,
        ssl_certfile=str(app.state.ssl_certfile),
        ssl_keyfile=str(app.state.ssl_keyfile),
    )
    return 0


def _settings(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value
