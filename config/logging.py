"""Structured logging, set up in one place for every process.

JSON lines in production (one object per event, ready for a log shipper), a readable console
format on a terminal. One processor keeps secrets and customers' personal data out of both:

- Secrets: values under secret-looking keys are masked; every secret value of the configuration
  in force (`Settings.secrets()`, replaced on each `configure_logging`) is masked wherever it
  appears, exception text included; so is any password inside a URL, however short.
- Personal data: values under keys that name a phone number, an EID, a person's name, an
  address or an email are masked, and phone numbers, EIDs and email addresses are masked inside
  any text. Phone numbers and EIDs keep their last four digits so that an operator can still
  match a line to a ticket. Ids the operators work with (keys ending in `id`/`ids`: order,
  account, WHMCS, workflow, replay and request ids) are left whole.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable, Iterable, MutableMapping
from enum import Enum, auto
from typing import Any, TextIO

import structlog

from config.redaction import redact_url

REDACTED = "***"
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|authorization|auth_key|authkey|oem_?key|api_?key|"
    r"access_?key|card|cvv|session_id|signature)",
    re.IGNORECASE,
)

# Key words (see `_key_words`) whose values are phone numbers or EIDs.
_NUMBER_WORDS = frozenset({"phone", "phonenumber", "msisdn", "tel", "telephone", "eid"})
# Keys, run together, that hold a person's name, address, email or birth data. Matched as
# suffixes so the Salesforce spellings (`BillingStreet`, `BillingPostalCode`) are covered too;
# a bare "address" or "name" only as the whole key, since `temporal_address` or
# `product_name` are not personal.
_PERSONAL_SUFFIXES = (
    "firstname", "lastname", "fullname", "givenname", "familyname", "middlename", "surname",
    "kana", "kanji", "customername", "contactname", "accountname", "personname", "holdername",
    "street", "city", "postalcode", "zipcode", "prefecture", "billingstate", "shippingstate",
    "mailingstate", "billingaddress", "shippingaddress", "mailingaddress", "homeaddress",
    "streetaddress", "postaladdress", "email", "emailaddress", "birthday", "birthdate",
    "dateofbirth", "gender",
)  # fmt: skip
_PERSONAL_KEYS = frozenset({"name", "address", "zip"})

_EID_TEXT = re.compile(r"(?<![0-9A-Za-z])[0-9]{32}(?![0-9A-Za-z])")
# Japanese numbers as people and Freebit write them: +81 with or without separators, domestic
# with a leading 0 (hyphenated, or 11-14 digits run together as Freebit's `account` is), and the
# MSISDN form 81... . Anything glued to letters, digits or hyphens (Salesforce ids, UUIDs, dates,
# error codes like 400-356) is left alone.
_PHONE_TEXT = re.compile(
    r"(?<![\w+\-.])(?:"
    r"\+81[ \-]?(?:[1-9][0-9]{8,11}|[1-9][0-9]{0,3}[ \-][0-9]{1,4}[ \-][0-9]{3,4})"
    r"|0[0-9]{1,4}-[0-9]{1,4}-[0-9]{3,6}"
    r"|0[0-9]{10,13}"
    r"|81[1-9][0-9]{8,11}"
    r")(?![\w\-])"
)
# The local part only: the domain says which company, not who.
_EMAIL_TEXT = re.compile(r"(?<![\w.+\-/:])[\w.+\-]+(?=@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+)")


class _Kind(Enum):
    SECRET = auto()
    NUMBER = auto()  # phone number or EID: keep the last four digits
    PERSONAL = auto()  # name, address, email: mask whole
    MAYBE_PHONE = auto()  # Freebit's `account` is the phone number; other accounts are not
    OPERATIONAL_ID = auto()
    TEXT = auto()


def _key_words(key: str) -> list[str]:
    """`SIM_Phone_Number__c` -> sim, phone, number; `lastName` -> last, name."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    words = [word for word in re.split(r"[^0-9A-Za-z]+", spaced.lower()) if word]
    if key.endswith("__c") and words[-1:] == ["c"]:  # a Salesforce custom field's suffix
        words.pop()
    return words


