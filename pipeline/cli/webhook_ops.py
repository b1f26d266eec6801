"""`outbox webhooks attempts|resend|recover`: what was tried, and sending again (ADR 021,
issue 25 item 4).

`attempts` lists the attempt log newest first (`--before ID` pages on: the last id
printed); `resend` puts one (event, endpoint) delivery back at the first try of its
schedule with the same webhook id; `recover` does so for every failed delivery of an
endpoint created since a time. Both are audited with the actor and the reason (required).
Bad input is one line and exit 2; nothing is changed then. No secret is printed: the
attempt log holds none, and a response excerpt is masked like the logs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.table import Table

from pipeline.cli.clikit import (
    ID,
    TextType,
    cell,
    dump_json,
    engine_for,
    guarded,
    json_option,
    out,
    settings,
)
from pipeline.cli.opskit import acted_options, actor_of, parse_when, refuse

__all__ = ["attempts", "recover", "resend"]

ENDPOINT = TextType(40)
EVENT = TextType(64)
_endpoint_option = click.option(
    "--endpoint", "endpoint_id", type=ENDPOINT, default=None, help="Endpoint id (ep_...)."
)


def _shown(text: str | None, most: int = 80) -> str:
    """A stored, receiver-written text on one line: control characters as escapes."""
    value = (text or "")[:most]
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in value)


def _since(value: str | None) -> datetime | None:
    from outbox.types import utcnow

    return parse_when("--since", value, utcnow()) if value else None


@click.command("attempts")
@_endpoint_option
@click.option("--event", "event_id", type=EVENT, default=None, help="Only this event id.")
@click.option("--failed", "failed_only", is_flag=True, help="Only attempts that did not deliver.")
@click.option("--since", default=None, help="Only attempts since (2h, 7d, or an ISO time).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--before", "before_id", type=ID, default=None, help="Older than this attempt id.")
@json_option
@guarded
def attempts(  # noqa: PLR0917 - click passes each option positionally
    endpoint_id: str | None,
    event_id: str | None,
    failed_only: bool,
    since: str | None,
    limit: int,
    before_id: int | None,
    as_json: bool,
) -> None:
    """The attempt log, newest first: endpoint, event, outcome, status, duration."""
    from infra.logs import redact_text
    from outbound.attempt_log import attempts as read_attempts

    start = _since(since)
    with engine_for(settings()).connect() as conn:
        rows = read_attempts(
            conn, endpoint_id=endpoint_id, event_id=event_id, failed_only=failed_only,
            since=start, limit=limit, before_id=before_id,
        )  # fmt: skip
    if as_json:
        dump_json([_attempt(r.as_dict(), redact_text) for r in rows])
        return
    table = Table("id", "at", "endpoint", "event", "#", "outcome", "status", "ms", "error/response")
    for r in rows:
        said = r.error or r.response_excerpt
        table.add_row(
            str(r.id), r.at.isoformat(), cell(r.endpoint_id), cell(r.event_id), str(r.attempt),
            r.outcome, str(r.status_code or "—"), str(r.duration_ms), cell(_shown(said)),
        )  # fmt: skip
    out.print(table)
    if len(rows) == limit:
        out.print(f"older: --before {rows[-1].id}", highlight=False)


def _attempt(row: dict[str, Any], mask: Any) -> dict[str, Any]:
    row["response_excerpt"] = mask(row["response_excerpt"]) if row["response_excerpt"] else None
    return row


def _reason(reason: str | None) -> str:
    if not reason or not reason.strip():
        raise refuse("--reason: say why (it goes to the audit log)")
    return reason.strip()


@click.command("resend")
@click.argument("event_id", type=EVENT)
@click.option("--endpoint", "endpoint_id", type=ENDPOINT, required=True, help="Endpoint id.")
@acted_options
@guarded
def resend(
    event_id: str, endpoint_id: str, actor: str | None, reason: str | None, as_json: bool
) -> None:
    """Send one event to one endpoint again, from the first try, with the same webhook id."""
    from outbound.recovery import resend as resend_one
    from outbox.types import utcnow

    why, who = _reason(reason), actor_of(actor)
    with engine_for(settings()).begin() as conn:
        done = resend_one(
            conn, event_id=event_id, endpoint_id=endpoint_id, actor=who, reason=why, now=utcnow()
        )
    if as_json:
        dump_json({"event_id": event_id, "endpoint_id": endpoint_id, "resent": done})
        return
    if done:
        out.print(cell(f"resend {event_id} to {endpoint_id}: pending, due now (by {who})"))
    else:
        out.print(cell(f"{event_id} to {endpoint_id} is being sent right now: nothing changed"))


@click.command("recover")
@click.option("--endpoint", "endpoint_id", type=ENDPOINT, required=True, help="Endpoint id.")
@click.option("--since", required=True, help="Failed deliveries created since (6h, 2d, ISO).")
@acted_options
@guarded
def recover(
    endpoint_id: str, since: str, actor: str | None, reason: str | None, as_json: bool
) -> None:
    """Send again every failed delivery of an endpoint created since a time; the count."""
    from outbound.recovery import recover as recover_all
    from outbox.types import utcnow

    why, who, start = _reason(reason), actor_of(actor), _since(since)
    assert start is not None  # noqa: S101 - --since is required
    with engine_for(settings()).begin() as conn:
        count = recover_all(
            conn, endpoint_id=endpoint_id, since=start, actor=who, reason=why, now=utcnow()
        )
    if as_json:
        dump_json({"endpoint_id": endpoint_id, "since": start, "recovered": count})
        return
    said = f"{count} failed delivery(ies) of {endpoint_id} since {start.isoformat()}: pending"
    out.print(cell(said + " again"))
