"""What the operators' commands do (`cli.operators` puts them on the parser).

By default they run the use cases the API runs (`usecases.operator_actions`,
`usecases.read_model`, ...) straight against Postgres, Redis, Temporal and Salesforce from the
settings: whoever has the engine's environment needs no token, and the answers and the audit
trail are the API's. With `--api URL`
(or `FULFILLMENT_API_URL`) they call the ops API instead, with `API_OPS_TOKEN` only, and print
and exit the same (`cli.operations`). `status` and `failed` read the read model itself, never
the portal's cached copy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from pydantic import BaseModel

from cli.operations import ApiRefusedError, Operations, direct, over_http
from clients.errors import ClientError
from clients.salesforce_ids import ACCOUNT, ORDER, InvalidSalesforceId, validate_sf_id
from config.logging import configure_logging
from config.settings import SALESFORCE, TEMPORAL, Settings, load_settings
from domain.errors import ErrorCode
from domain.fulfillment import OperatorRequest
from usecases.caches import Flushed, FlushScope
from usecases.dead_letters import DeadLetter, DeadLetters
from usecases.errors import UseCaseError
from usecases.operator_actions import Action, ActionResult
from usecases.read_model import Fulfillment, FulfillmentPage
from usecases.reconciliation import ReconciliationPass

OPERATOR = (*TEMPORAL, "database_url", "redis_url")
# Settings a command needs beyond the operator's.
_NEEDS = {"reconcile": SALESFORCE}
API_URL_VARIABLE = "FULFILLMENT_API_URL"


@dataclass(frozen=True)
class Output:
    """What a command answers: `data` for `--json`, `text` for people."""

    data: BaseModel
    text: str


class _BadInputError(Exception):
    """An argument the command cannot use (exit 2, like argparse's own errors)."""


Command = Callable[[argparse.Namespace, Operations], Awaitable[Output]]


def run(args: argparse.Namespace) -> int:
    """Run the operator command `args` names; its exit status."""
    sub = getattr(args, "cache_command", None) or getattr(args, "dead_letters_command", None)
    name = " ".join(p for p in (args.command, sub) if p)
    command = _COMMANDS[name]
    api_url = getattr(args, "api", None) or os.environ.get(API_URL_VARIABLE)
    if api_url:
        settings = load_settings(require=("api_ops_token",))
    else:
        settings = load_settings(require=(*OPERATOR, *_NEEDS.get(name, ())))
    # The answer is the output; the log (stderr) only speaks up when something is wrong.
    level = "WARNING" if settings.log_level == "INFO" else settings.log_level
    configure_logging(level=level, fmt=settings.log_format, secrets=settings.secrets())
    try:
        output = asyncio.run(_run(settings, api_url, args, command))
    except _BadInputError as bad:
        return _fail(args, name, "invalid_request", str(bad), status=2)
    except ApiRefusedError as refused:
        status = 2 if refused.code == "invalid_request" else 1
        return _fail(args, name, refused.code, refused.message, status=status)
    except UseCaseError as error:
        return _fail(args, name, error.code, error.message)
    except ClientError as error:
        return _fail(args, name, "unavailable", str(error))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return _fail(args, name, "unavailable", f"Postgres unavailable ({type(error).__name__})")
    if args.json:
        print(output.data.model_dump_json(indent=2))
    else:
        print(output.text)
    return 0


def _fail(args: argparse.Namespace, name: str, code: str, message: str, *, status: int = 1) -> int:
    if args.json:
        print(json.dumps({"code": code, "message": message}))
    print(f"fulfillment {name}: {message}", file=sys.stderr)
    return status


async def _run(
    settings: Settings, api_url: str | None, args: argparse.Namespace, command: Command
) -> Output:
    async with _operations(settings, api_url) as operations:
        return await command(args, operations)


@asynccontextmanager
async def _operations(settings: Settings, api_url: str | None) -> AsyncIterator[Operations]:
    if api_url:
        assert settings.api_ops_tokens, "required above"
        # The first of the list: the one being rolled out when two are listed.
        async with over_http(api_url, settings.api_ops_tokens[0]) as http:
            yield http
    else:
        async with direct(settings) as here:
            yield here


def _id(value: str, *, key_prefix: str, name: str) -> str:
    try:
        return validate_sf_id(value, key_prefix=key_prefix)
    except InvalidSalesforceId as invalid:
        raise _BadInputError(f"{name}: {invalid}") from None


def _who(args: argparse.Namespace) -> str:
    who = (args.requested_by or "").strip()
    if not who:
        raise _BadInputError("say who asks with --as (no $USER to default to)")
    return str(who)


# -- commands -------------------------------------------------------------------------------


async def _status(args: argparse.Namespace, ops: Operations) -> Output:
    found = await ops.status(_id(args.order_id, key_prefix=ORDER, name="ORDER_ID"))
    return Output(found, _describe(found))


async def _act(args: argparse.Namespace, ops: Operations) -> Output:
    action = Action(args.command)
    order_id = _id(args.order_id, key_prefix=ORDER, name="ORDER_ID")
    request_id = args.request_id or str(uuid.uuid4())
    try:
        request = OperatorRequest(
            reason=args.reason.strip(), requested_by=_who(args), request_id=request_id
        )
    except ValueError as invalid:
        raise _BadInputError(_first_problem(invalid)) from None
    result = await ops.act(action, order_id, request)
    return Output(result, _acted(result))


async def _failed(args: argparse.Namespace, ops: Operations) -> Output:
    account = None
    if args.account is not None:
        account = _id(args.account, key_prefix=ACCOUNT, name="--account")
    if args.limit < 1:
        raise _BadInputError("--limit: at least 1")
    page = await ops.failed(
        error_code=ErrorCode(args.error_code) if args.error_code else None,
        account=account,
        limit=args.limit,
    )
    return Output(page, _failed_table(page, limit=args.limit))


async def _flush(args: argparse.Namespace, ops: Operations) -> Output:
    scope = FlushScope(args.scope)
    account: str | None = None
    if scope is FlushScope.ORDERS:
        if args.account is None:
            raise _BadInputError("--account: name an account, or all, for the orders scope")
        if args.account != "all":
            account = _id(args.account, key_prefix=ACCOUNT, name="--account")
    elif args.account not in (None, "all"):
        raise _BadInputError("--account: only the orders scope takes an account")
    flushed = await ops.flush(scope, account, who=_who(args))
    return Output(flushed, _flushed(flushed))


async def _dead_letters(args: argparse.Namespace, ops: Operations) -> Output:
    if args.limit < 1:
        raise _BadInputError("--limit: at least 1")
    letters = await ops.dead_letters(include_redriven=args.include_redriven, limit=args.limit)
    return Output(letters, _letters_table(letters))


async def _redrive(args: argparse.Namespace, ops: Operations) -> Output:
    if args.all == bool(args.ids):
        raise _BadInputError("name the dead letters (ID ...) or --all, not both")
    requested = await ops.redrive(args.ids or None, who=_who(args))
    # The active listener handles them within seconds: show what it made of each.
    deadline = asyncio.get_running_loop().time() + max(0.0, args.wait)
    while True:
        letters = await ops.dead_letters(
            include_redriven=True, ids=requested.ids, limit=len(requested.ids) or 1
        )
        pending = [letter for letter in letters.items if _pending(letter)]
        if not requested.ids or not pending or asyncio.get_running_loop().time() >= deadline:
            return Output(letters, _letters_table(letters, redrive=True))
        await asyncio.sleep(0.5)


async def _reconcile(args: argparse.Namespace, ops: Operations) -> Output:
    done = await ops.reconcile(dry_run=args.dry_run, who=_who(args))
    return Output(done, _reconciled(done))


_COMMANDS: dict[str, Command] = {
    "status": _status,
    "retry": _act,
    "cancel": _act,
    "failed": _failed,
    "cache flush": _flush,
    "dead-letters": _dead_letters,
    "dead-letters redrive": _redrive,
    "reconcile": _reconcile,
}


def _pending(letter: DeadLetter) -> bool:
    return letter.redriven_at is None and letter.redrive_requested_at is not None


def _letters_table(letters: DeadLetters, *, redrive: bool = False) -> str:
    if not letters.items:
        return "nothing to redrive" if redrive else "no dead letters"
    header = ("id", "channel", "replay id", "stored", "received", "state", "reason")
    rows = [header]
    for letter in letters.items:
        if letter.redriven_at is not None:
            state = f"redriven {letter.redriven_at:%Y-%m-%d %H:%M}"
        elif letter.redrive_requested_at is not None:
            state = "waiting for the listener" + (
                f" ({letter.redrive_outcome})" if letter.redrive_outcome else ""
            )
        else:
            state = letter.redrive_outcome or "dead"
        rows.append(
            (
                str(letter.id),
                letter.channel or "?",
                str(letter.replay_id) if letter.replay_id is not None else "?",
                letter.shape,
                f"{letter.received_at:%Y-%m-%d %H:%M}",
                state,
                letter.reason,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    )


# -- for people -----------------------------------------------------------------------------


def _describe(f: Fulfillment) -> str:
    rows: list[tuple[str, str]] = [
        ("order", f.sf_order_id),
        ("account", f.sf_account_id or "-"),
        ("status", f.status.value),
        ("step", f.step.value if f.step else "-"),
    ]
    if f.error_code:
        rows.append(("error", f"{f.error_code.value}: {f.error_message or ''}".rstrip(": ")))
    elif f.error_message:
        # A fulfillment that ended without finishing (reconciliation's report): no code fits.
        rows.append(("error", f.error_message))
    if f.whmcs_order_id is not None:
        services = ", ".join(str(s) for s in f.whmcs_service_ids) or "none"
        rows.append(
            (
                "whmcs",
                f"order {f.whmcs_order_id}, invoice {f.whmcs_invoice_id or '-'}, "
                f"services {services}",
            )
        )
    rows += [
        ("attempts", str(f.attempts)),
        ("created", _when(f.created_at)),
        ("updated", _when(f.updated_at)),
        ("workflow", f.workflow_id),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def _acted(result: ActionResult) -> str:
    head = (
        f"{result.action.value} of order {result.sf_order_id} accepted "
        f"(by {result.requested_by}, request {result.request_id})"
    )
    progress = result.progress
    if progress is None:
        return f"{head}; it was accepted earlier and that run has ended since"
    if result.action is Action.RETRY:
        where = progress.step.value if progress.step else "the start"
        return f"{head}: resuming at {where}, attempt {progress.attempt}"
    return f"{head}: undoing what was done; the order ends Cancelled"


def _failed_table(page: FulfillmentPage, *, limit: int) -> str:
    if not page.items:
        return "no parked fulfillments"
    now = datetime.now(UTC)
    header = ("ORDER", "ACCOUNT", "CODE", "STEP", "AGE", "TRIES", "MESSAGE")
    rows = [
        (
            f.sf_order_id,
            f.sf_account_id or "-",
            f.error_code.value if f.error_code else "-",
            f.step.value if f.step else "-",
            _age(now - f.updated_at),
            str(f.attempts),
            _clip(f.error_message or "", 60),
        )
        for f in page.items
    ]
    lines = _table(header, rows)
    if page.next_cursor is not None:
        lines.append(f"(the newest {limit}; more with --limit, or narrow with --error-code)")
    return "\n".join(lines)


def _reconciled(done: ReconciliationPass) -> str:
    verb = "would start" if done.dry_run else "started"
    lines = [
        f"window: activated {_when(done.window_start)} to {_when(done.window_end)}"
        f"{' (dry run: nothing started)' if done.dry_run else ''}"
    ]
    if done.candidates:
        rows = [
            (
                c.outcome.value.replace("_", " "),
                c.sf_order_id,
                c.order_number,
                _when(c.activated_at) if c.activated_at else "-",
                c.reason,
            )
            for c in done.candidates
        ]
        lines += _table(("OUTCOME", "ORDER", "NUMBER", "ACTIVATED", "WHY"), rows)
    lines.append(
        f"{len(done.starts)} {verb}, "
        f"{len(done.candidates) - len(done.starts)} left alone, "
        f"{done.before_window} unfinished orders activated before the window left alone"
    )
    return "\n".join(lines)


def _flushed(flushed: Flushed) -> str:
    what = {
        FlushScope.SERVICES: "services (catalog and eligibility)",
        FlushScope.ORDERS: f"orders of account {flushed.account}"
        if flushed.account
        else "orders of every account",
        FlushScope.ALL: "every engine key (orders, services, whmcs)",
    }[flushed.scope]
    return f"flushed {flushed.deleted} key(s): {what}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _when(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z ({_age(datetime.now(UTC) - at)} ago)"


def _age(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _first_problem(invalid: ValueError) -> str:
    errors = getattr(invalid, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        names = {"reason": "--reason", "requested_by": "--as", "request_id": "--request-id"}
        return f"{names.get(where, where)}: {first.get('msg', 'invalid')}"
    return str(invalid)
