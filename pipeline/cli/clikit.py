"""What every `outbox` command shares: exit codes, consoles, settings, the `--json` option
and its one JSON dumper, bounded option types, and the translation of errors into one line
and an exit code."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Callable
from datetime import date, datetime, timedelta
from functools import wraps
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from pipeline.errors import CliExit
from pipeline.settings import Settings, SettingsError

__all__ = [
    "EXIT_BROKER_UNREACHABLE",
    "EXIT_CODES_HELP",
    "EXIT_CONFIG",
    "EXIT_DB_UNREACHABLE",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ID",
    "KEY",
    "MAX_ID",
    "NAME",
    "REASON",
    "CliExit",
    "FiniteFloat",
    "cell",
    "database_error",
    "dump_json",
    "engine_for",
    "err",
    "guarded",
    "json_option",
    "out",
    "settings",
    "yes_option",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG, EXIT_DB_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_BROKER_UNREACHABLE = 5
EXIT_CODES_HELP = (
    "Exit codes: 0 done, 1 failed, 2 bad usage or input, 3 bad configuration "
    "(the message names the variable), 4 database unreachable, 5 Kafka broker unreachable."
)

out = Console()
# Messages on stderr are not wrapped at the terminal width: a wrapped line breaks a command a
# user copies (`outbox topics\nensure`) and the one-line-per-message logs scripts read.
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

# Row ids are 64-bit (BIGINT): a larger number can never name a row, and the drivers
# raise on it instead of finding nothing.
MAX_ID = 2**63 - 1
ID = click.IntRange(1, MAX_ID)


class FiniteFloat(click.FloatRange):
    """A float in a range that is also a number: `nan` and `inf` pass a FloatRange."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class KeyType(click.ParamType[str]):
    """An aggregate id / outbox key, by the one rule of `outbox.keys`."""

    name = "key"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from outbox.keys import key_problem

        text = str(value)
        problem = key_problem(text)
        if problem is not None:
            self.fail(f"{text[:80]!r} {problem}", param, ctx)
        return text


class TextType(click.ParamType[str]):
    """One line of text of bounded length, without control characters (NUL included)."""

    name = "text"

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        if len(text) > self.max_length:
            self.fail(f"{len(text)} characters; at most {self.max_length}", param, ctx)
        bad = next((ch for ch in text if ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0), None)
        if bad is not None:
            self.fail(f"contains the control character U+{ord(bad):04X}", param, ctx)
        return text


KEY = KeyType()
NAME = TextType(255)  # topics, event and aggregate types, groups, actions, actors
REASON = TextType(2000)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table."
)
yes_option = click.option("--yes", is_flag=True, help="Do not ask for confirmation.")


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def dump_json(value: Any, *, lines: bool = False) -> None:
    """The one JSON printer of the CLI: a document, or with `lines` one document per item."""
    if lines:
        for item in value:
            click.echo(json.dumps(item, default=_default))
        return
    click.echo(json.dumps(value, default=_default))


def cell(value: object) -> Text:
    """Stored or operator-given text for a table or a line: never read as rich markup, and
    masked like the logs (URL passwords, assigned secrets, e-mail addresses)."""
    from infra.logs import redact_text

    return Text("" if value is None else redact_text(str(value)))


def settings() -> Settings:
    """The settings `main` read once; a bad configuration stops the command here."""
    loaded: Settings | SettingsError = click.get_current_context().find_root().obj
    if isinstance(loaded, SettingsError):
        raise CliExit(EXIT_CONFIG, str(loaded))
    return loaded


def engine_for(loaded: Settings) -> Engine:
    from infra.db import make_engine

    return make_engine(loaded.database_url)


def _orig(exc: DBAPIError) -> str:
    """The driver's own message, one line, never the statement or its parameters."""
    text = str(exc.orig).strip().splitlines()
    return text[0][:300] if text else type(exc.orig).__name__


def database_error(exc: SQLAlchemyError) -> CliExit:
    """A database error as the operator can act on it (exit 1, 2 or 4)."""
    from outbox import is_missing_schema

    if isinstance(exc, DBAPIError) and is_missing_schema(exc):
        return CliExit(
            EXIT_FAILED,
            f"the database refused a statement: {_orig(exc)}. "
            "Is the schema up to date? Run `outbox db upgrade`.",
        )
    if isinstance(exc, DataError):
        return CliExit(EXIT_USAGE, f"the database refused a value: {_orig(exc)}")
    if isinstance(exc, IntegrityError):
        return CliExit(
            EXIT_FAILED,
            f"the database refused the change: {_orig(exc)}; nothing was written, look again",
        )
    if isinstance(exc, DBAPIError):
        return CliExit(
            EXIT_DB_UNREACHABLE,
            f"database unreachable or refused the operation: {_orig(exc)}. "
            "Check DATABASE_URL and that the server is running.",
        )
    return CliExit(EXIT_FAILED, f"database error: {type(exc).__name__}: {str(exc)[:300]}")


def guarded(fn: F) -> F:
    """Translate the packages' errors into one line and an exit code: one root per package
    (each package's errors.py draws its tree). The scheduler commands translate its errors
    themselves (importing it loads APScheduler); `main` turns anything else into exit 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from consumers import ConsumerError, WorkerBrokerUnavailable
        from domain import DomainError
        from outbox.errors import OutboxError
        from outbox.locks import LockTimeout
        from relay import BrokerUnavailable, RelayError
        from relay.errors import PartitionsDiffer

        try:
            return fn(*args, **kwargs)
        except (BrokerUnavailable, WorkerBrokerUnavailable) as exc:
            raise CliExit(EXIT_BROKER_UNREACHABLE, str(exc)) from exc
        except PartitionsDiffer as exc:  # topics that differ from routing: configuration
            raise CliExit(EXIT_CONFIG, str(exc)) from exc
        except (RelayError, ConsumerError) as exc:
            raise CliExit(EXIT_FAILED, str(exc)) from exc
        except SQLAlchemyError as exc:
            raise database_error(exc) from exc
        except LockTimeout as exc:
            raise CliExit(EXIT_FAILED, str(exc)) from exc
        except (DomainError, OutboxError) as exc:
            raise CliExit(EXIT_USAGE, str(exc)) from exc
        except SettingsError as exc:
            raise CliExit(EXIT_CONFIG, str(exc)) from exc
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise CliExit(EXIT_FAILED, f"{exc.strerror or exc}{where}") from exc

    return wrapper  # type: ignore[return-value]
