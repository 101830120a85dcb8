"""Passwords out of connection URLs, for whatever shows or logs one.

Standard library only, and nothing of ours: `config.settings` (a settings' repr and dump) and
`config.logging` (every log line) both use it, so neither imports the other for it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus

# A password inside a connection URL: `scheme://user:password@host` (redis writes
# `rediss://:password@host`), or a `password=` query parameter, the only place a unix-socket URL
# can carry one. The password part runs to the last "@" before the path, as urlsplit reads it, so
# a hand-written unencoded "@" in a password does not leave its tail showing.
_URL_USERINFO_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^/?#@\s:]*:)(?P<password>[^/?#\s]+)(?=@)"
)
_URL_QUERY_PASSWORD = re.compile(
    r"(?P<head>[?&](?:ssl)?pass(?:word|wd)?=)(?P<password>[^&#\s]+)", re.IGNORECASE
)
_HIDDEN = "***"


def redact_url(url: str) -> str:
    """`url` with every password in it replaced by `***`; the rest stays exactly as written.

    Works on any text, so a message that quotes a connection URL can be passed whole.
    """
    url = _URL_USERINFO_PASSWORD.sub(lambda m: m["head"] + _HIDDEN, url)
    return _URL_QUERY_PASSWORD.sub(lambda m: m["head"] + _HIDDEN, url)


def url_passwords(url: str | None) -> list[str]:
    """The passwords inside `url`, as written and percent-decoded (an error may quote either)."""
    if not url:
        return []
    found: list[str] = []
    for match in _URL_USERINFO_PASSWORD.finditer(url):
        found += [match["password"], unquote(match["password"])]
    for match in _URL_QUERY_PASSWORD.finditer(url):
        found += [match["password"], unquote_plus(match["password"])]
    return list(dict.fromkeys(found))
