"""`outbox db upgrade|current`: the schema, through Alembic."""

from __future__ import annotations

import click

from pipeline.cli.clikit import TextType, engine_for, guarded, out, settings
from pipeline.cli.opskit import refuse

__all__ = ["db"]


@click.group("db")
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", type=TextType(64), default="head")
@guarded
def db_upgrade(revision: str) -> None:
    """Apply the migrations up to REVISION (default: the newest)."""
    from infra.migrate import MigrationError, current_revision, upgrade

    engine = engine_for(settings())
    try:
        upgrade(engine, revision)
    except MigrationError as exc:
        raise refuse(f"db upgrade {revision[:64]!r}: {exc}") from None
    out.print(f"database at revision [bold]{current_revision(engine)}[/bold]")


@db.command("current")
@guarded
def db_current() -> None:
    """Print the revision the database is at."""
    from infra.migrate import current_revision

    out.print(current_revision(engine_for(settings())) or "(not migrated)")
