"""structlog set-up: JSON lines, context variables, and a redaction processor.

The redactor runs last before rendering, on every line: values under a secret-looking key
(password, pwd, passwd, secret, token, otp, signature, authorization, auth, cookie,
credentials, private_key, api_key, ...) become "[redacted]", at any depth of dicts and
lists; in any other text (bytes included) URL passwords become `***`, `password=...`-style
assignments lose their value and e-mail addresses (also non-ASCII ones) keep only their
first character and domain. `redact_text` is the same for one string (the CLI's messages).
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from functools import lru_cache
from typing import Any

import orjson
import structlog

__all__ = ["configure_logging", "redact", "redact_text", "redact_value", "register_secrets"]

REDACTED = "[redacted]"

# Words that make a key name secret, matched per word of the name (so `author` or
# `keyboard` stay readable while `auth_token`, `x-api-key` and `db_passwd` do not).
_SECRET_WORDS = frozenset(
    {
        "password", "passwd", "pwd", "pass", "passphrase", "secret", "secrets", "token",
        "tokens", "otp", "signature", "sig", "authorization", "auth", "cookie", "cookies",
        "credential", "credentials", "apikey", "privatekey", "dsn", "sessionid", "csrf",
        "jwt", "bearer",
    }
)  # fmt: skip
# Two-word names whose words are harmless alone (`key`, `private`, `access`).
_SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key")})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

# scheme://user:password@host -> scheme://user:***@host (the password wholly gone).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]*(?=@)")
# password=..., "token": "...", pwd: ... in free text (DSNs, headers, JSON in a message).
_ASSIGNED = re.compile(
    r"(?i)(?P<name>\b(?:password|passwd|pwd|secret|token|api[_-]?key|private[_-]?key|"
    r"authorization|cookie|credentials?|otp|signature)\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?:bearer\s+|basic\s+)?[^\s\"',;&)]+"
)
# Any address, also internationalised (юзер@пример.рф): the local part keeps one character.
_EMAIL = re.compile(
    r"(?P<first>[^*\s@<>()\[\]{},;:\"'/\\=])[^\s@<>()\[\]{},;:\"'/\\=]*@(?P<domain>[\w.-]+\.\w+)"
)


@lru_cache(maxsize=4096)
def secret_key(key: str) -> bool:
    """Log keys come from a small set: split a key name into words once, not per line."""
    words = [w.lower() for w in _WORD.findall(key)]
    if any(w in _SECRET_WORDS for w in words):
        return True
    joined = "".join(words)
    if joined in _SECRET_WORDS:
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


# The configured secrets themselves (database password, SMTP password, webhook secrets):
# masked wherever they appear, even in free text no pattern recognises ("login 's3cr3t'").
_KNOWN: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Mask these exact values in everything redacted from now on (4+ characters: a
    shorter one would mask ordinary text)."""
    _KNOWN.update(v for v in values if v and len(v) >= 4)


def redact_text(text: str) -> str:
    """One string with known secrets, URL passwords, assigned secrets and e-mail addresses
    masked."""
    for known in _KNOWN:
        if known in text:
            text = text.replace(known, REDACTED)
    if "@" in text:
        if "://" in text:
            text = _URL_PASSWORD.sub(r"\g<head>***", text)
        text = _EMAIL.sub(lambda m: f"{m.group('first')}***@{m.group('domain')}", text)
    if "=" in text or ":" in text:
        text = _ASSIGNED.sub(lambda m: f"{m.group('name')}{REDACTED}", text)
    return text


def redact_value(value: Any, depth: int = 0) -> Any:
    """A log value with every secret in it masked: strings, bytes, dicts, lists, tuples."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    if depth > 20:  # a cyclic or absurdly deep structure is not worth logging
        return REDACTED
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and secret_key(k) else redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, depth + 1) for v in value]
    return value


def redact(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Never log secrets, tokens, OTPs, passwords in URLs or full e-mail addresses."""
    for key, value in list(event_dict.items()):
        if secret_key(key):
            event_dict[key] = REDACTED
        elif value is None or isinstance(value, int | float | bool):
            continue
        else:
            event_dict[key] = redact_value(value)
    return event_dict


class _StderrLogger:
    """Writes each line to whatever sys.stderr is now (not what it was at set-up)."""

    def msg(self, message: str | bytes) -> None:
        text = message.decode() if isinstance(message, bytes) else message
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    # orjson renders a consumer's per-message line in 12 us instead of 17.5 (bench/consume.py).
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=orjson.dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