@functools.lru_cache(maxsize=2048)
def _classify(key: str) -> _Kind:
    if _SECRET_KEY.search(key):
        return _Kind.SECRET
    words = _key_words(key)
    compact = "".join(words)
    if _NUMBER_WORDS.intersection(words):
        return _Kind.NUMBER
    if compact in _PERSONAL_KEYS or compact.endswith(_PERSONAL_SUFFIXES):
        return _Kind.PERSONAL
    if compact == "account":
        return _Kind.MAYBE_PHONE
    if words[-1:] in (["id"], ["ids"]):
        return _Kind.OPERATIONAL_ID
    return _Kind.TEXT


def _last_four(value: object) -> str:
    digits = re.sub(r"[^0-9]", "", str(value))
    if len(digits) < 8:
        return REDACTED
    return "*" * (len(digits) - 4) + digits[-4:]


def _mask_phone_text(match: re.Match[str]) -> str:
    text = match[0]
    digits = re.sub(r"[^0-9]", "", text)
    national = len(digits) - 2 if text.startswith(("+", "81")) else len(digits)
    low = 10 if text[0] == "0" else 9  # a hyphenated landline has 10 digits with its 0
    return _last_four(text) if low <= national <= 14 else text


def _is_phone_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return False
    digits = re.sub(r"[ \-+]", "", str(value))
    return digits.isascii() and digits.isdigit() and 11 <= len(digits) <= 14


class SecretRedactor:
    """structlog processor that masks secrets and personal data, by key and by value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self.replace(secrets)

    def replace(self, secrets: Iterable[str]) -> None:
        """Mask exactly these secret values from now on (the previous ones are forgotten)."""
        # Very short values would mask innocent substrings everywhere; real secrets are longer
        # (a short password inside a URL is still masked by its place in the URL). Longest
        # first, so a secret that contains another is masked whole.
        kept = {s for s in secrets if len(s) >= 6}
        self._secrets = tuple(sorted(kept, key=len, reverse=True))

    def __call__(
        self, _logger: object, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event):
            event[key] = self._redact(key, event[key])
        return event

    def _redact(self, key: str, value: Any) -> Any:
        kind = _classify(key)
        if kind is _Kind.SECRET:
            return REDACTED if value not in (None, "", False) else value
        if kind is _Kind.NUMBER or (kind is _Kind.MAYBE_PHONE and _is_phone_number(value)):
            return _mask_leaves(value, _last_four)
        if kind is _Kind.PERSONAL:
            return _mask_leaves(value, lambda _: REDACTED)
        if isinstance(value, str):
            return self.scrub_secrets(value) if kind is _Kind.OPERATIONAL_ID else self.scrub(value)
        if isinstance(value, dict):
            return {k: self._redact(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact(key, v) for v in value]
        if value is None or isinstance(value, int | float):
            return value
        # An exception or a model logged as a value would be rendered by its repr (both
        # renderers fall back to it), unscanned: scan that text instead.
        return self._redact(key, repr(value))

    def scrub_secrets(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return redact_url(text)

    def scrub(self, text: str) -> str:
        """`text` with every secret, phone number, EID and email address in it masked."""
        text = self.scrub_secrets(text)
        text = _EID_TEXT.sub(lambda m: _last_four(m[0]), text)
        text = _PHONE_TEXT.sub(_mask_phone_text, text)
        return _EMAIL_TEXT.sub(REDACTED, text)


def _mask_leaves(value: Any, mask: Callable[[object], str]) -> Any:
    if value is None or value == "" or isinstance(value, bool):
        return value
    if isinstance(value, dict):
        return {k: _mask_leaves(v, mask) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_leaves(v, mask) for v in value]
    return mask(value)


# One instance for the life of the process: loggers that structlog cached keep pointing at it,
# so `configure_logging` changes what it masks by replacing its secrets, never the instance.
_redactor = SecretRedactor()


def configure_logging(
    *,
    level: str = "INFO",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the standard library so both end in the same formatted stream.

    `secrets` replaces the secret values masked until now: a process (or a test) that
    configures logging again masks its own secrets, not also those of an earlier configuration.
    """
    _redactor.replace(secrets)
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redactor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that log request URLs or bodies at INFO would leak tokens and ids into logs.
    for noisy in ("httpx", "httpcore", "urllib3", "asyncio", "aiocometd_ng", "aiosfstream_ng"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


def scrub(text: str) -> str:
    """Mask every known secret and personal datum inside `text` (for text leaving the process)."""
    return _redactor.scrub(text)


def reset_redaction() -> None:
    """Forget every registered secret value (test isolation; a process reconfigures instead)."""
    _redactor.replace(())
