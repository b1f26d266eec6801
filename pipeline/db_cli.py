"""`outbox db upgrade|current`: the schema, through Alembic."""

from __future__ import annotations

import click

from pipeline.clikit import engine_for, guarded, out, settings

__all__ = ["db"]


@click.group("db")
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@guarded
def db_upgrade(revision: str) -> None:
    """Apply the migrations up to REVISION (default: the newest)."""
    from pipeline.migrate import current_revision, upgrade

    engine = engine_for(settings())
    upgrade(engine, revision)
    out.print(f"database at revision [bold]{current_revision(engine)}[/bold]")


@db.command("current")
@guarded
def db_current() -> None:
    """Print the revision the database is at."""
    from pipeline.migrate import current_revision

    out.print(current_revision(engine_for(settings())) or "(not migrated)")
