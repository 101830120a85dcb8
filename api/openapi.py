"""The API's OpenAPI schema as the file committed in docs/openapi.json.

`python -m api.openapi > docs/openapi.json` (or `fulfillment openapi`) writes it again after a
route changes; a test fails while the committed file differs from what the app serves at
`/api/openapi.json`. The app is built from the settings' defaults, not the environment, so the
text depends on the code only: sorted keys, indented by two, one newline at the end.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from api.app import create_app
from config.settings import Settings


def schema() -> dict[str, Any]:
    """The schema the app serves (no setting changes it; defaults stand in for them all)."""
    return create_app(Settings.model_construct()).openapi()


def render(document: dict[str, Any] | None = None) -> str:
    """The schema as committed: deterministic JSON text."""
    return json.dumps(schema() if document is None else document, indent=2, sort_keys=True) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
