"""`fulfillment` — one console script, a subcommand per process or operator action.

Subcommands that belong to a larger room delegate to it (`dev` to devstack, `emulate` to the
emulators) with the rest of the command line, so each room owns its own flags.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from collections.abc import Callable, Sequence

from cli import demo_command, operators
from cli.version import VersionAction
from config.logging import configure_logging, get_logger
from config.settings import (
    API,
    LISTENER,
    MIGRATE,
    WORKER,
    Settings,
    SettingsError,
    env_name,
    load_settings,
)

Handler = Callable[[argparse.Namespace, list[str]], int]

# What some settings bring with them (config.settings checks these at start too).
_SALESFORCE_FLOW = (
    "SF_AUTH_FLOW decides which of SF_CLIENT_SECRET, SF_USERNAME, SF_PASSWORD and "
    "SF_JWT_KEY_FILE (or SF_JWT_PRIVATE_KEY) are needed as well."
)
_API_TOKENS = (
    "The two tokens: at least 32 characters each, and not the same. API_CODEC_AUTH=oidc needs "
    "API_CODEC_OIDC_ISSUER, API_CODEC_OIDC_AUDIENCE and API_CODEC_OIDC_JWKS_URL as well."
)


def _needs(fields: Sequence[str], *notes: str) -> str:
    """A subcommand's epilog: the settings its process cannot start without."""
    names = ", ".join(env_name(field) for field in dict.fromkeys(fields))

    def indented(text: str) -> str:
        return textwrap.fill(text, width=78, initial_indent="  ", subsequent_indent="  ")

    paragraphs = [
        "settings this process needs (environment variables, or .env):\n" + indented(names),
        *(indented(note) for note in notes),
        "Every other setting, and each one's default: docs/configuration.md.",
    ]
    return "\n\n".join(paragraphs)


