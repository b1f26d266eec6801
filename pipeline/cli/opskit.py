"""What the incident commands share: times and durations, actor, confirmation, topics."""

from __future__ import annotations

import getpass
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click
from sqlalchemy import Connection, select

from pipeline.cli.clikit import EXIT_FAILED, EXIT_USAGE, REASON, CliExit, TextType, json_option

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "acted_options",
    "actor_of",
    "check_topics",
    "confirm",
    "parse_duration",
    "parse_when",
    "refuse",
]

_ACTOR_OPTION = click.option(
    "--actor", type=TextType(128), default=None, help="Who acts (default: the OS user)."
)
_REASON_OPTION = click.option(
    "--reason", type=REASON, default=None, help="Why (kept in the audit log)."
)


def acted_options(fn: F) -> F:
    """--actor, --reason and --json: every audited command takes them."""
    return _ACTOR_OPTION(_REASON_OPTION(json_option(fn)))


_RELATIVE = re.compile(r"^\s*([0-9]{1,12}(?:\.[0-9]{1,6})?)\s*([smhdw])\s*$", re.ASCII)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Durations and times the outbox can hold: a century back at most, and no earlier than
# 1970 (Kafka timestamps are milliseconds since then).
MAX_DURATION = timedelta(days=36_500)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def refuse(message: str) -> CliExit:
    """Bad input: exit 2, nothing changed."""
    return CliExit(EXIT_USAGE, message)


def parse_duration(option: str, value: str) -> timedelta:
    """`90s`, `15m`, `2h`, `7d`, `1w` (a plain number is seconds)."""
    text = value.strip()
    if text.replace(".", "", 1).isdigit():
        text += "s"
    match = _RELATIVE.match(text)
    if not match:
        raise refuse(f"{option}: {value[:40]!r} is not a duration; use e.g. 90s, 15m, 2h, 7d, 1w")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION.total_seconds():
        raise refuse(f"{option}: {value[:40]!r} is longer than 100 years")
    return timedelta(seconds=seconds)


def parse_when(option: str, value: str, now: datetime) -> datetime:
    """ISO-8601 (UTC when it has no offset) or a duration ago (`2h` = two hours ago)."""
    try:
        if _RELATIVE.match(value):
            moment = now - parse_duration(option, value)
        else:
            moment = datetime.fromisoformat(value.strip())
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise refuse(
            f"{option}: {value[:40]!r} is neither an ISO-8601 time (2026-11-22T03:00:00Z) nor a "
            "relative one (90s, 15m, 2h, 7d)"
        ) from None
    if not EARLIEST <= moment < LATEST:
        raise refuse(f"{option}: {value[:40]!r} is outside 1970-01-01..9999-01-01 (UTC)")
    return moment


def actor_of(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def confirm(yes: bool, question: str) -> None:
    """Destructive work asks first, unless --yes; never prompts without a terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise refuse("stdin is not a terminal, so there is no one to confirm: pass --yes")
    if not click.confirm(question, default=False):
        raise CliExit(EXIT_FAILED, "cancelled; nothing changed")


def check_topics(conn: Connection, topics: tuple[str, ...]) -> None:
    """Each --topic must be routed or present in the outbox; else exit 2."""
    from outbox import outbox_table
    from pipeline.wiring import routed_topics

    routed = set(routed_topics())
    for topic in topics:
        if topic in routed:
            continue
        found = conn.execute(
            select(outbox_table.c.id).where(outbox_table.c.topic == topic).limit(1)
        ).first()
        if found is None:
            raise refuse(
                f"--topic: unknown topic {topic!r} (not routed, no outbox rows); "
                f"routed topics: {', '.join(sorted(routed))}"
            )
