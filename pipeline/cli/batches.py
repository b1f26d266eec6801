"""`outbox batches list|show`: fan-out batches, their progress and outcome."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from pipeline.cli.clikit import (
    EXIT_USAGE,
    CliExit,
    TextType,
    cell,
    dump_json,
    engine_for,
    guarded,
    json_option,
    out,
    settings,
)

__all__ = ["batches"]


@click.group("batches")
def batches() -> None:
    """Fan-out batches: progress and outcome."""


def _batch_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["state"] = (
        "running" if data["finished_at"] is None else "failed" if data["failed"] else "succeeded"
    )
    return data


@batches.command("list")
@click.option("--unfinished", is_flag=True, help="Only batches still running.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
@guarded
def batches_list(unfinished: bool, limit: int, as_json: bool) -> None:
    """Newest batches first."""
    from outbox import job_batches_table as b

    query = select(b).order_by(b.c.created_at.desc()).limit(limit)
    if unfinished:
        query = query.where(b.c.finished_at.is_(None))
    with engine_for(settings()).connect() as conn:
        rows = [_batch_dict(r) for r in conn.execute(query)]
    if as_json:
        dump_json(rows, lines=True)
        return
    table = Table(title="batches")
    for name in ("id", "name", "group", "total", "pending", "failed", "state", "created"):
        table.add_column(name)
    for row in rows:
        table.add_row(
            cell(row["id"]),
            cell(row["name"]),
            cell(row["group_name"]),
            str(row["total"]),
            str(row["pending"]),
            str(row["failed"]),
            row["state"],
            row["created_at"].isoformat(timespec="seconds"),
        )
    out.print(table)


@batches.command("show")
@click.argument("batch_id", type=TextType(36))
@json_option
@guarded
def batches_show(batch_id: str, as_json: bool) -> None:
    """One batch's counts and follow-ups."""
    from outbox import job_batches_table as b

    with engine_for(settings()).connect() as conn:
        row = conn.execute(select(b).where(b.c.id == batch_id)).one_or_none()
    if row is None:
        raise CliExit(EXIT_USAGE, f"no batch with id {batch_id!r}")
    data = _batch_dict(row)
    if as_json:
        dump_json(data)
        return
    for name, value in data.items():
        out.print(Text.assemble((name, "bold"), ": ", cell(value)), highlight=False)
