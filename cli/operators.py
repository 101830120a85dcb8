"""The operators' commands on the `fulfillment` parser: `status`, `retry`, `cancel`, `failed`,
`cache flush`, `dead-letters [redrive]`, `reconcile`. What they do is `cli.operator_commands`,
imported only when one of them runs, so the other commands start without loading the API,
Temporal and the database drivers.

Tables for people, `--json` for scripts. A failure is one line on stderr (and, with `--json`,
`{"code", "message"}` on stdout) and exit status 1; bad input or a missing setting exits 2.
"""

from __future__ import annotations

import argparse
import os

from domain.errors import ErrorCode

ACTIONS = {
    "retry": "retry a parked fulfillment once its cause is fixed",
    "cancel": "cancel a parked fulfillment (what was done is undone)",
}
FLUSH_SCOPES = ("services", "orders", "all")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operator subcommands to the `fulfillment` parser."""
    status = sub.add_parser("status", help="one order's fulfillment, from the read model")
    status.add_argument("order_id", metavar="ORDER_ID", help="Salesforce Order id")
    _common(status, who=False)
    status.set_defaults(handler=_run, passthrough=False)

    for action, help_text in ACTIONS.items():
        act = sub.add_parser(action, help=help_text)
        act.add_argument("order_id", metavar="ORDER_ID", help="Salesforce Order id")
        act.add_argument("--reason", required=True, help="why, for the audit trail")
        act.add_argument(
            "--request-id",
            help="names the request: repeating the command with the same id acts once "
            "(default: a new id, printed)",
        )
        _common(act, who=True)
        act.set_defaults(handler=_run, passthrough=False)

    failed = sub.add_parser("failed", help="parked fulfillments, newest first, with code and age")
    failed.add_argument("--error-code", choices=[c.value for c in ErrorCode])
    failed.add_argument("--account", help="only this Salesforce Account's orders")
    failed.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    _common(failed, who=False)
    failed.set_defaults(handler=_run, passthrough=False)

    cache = sub.add_parser("cache", help="the portal's Redis caches")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    flush = cache_sub.add_parser("flush", help="flush cached views when events were missed")
    flush.add_argument("--scope", required=True, choices=FLUSH_SCOPES)
    flush.add_argument(
        "--account",
        metavar="ID|all",
        help="scope orders: one Salesforce Account's keys, or all of them (required)",
    )
    _common(flush, who=True)
    flush.set_defaults(handler=_run, passthrough=False)

    letters = sub.add_parser(
        "dead-letters", help="change events the listener could not read; redrive them"
    )
    letters.add_argument("--include-redriven", action="store_true", help="also those redriven")
    letters.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    _common(letters, who=False)
    letters.set_defaults(handler=_run, passthrough=False)
    letters_sub = letters.add_subparsers(dest="dead_letters_command", metavar="ACTION")
    redrive = letters_sub.add_parser(
        "redrive", help="ask the listener to handle them again, and wait for its answer"
    )
    redrive.add_argument("ids", metavar="ID", nargs="*", type=int, help="dead letter ids")
    redrive.add_argument("--all", action="store_true", help="every one not yet redriven")
    redrive.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for the listener (default 30)"
    )
    _common(redrive, who=True)
    redrive.set_defaults(handler=_run, passthrough=False)

    reconcile = sub.add_parser(
        "reconcile",
        help="one reconciliation pass now: start the activated orders no fulfillment has, "
        "saying why each other candidate is left alone",
    )
    reconcile.add_argument(
        "--dry-run", action="store_true", help="start nothing: say what would be started"
    )
    _common(reconcile, who=True)
    reconcile.set_defaults(handler=_run, passthrough=False)


def _common(parser: argparse.ArgumentParser, *, who: bool) -> None:
    parser.add_argument("--json", action="store_true", help="answer in JSON, for scripts")
    parser.add_argument(
        "--api",
        metavar="URL",
        help="call the ops API at URL with API_OPS_TOKEN instead of the engine's systems "
        "(default: $FULFILLMENT_API_URL; unset: the engine's own settings)",
    )
    if who:
        parser.add_argument(
            "--as",
            dest="requested_by",
            default=os.environ.get("USER"),
            help="who asks, recorded with the action (default: $USER)",
        )


def _run(args: argparse.Namespace, _rest: list[str]) -> int:
    from cli.operator_commands import run

    return run(args)
