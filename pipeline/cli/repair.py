"""`outbox park`, `release`, `skip`, `requeue`: the repairs of a stuck key or message. Each
is one audited transaction; bad input exits 2 and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
from rich.text import Text
from sqlalchemy import Connection

from pipeline.cli.clikit import ID, KEY, cell, dump_json, engine_for, guarded, out, settings
from pipeline.cli.opskit import acted_options, actor_of, refuse

__all__ = ["park", "release", "requeue", "skip"]


def _act(
    as_json: bool, action: Callable[[Connection, str, datetime], Any], actor: str | None
) -> None:
    """Run one audited repair in a transaction; Refused -> exit 2, nothing changed."""
    from outbox.audit import Refused
    from outbox.types import utcnow

    who = actor_of(actor)
    try:
        with engine_for(settings()).begin() as conn:
            result = action(conn, who, utcnow())
    except Refused as exc:
        raise refuse(str(exc)) from exc
    if as_json:
        dump_json(result.as_dict())
        return
    verb = "done" if result.changed else "nothing to do"
    out.print(cell(f"{result.action} {result.target}: {verb} ({result.rows} rows) by {who}"))
    if result.note:
        out.print(Text.assemble(("note:", "yellow"), " ", cell(result.note)), highlight=False)


def _repair(name: str, doc: str, *, by_key: bool) -> click.Command:
    """An audited repair command of `outbox.parking`: `--key K` or `--message ID`."""
    target = (
        click.option("--key", "target", type=KEY, required=True, help="The key (aggregate id).")
        if by_key
        else click.option("--message", "target", type=ID, required=True, help="Outbox id.")
    )

    @click.command(name, help=doc)
    @target
    @acted_options
    @guarded
    def command(target: Any, actor: str | None, reason: str | None, as_json: bool) -> None:
        from outbox import parking

        action = getattr(parking, name)
        _act(
            as_json, lambda c, who, now: action(c, target, actor=who, reason=reason, now=now), actor
        )

    return command


park = _repair(
    "park", "Hold every message of a key, also ones committed later; others flow.", by_key=True
)
release = _repair(
    "release", "Let a parked key flow again; its messages go out in order.", by_key=True
)
skip = _repair(
    "skip",
    "Mark a pending message dead (with the reason) so its key's later messages flow.",
    by_key=False,
)
requeue = _repair(
    "requeue",
    "Send a dead or parked message again: back to pending, attempts reset.",
    by_key=False,
)
