"""`.dev/stack.json`: where everything of the dev stack is and how to log in, plus the dev secrets.

The stack is a JSON-shaped dict with the keys of docs/design.md ("`.dev/stack.json` keys", plus
`salesforce.auth_flow` and `salesforce.jwt_key_file`: the engine signs in with JWT bearer;
`temporal.payload_keys`: every engine process encrypts payloads with the same key;
`worker.metrics_url`, `listener.metrics_url`, `api.url` and `api.codec_url` once those run);
`stack_env` turns it into the environment variables the engine's processes read
(config/settings.py), which the launcher also writes to `.dev/stack.env` for a shell
(`set -a; . .dev/stack.env`), with `API_URL` added there for curl. Dev tokens, secrets and
the payload key are generated once and kept in `.dev/secrets.json`, so they survive restarts: a
new payload key would leave every history in `.dev/temporal.db` unreadable.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from config.payload_keys import generate_payload_key

Stack = dict[str, Any]

# Environment variable <- dotted path in stack.json.
ENV_FROM_STACK: tuple[tuple[str, str], ...] = (
    ("TEMPORAL_ADDRESS", "temporal.address"),
    ("TEMPORAL_NAMESPACE", "temporal.namespace"),
    ("TEMPORAL_TASK_QUEUE", "temporal.task_queue"),
    ("TEMPORAL_PAYLOAD_KEYS", "temporal.payload_keys"),
    ("DATABASE_URL", "database_url"),
    ("REDIS_URL", "redis_url"),
    ("API_SERVICE_TOKEN", "api.service_token"),
    ("API_OPS_TOKEN", "api.ops_token"),
    ("WHMCS_WEBHOOK_SECRET", "whmcs.webhook_secret"),
    ("SF_INSTANCE_URL", "salesforce.instance_url"),
    ("SF_TOKEN_URL", "salesforce.token_url"),
    ("SF_AUTH_FLOW", "salesforce.auth_flow"),
    ("SF_CLIENT_ID", "salesforce.client_id"),
    ("SF_CLIENT_SECRET", "salesforce.client_secret"),
    ("SF_USERNAME", "salesforce.username"),
    ("SF_PASSWORD", "salesforce.password"),
    ("SF_JWT_KEY_FILE", "salesforce.jwt_key_file"),
    # Never written by the dev stack (it hands out a key file); listed so that a key from the
    # developer's shell is kept from engine children along with the rest of the section.
    ("SF_JWT_PRIVATE_KEY", "salesforce.jwt_private_key"),
    ("SF_CA_FILE", "salesforce.ca_file"),
    ("SF_PUBSUB_ENDPOINT", "salesforce.pubsub_address"),
    ("SF_API_VERSION", "salesforce.api_version"),
    ("WHMCS_API_URL", "whmcs.api_url"),
    ("WHMCS_IDENTIFIER", "whmcs.identifier"),
    ("WHMCS_SECRET", "whmcs.secret"),
    ("WHMCS_ACCESS_KEY", "whmcs.access_key"),
    ("FREEBIT_BASE_URL", "freebit.base_url"),
    ("FREEBIT_OEM_ID", "freebit.oem_id"),
    ("FREEBIT_OEM_KEY", "freebit.oem_key"),
)


# Held by the API child only (devstack.components): the worker and the listener never use them.
API_SECRETS = frozenset({"API_SERVICE_TOKEN", "API_OPS_TOKEN", "WHMCS_WEBHOOK_SECRET"})

# For a shell only, not a setting of any process: `curl "$API_URL/api/health/ready"`.
SHELL_ONLY: tuple[tuple[str, str], ...] = (("API_URL", "api.url"),)


def _token() -> str:
    return f"dev-{secrets.token_urlsafe(24)}"


def _payload_key() -> str:
    # A fresh id per key: if secrets.json is lost, histories encrypted with the old key fail
    # with "key id … is not in TEMPORAL_PAYLOAD_KEYS" rather than a puzzling authentication error.
    return generate_payload_key(f"dev-{secrets.token_hex(4)}")


_GENERATORS: dict[str, Callable[[], str]] = {
    "api_service_token": _token,
    "api_ops_token": _token,
    "whmcs_webhook_secret": _token,
    "temporal_payload_keys": _payload_key,
}


def _private_write(path: Path, text: str) -> None:
    """Write atomically, readable by the owner only (the files hold credentials)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def dev_secrets(dev_dir: Path) -> dict[str, str]:
    """The dev stack's tokens, secrets and payload key, generated on first use and kept in
    secrets.json (readable by the owner only)."""
    path = dev_dir / "secrets.json"
    try:
        kept: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        kept = {}
    missing = [name for name in _GENERATORS if not kept.get(name)]
    for name in missing:
        kept[name] = _GENERATORS[name]()
    if missing:
        dev_dir.mkdir(parents=True, exist_ok=True)
        _private_write(path, json.dumps(kept, indent=2) + "\n")
    return kept


def lookup(stack: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path of the stack (None when a part is absent)."""
    value: Any = stack
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def stack_env(stack: Mapping[str, Any]) -> dict[str, str]:
    """The engine's environment variables for what the stack holds (absent parts are left out)."""
    env: dict[str, str] = {}
    for name, dotted in ENV_FROM_STACK:
        value = lookup(stack, dotted)
        if value is not None:
            env[name] = str(value)
    return env


def write_stack(dev_dir: Path, stack: Mapping[str, Any]) -> Path:
    """Write stack.json and stack.env under dev_dir; return the path of stack.json."""
    dev_dir.mkdir(parents=True, exist_ok=True)
    env = stack_env(stack)
    for name, dotted in SHELL_ONLY:
        if (value := lookup(stack, dotted)) is not None:
            env[name] = str(value)
    env_lines = [f"{name}={shlex.quote(value)}" for name, value in env.items()]
    _private_write(dev_dir / "stack.env", "\n".join(env_lines) + "\n")
    path = dev_dir / "stack.json"
    _private_write(path, json.dumps(stack, indent=2) + "\n")
    return path


def merge(stack: Stack, section: Mapping[str, Any]) -> None:
    """Add a component's part of the stack; nested objects are merged, not replaced."""
    for key, value in section.items():
        current = stack.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merge(current, value)
        else:
            stack[key] = dict(value) if isinstance(value, Mapping) else value
