"""What the API says at start about who may use the Temporal UI's codec."""

from __future__ import annotations

from structlog.testing import capture_logs

from api.app import create_app
from config.settings import load_settings


def warnings_at_start(**settings: str) -> list[str]:
    with capture_logs() as logs:
        create_app(load_settings(**settings))
    return [entry["event"] for entry in logs if entry["log_level"] == "warning"]


def test_an_open_codec_and_the_deprecated_setting_are_each_a_warning_at_start() -> None:
    assert warnings_at_start(api_codec_auth="none") == ["codec.open"]
    assert warnings_at_start(api_codec_require_auth="false") == [
        "codec.deprecated_setting",
        "codec.open",
    ]
    assert warnings_at_start(api_codec_require_auth="true") == ["codec.deprecated_setting"]
    assert warnings_at_start(api_codec_auth="token") == []
