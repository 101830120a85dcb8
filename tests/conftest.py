"""Root conftest: loads every fixture module under tests/fixtures/ as a pytest plugin.

Each layer's fixtures live in a module of their own there (services, emulators, ...), so a new
module is picked up without editing this file.
"""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{path.stem}"
    for path in (Path(__file__).parent / "fixtures").glob("*.py")
    if not path.name.startswith("_")
)
