"""Root conftest: loads every fixture module under tests/fixtures/ as a pytest plugin.

Each layer's fixtures live in a module of their own there (services, emulators, ...), so a new
module is picked up without editing this file. The one fixture defined here resets process-wide
logging state that every layer shares.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from config.logging import reset_redaction

pytest_plugins = sorted(
    f"tests.fixtures.{path.stem}"
    for path in (Path(__file__).parent / "fixtures").glob("*.py")
    if not path.name.startswith("_")
)


@pytest.fixture(autouse=True)
def _forget_logged_secrets() -> Iterator[None]:
    """No secret registered by one test stays masked in the next.

    The redactor lives as long as the process; a secret left registered would mask the next
    test's output and so hide a leak there.
    """
    yield
    reset_redaction()
