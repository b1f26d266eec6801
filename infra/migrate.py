"""Alembic, driven from code: `outbox db upgrade` and the test suite use the same path.

An upgrade holds the `outbox:migrate` lock (`outbox.locks.exclusive`: an advisory lock on
PostgreSQL, GET_LOCK on MySQL/MariaDB, an exclusive transaction on SQLite), so two at once
are safe: the second waits, then finds the schema current and does nothing.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Engine

import migrations
from infra.errors import InfraError
from outbox.locks import exclusive

__all__ = [
    "MigrationError",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade",
]

LOCK_NAME = "outbox:migrate"


class MigrationError(InfraError):
    """Alembic refused the upgrade (an unknown revision, say); nothing was changed."""


def alembic_config(url: str) -> Config:
    folder = Path(migrations.__file__).parent
    cfg = Config()
    cfg.set_main_option("script_location", str(folder))
    # Percent signs in passwords would be read as interpolation by ConfigParser.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head", *, lock_timeout_s: float = 600.0) -> None:
    """Migrate to `revision` under the migration lock; MigrationError when Alembic refuses."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    try:
        with exclusive(engine, LOCK_NAME, timeout_s=lock_timeout_s, sqlite_exclusive=True) as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except CommandError as exc:
        raise MigrationError(f"{exc}; the newest revision is {head_revision()}") from None


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    """The newest migration this code ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None  # noqa: S101 - the package ships migrations
    return head
