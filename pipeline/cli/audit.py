"""`outbox audit`: what operators did, newest first."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from pipeline.cli.clikit import (
    NAME,
    TextType,
    cell,
    dump_json,
    engine_for,
    guarded,
    json_option,
    out,
    settings,
)
from pipeline.cli.opskit import parse_when

__all__ = ["audit"]


@click.command("audit")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option(
    "--action", type=NAME, default=None, help="Only this action (park, skip, replay, prune...)."
)
@click.option(
    "--target",
    type=TextType(300),
    default=None,
    help="Only this target (key:K, message:ID, replay:R).",
)
@click.option("--since", default=None, help="Only entries since (ISO time or 2h, 7d...).")
@json_option
@guarded
def audit(
    limit: int, action: str | None, target: str | None, since: str | None, as_json: bool
) -> None:
    """Operator actions, newest first: who, when, what, why."""
    from outbox.audit import entries
    from outbox.types import utcnow

    start = parse_when("--since", since, utcnow()) if since else None
    with engine_for(settings()).connect() as conn:
        rows = entries(conn, limit=limit, action=action, target=target, since=start)
    if as_json:
        dump_json([_entry(r) for r in rows])
        return
    table = Table("id", "at", "actor", "action", "target", "reason", "details")
    for r in rows:
        table.add_row(
            str(r.id), str(r.at), cell(r.actor), cell(r.action), cell(r.target), cell(r.reason),
            cell(r.details),
        )  # fmt: skip
    out.print(table)


def _entry(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "at": r.at,
        "actor": r.actor,
        "action": r.action,
        "target": r.target,
        "reason": r.reason,
        "details": json.loads(r.details),
    }
