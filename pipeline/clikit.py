"""What every `outbox` command shares: exit codes, consoles, settings, error translation."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from pipeline.settings import Settings, SettingsError

__all__ = [
    "EXIT_BROKER_UNREACHABLE",
    "EXIT_CODES_HELP",
    "EXIT_CONFIG",
    "EXIT_DB_UNREACHABLE",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliExit",
    "engine_for",
    "err",
    "guarded",
    "out",
    "settings",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG, EXIT_DB_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_BROKER_UNREACHABLE = 5
EXIT_CODES_HELP = (
    "Exit codes: 0 done, 1 failed, 2 bad usage or input, 3 bad configuration "
    "(the message names the variable), 4 database unreachable, 5 Kafka broker unreachable."
)

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class CliExit(Exception):
    """Stop with a named exit code and one clear line for the operator."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def settings() -> Settings:
    """The settings `main` read once; a bad configuration stops the command here."""
    loaded: Settings | SettingsError = click.get_current_context().find_root().obj
    if isinstance(loaded, SettingsError):
        raise CliExit(EXIT_CONFIG, str(loaded))
    return loaded


def engine_for(loaded: Settings) -> Engine:
    from pipeline.db import make_engine

    return make_engine(loaded.database_url)


def guarded(fn: F) -> F:
    """Translate errors an operator can act on into one line and an exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from consumers import ConsumerError, WorkerBrokerUnavailable
        from domain import DomainError
        from outbox import is_missing_schema
        from relay import BrokerUnavailable, RelayError

        try:
            return fn(*args, **kwargs)
        except (BrokerUnavailable, WorkerBrokerUnavailable) as exc:
            raise CliExit(EXIT_BROKER_UNREACHABLE, str(exc)) from exc
        except (RelayError, ConsumerError) as exc:
            raise CliExit(EXIT_FAILED, str(exc)) from exc
        except (ProgrammingError, OperationalError) as exc:
            if is_missing_schema(exc):
                raise CliExit(
                    EXIT_FAILED,
                    f"the database refused a statement: {exc.orig}. "
                    "Is the schema up to date? Run `outbox db upgrade`.",
                ) from exc
            raise CliExit(
                EXIT_DB_UNREACHABLE,
                f"database unreachable or refused the operation: {exc.orig}. "
                "Check DATABASE_URL and that the server is running.",
            ) from exc
        except DomainError as exc:
            raise CliExit(EXIT_USAGE, str(exc)) from exc

    return wrapper  # type: ignore[return-value]
