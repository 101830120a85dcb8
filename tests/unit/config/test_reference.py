"""docs/configuration.md is generated from the settings model and must match it."""

from __future__ import annotations

from config.reference import PAGE, render
from config.settings import Settings, env_name


def test_the_configuration_page_matches_the_settings_model() -> None:
    assert PAGE.read_text() == render(), (
        "docs/configuration.md is stale: run `.venv/bin/python -m config.reference "
        "> docs/configuration.md`"
    )


def test_every_setting_is_on_the_page() -> None:
    page = render()
    for name in Settings.model_fields:
        assert f"| `{env_name(name)}` |" in page
