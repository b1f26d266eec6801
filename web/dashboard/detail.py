"""Operator detail on the dashboard's pages: a failed job's attempts, the next attempt of a
retrying job, and the parked keys (who parked them, when, why, how many rows they hold).

A failed job's attempts come from its headers (`x-attempts`, written by the runtime's
retries: consumers.attempt_history); a row failed before that header existed shows its
last attempt only, from its own columns. A retrying job's next attempt is its retry copy's
`x-not-before`, looked up among the newest outbox rows like the Waiting page's list.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from consumers.attempt_history import aware_moment, read_attempts
from outbox.coroner import parked_views
from outbox.schema import outbox_table as o

__all__ = ["attempts_of", "next_attempts", "parked_keys"]

# Retry copies are looked for among this many newest outbox rows (as reads.delayed_rows).
RECENT_WINDOW = 20_000
PARKED_SHOWN = 200


def attempts_of(item: dict[str, Any], mask: Callable[[str], str]) -> list[dict[str, Any]]:
    """Every attempt of a failed job, oldest first: when it ended, how long it ran (ms, None
    when not recorded) and its exception."""
    try:
        headers = json.loads(item.get("headers") or "{}")
    except ValueError:
        headers = {}
    found = [
        {"n": e["n"], "at": e["at"], "ms": e["ms"], "error": mask(e["error"])}
        for e in read_attempts(headers)
    ]
    last = int(item.get("attempts") or 0)
    if not found or found[-1]["n"] < last:
        error = f"{item.get('exception_class') or item.get('reason') or 'Error'}: "
        found.append(
            {
                "n": last,
                "at": item.get("failed_at"),
                "ms": None,
                "error": error + (item.get("exception_message") or "")[:300],
            }
        )
    return found


def next_attempts(
    conn: Connection, rows: Iterable[dict[str, Any]], now: datetime
) -> dict[tuple[str, str], datetime]:
    """(job, event id) -> when the next attempt is due, for the retrying rows listed."""
    wanted = {
        r["message_id"].split("/")[0]
        for r in rows
        if r.get("status") == "retrying" and r.get("message_id")
    }
    if not wanted:
        return {}
    top = conn.execute(select(func.max(o.c.id))).scalar() or 0
    copies = conn.execute(
        select(o.c.event_id, o.c.headers)
        .where(
            o.c.id > top - RECENT_WINDOW,
            o.c.event_id.in_(sorted(wanted)[:500]),
            o.c.topic.like("%.retry"),
        )
        .order_by(o.c.id)
    )
    found: dict[tuple[str, str], datetime] = {}
    for event_id, headers_text in copies:
        try:
            headers = json.loads(headers_text or "{}")
        except ValueError:
            continue
        job, due = headers.get("x-job"), aware_moment(headers.get("x-not-before"))
        if isinstance(job, str) and due is not None and due > now:
            found[(job, event_id)] = due
    return found


def parked_keys(conn: Connection, mask: Callable[[str], str]) -> list[dict[str, Any]]:
    """The parked keys, oldest park first, with the pending rows each one holds."""
    return [
        {
            "key": p.key,
            "parked_at": p.parked_at,
            "actor": p.actor,
            "reason": mask(p.reason or ""),
            "pending": p.pending,
        }
        for p in parked_views(conn)[:PARKED_SHOWN]
    ]
