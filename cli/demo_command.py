"""`fulfillment demo order`: the command's flags; the work is in `cli.demo`, imported only when
the command runs (it pulls in Salesforce and Temporal clients every other command does without)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any


def register(sub: Any) -> None:
    """`fulfillment demo order [--sim esim|physical] [--no-payment-method] [--fail-sim]`."""
    demo = sub.add_parser("demo", help="try the engine: make and follow a demo order")
    kinds = demo.add_subparsers(dest="demo_command", required=True, metavar="WHAT")
    order = kinds.add_parser(
        "order", help="create and activate an order in the dev stack's Salesforce, follow it"
    )
    order.add_argument("--sim", choices=["esim", "physical"], help="a SIM order (default: fibre)")
    order.add_argument(
        "--no-payment-method",
        action="store_true",
        help="for a customer without a WHMCS payment method (parks: PAYMENT_METHOD_MISSING)",
    )
    order.add_argument(
        "--fail-sim",
        action="store_true",
        help="a SIM Freebit will refuse to activate (parks: SIM_PROVISIONING_FAILED)",
    )
    order.add_argument("--stack", default=".dev/stack.json", help="the dev stack's stack.json")
    order.set_defaults(handler=_cmd_demo_order, passthrough=False)


def _cmd_demo_order(args: Any, _rest: list[str]) -> int:
    import json
    from pathlib import Path
    from urllib.parse import urlsplit

    from cli.demo import DemoLinks, demo_order
    from config.settings import load_settings
    from devstack.stack_file import stack_env
    from domain.fulfillment import FulfillmentStatus

    path = Path(args.stack)
    if not path.is_file():
        print(
            f"fulfillment demo: {path} not found; start the stack with `make dev`", file=sys.stderr
        )
        return 2
    stack = json.loads(path.read_text())
    settings = load_settings(**{name.lower(): value for name, value in stack_env(stack).items()})
    freebit = stack.get("freebit", {}).get("base_url")
    control = None
    if freebit:
        parts = urlsplit(freebit)
        control = f"{parts.scheme}://{parts.netloc}/__emulator__"
    links = DemoLinks(
        temporal_ui=stack.get("temporal", {}).get("ui_url"),
        api=stack.get("api", {}).get("url"),
        freebit_control=control,
    )
    outcome = asyncio.run(
        demo_order(
            settings,
            links,
            sim=args.sim,
            no_payment_method=args.no_payment_method,
            fail_sim=args.fail_sim,
        )
    )
    expected_park = args.no_payment_method or args.fail_sim
    if outcome.status is FulfillmentStatus.ACTIVATED:
        print("Activated. Salesforce, WHMCS and Freebit all say so.")
        return 0
    if expected_park and outcome.progress is not None and outcome.progress.waiting_for_operator:
        print(
            "Parked as asked. Fix the cause, then: fulfillment retry "
            f"{outcome.sf_order_id} --reason '…' (or cancel)."
        )
        return 0
    return 1
