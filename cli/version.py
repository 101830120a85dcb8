"""`fulfillment --version`: the package version, and the checkout's commit where there is one.

The text is the build id a worker declares when WORKER_BUILD_ID is not set
(`workers.versioning.build_id`), so `fulfillment --version` on a host says which Worker
Deployment version its workers join.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def version_text() -> str:
    """`fulfillment <version>[+<commit>]`, whatever WORKER_BUILD_ID says."""
    from config.settings import Settings
    from workers.versioning import build_id

    # Defaults, not the environment: a malformed setting must not stop --version, and
    # WORKER_BUILD_ID (an operator's own label) is not the source's version.
    return f"fulfillment {build_id(Settings.model_construct(worker_build_id=None))}"


class VersionAction(argparse.Action):
    """Like argparse's "version" action, but the text is worked out only when asked for (it
    imports the worker's modules and may run git)."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str = argparse.SUPPRESS,
        default: Any = argparse.SUPPRESS,
        help: str | None = None,
    ) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(version_text())
        parser.exit()