def _process_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    epilog: str,
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=help[:1].upper() + help[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _settings(require: Sequence[str]) -> Settings:
    settings = load_settings(require=require)
    configure_logging(level=settings.log_level, fmt=settings.log_format, secrets=settings.secrets())
    return settings


# `migrate --status` exits so when migrations are pending (a deploy step can wait on it).
PENDING_EXIT = 3
_STATE_NOTE = {
    "applied": "",
    "pending": "  (pending)",
    "changed": "  (changed since it was applied: add a new migration instead)",
    "unknown": "  (applied by a newer release: no such file here)",
}


def _cmd_migrate(args: argparse.Namespace, _rest: list[str]) -> int:
    import asyncpg

    from migrations.runner import MigrationError, apply_migrations

    settings = _settings(MIGRATE)
    assert settings.database_url is not None
    log = get_logger("cli.migrate")
    try:
        if args.status:
            return _migrate_status(settings.database_url)
        done = asyncio.run(apply_migrations(settings.database_url))
    except (MigrationError, OSError, asyncpg.PostgresError) as exc:
        # One line, no traceback: the message names the migration or the connection problem.
        print(f"fulfillment migrate: {exc}", file=sys.stderr)
        return 1
    log.info("migrations applied", applied=done, count=len(done))
    print(f"applied {len(done)} migration(s)" + (": " + ", ".join(done) if done else ""))
    return 0


def _migrate_status(database_url: str) -> int:
    from migrations.runner import migration_status

    states = asyncio.run(migration_status(database_url))
    # Applied ones bare, one a line (as `--status` always printed them); the others say what
    # they are.
    for entry in states:
        print(entry.label + _STATE_NOTE[entry.state])
    pending = [entry.label for entry in states if entry.state == "pending"]
    changed = [entry.label for entry in states if entry.state == "changed"]
    if changed:
        print(f"fulfillment migrate: changed since applied: {', '.join(changed)}", file=sys.stderr)
        return 1
    if pending:
        print(
            f"fulfillment migrate: {len(pending)} pending; `fulfillment migrate` applies them",
            file=sys.stderr,
        )
        return PENDING_EXIT
    return 0


def _cmd_worker(_args: argparse.Namespace, _rest: list[str]) -> int:
    from workers.main import run_worker

    settings = _settings(WORKER)
    asyncio.run(run_worker(settings))
    return 0


def _cmd_listener(_args: argparse.Namespace, _rest: list[str]) -> int:
    from cdc_listener.main import run_listener

    settings = _settings(LISTENER)
    asyncio.run(run_listener(settings))
    return 0


def _cmd_api(_args: argparse.Namespace, _rest: list[str]) -> int:
    from api.main import run_api

    run_api(_settings(API))
    return 0


def _cmd_openapi(_args: argparse.Namespace, _rest: list[str]) -> int:
    from api.openapi import render

    sys.stdout.write(render())
    return 0


def _cmd_completion(args: argparse.Namespace, _rest: list[str]) -> int:
    from cli.completion import script

    sys.stdout.write(script(args.shell, build_parser()))
    return 0


def _cmd_dev(_args: argparse.Namespace, rest: list[str]) -> int:
    from devstack.extra import missing_dev_extra

    # The dev stack's servers come with the `dev` extra, which production installs leave out.
    message = missing_dev_extra("fulfillment dev")
    if message is not None:
        print(message, file=sys.stderr)
        return 2
    from devstack.launcher import main as dev_main

    return dev_main(rest)


def _cmd_emulate(_args: argparse.Namespace, rest: list[str]) -> int:
    from emulators.cli import main as emulate_main

    return emulate_main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fulfillment",
        description="Order fulfillment engine: Salesforce CDC -> Temporal -> WHMCS + Freebit.",
    )
    parser.add_argument(
        "--version",
        action=VersionAction,
        help="print the version (and the checkout's commit, as a worker's default build id)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="run the whole stack locally with demo data", add_help=False)
    dev.set_defaults(handler=_cmd_dev, passthrough=True)

    emulate = sub.add_parser(
        "emulate", help="run one emulator (salesforce, whmcs, freebit)", add_help=False
    )
    emulate.set_defaults(handler=_cmd_emulate, passthrough=True)

    worker = _process_parser(
        sub,
        "worker",
        "run the fulfillment worker (workflows + activities)",
        _needs(WORKER, _SALESFORCE_FLOW),
    )
    worker.set_defaults(handler=_cmd_worker, passthrough=False)

    listener = _process_parser(
        sub,
        "listener",
        "run the CDC listener (Salesforce change events -> fulfillments)",
        _needs(LISTENER, _SALESFORCE_FLOW),
    )
    listener.set_defaults(handler=_cmd_listener, passthrough=False)

    api = _process_parser(
        sub, "api", "serve the HTTP API (API_HOST:API_PORT)", _needs(API, _API_TOKENS)
    )
    api.set_defaults(handler=_cmd_api, passthrough=False)

    migrate = _process_parser(
        sub, "migrate", "apply pending Postgres migrations (DATABASE_URL)", _needs(MIGRATE)
    )
    migrate.add_argument(
        "--status",
        action="store_true",
        help="apply nothing: list every migration, applied or (pending); exit "
        f"{PENDING_EXIT} if some are pending, 1 if an applied one was changed since, else 0",
    )
    migrate.set_defaults(handler=_cmd_migrate, passthrough=False)

    openapi = sub.add_parser(
        "openapi",
        help="print the API's OpenAPI schema (as committed in docs/openapi.json)",
        description="Print the API's OpenAPI schema: sorted keys, indent 2, settings not read. "
        "Regenerate the committed copy with `fulfillment openapi > docs/openapi.json`.",
    )
    openapi.set_defaults(handler=_cmd_openapi, passthrough=False)

    completion = sub.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for the shell, generated from this CLI's "
        "subcommands and options. Load it with `source <(fulfillment completion bash)` (zsh: "
        "after compinit).",
    )
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(handler=_cmd_completion, passthrough=False)

    operators.register(sub)
    demo_command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Pass-through subcommands parse their own flags (including --help).
    if argv and argv[0] in {"dev", "emulate"}:
        args = parser.parse_args(argv[:1])
        rest = argv[1:]
    else:
        args = parser.parse_args(argv)
        rest = []
    handler: Handler = args.handler
    try:
        return handler(args, rest)
    except SettingsError as exc:
        print(f"fulfillment {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
