"""structlog set-up: JSON lines, context variables, and a redaction processor."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from functools import lru_cache
from typing import Any

import orjson
import structlog

__all__ = ["configure_logging", "redact"]

_SECRET_KEYS = re.compile(r"(secret|token|password|otp|signature|authorization|api_key)", re.I)
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")


def _mask_email(text: str) -> str:
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)


@lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    """Log keys come from a small set: one regex search per key name, not per line."""
    return _SECRET_KEYS.search(key) is not None


def redact(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Never log secrets, tokens, OTPs or full e-mail addresses."""
    for key, value in list(event_dict.items()):
        if _secret_key(key):
            event_dict[key] = "[redacted]"
        elif isinstance(value, str) and "@" in value:
            event_dict[key] = _mask_email(value)
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
