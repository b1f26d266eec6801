"""`outbox consumers lag|rewind`: Kafka consumer groups, their lag, and offset rewinds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from rich.table import Table
from sqlalchemy import Connection, func, select

from pipeline.cli.clikit import (
    ID,
    NAME,
    dump_json,
    engine_for,
    guarded,
    json_option,
    out,
    settings,
    yes_option,
)
from pipeline.cli.opskit import acted_options, actor_of, check_topics, confirm, parse_when, refuse
from pipeline.cli.status import groups_table

if TYPE_CHECKING:
    from pipeline.kafka_admin import RewindPlan

__all__ = ["consumers"]


@click.group("consumers")
def consumers() -> None:
    """Kafka consumer groups: lag, protocol and members, offset rewinds."""


@consumers.command("lag")
@click.option("--group", "groups", type=NAME, multiple=True, help="Only this group (repeatable).")
@json_option
@guarded
def consumers_lag(groups: tuple[str, ...], as_json: bool) -> None:
    """Each group's state, members and lag per partition."""
    from pipeline.kafka_admin import admin_client, consumer_groups
    from pipeline.wiring import group_topics, load_job_modules

    loaded = settings()
    load_job_modules(loaded)
    admin = admin_client(loaded.kafka_bootstrap_servers)
    try:
        views = [
            g.as_dict() for g in consumer_groups(admin, groups or None, topics_of=group_topics)
        ]
    finally:
        admin.close()
    if as_json:
        dump_json(views)
    else:
        out.print(groups_table(views))


@consumers.command("status")
@click.option("--group", "groups", type=NAME, multiple=True, help="Only this group (repeatable).")
@json_option
@guarded
def consumers_status(groups: tuple[str, ...], as_json: bool) -> None:
    """Each group's protocol, state, members and static members.

    The protocol as the broker reports it: classic with its assignor (cooperative-sticky
    for KAFKA_CLIENT=confluent, range for kafka-python) or KIP-848's consumer protocol;
    static members by their group.instance.id (ADR 019)."""
    from pipeline.kafka_admin import admin_client, group_membership

    loaded = settings()
    admin = admin_client(loaded.kafka_bootstrap_servers)
    try:
        names = list(groups) or sorted(g["group_id"] for g in admin.list_groups())
        views = [group_membership(admin, name) for name in names]
    finally:
        admin.close()
    if as_json:
        dump_json(views)
        return
    table = Table("group", "protocol", "state", "members", "static members", title="groups")
    for v in views:
        static = ", ".join(v["static_members"]) or "-"
        table.add_row(v["group"], v["protocol"], v["state"], str(v["members"]), static)
    out.print(table)


@consumers.command("rewind")
@click.option("--group", type=NAME, required=True, help="The (stopped) consumer group.")
@click.option("--to-time", default=None, help="First record at or after (ISO time, or 2h ago).")
@click.option(
    "--to-outbox-id",
    type=ID,
    default=None,
    help="The recorded partition/offset of the first outbox row at or after this id.",
)
@click.option(
    "--topic", "topics", type=NAME, multiple=True, help="Only this topic (default: the group's)."
)
@click.option("--dry-run", is_flag=True, help="Print the new offsets; change nothing.")
@yes_option
@acted_options
@guarded
def consumers_rewind(  # noqa: PLR0917 - click passes each option positionally
    group: str,
    to_time: str | None,
    to_outbox_id: int | None,
    topics: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    actor: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Move a stopped group's committed offsets back so it consumes again from a point.
    Refuses while the group has active members; never moves an offset forward."""
    from outbox.audit import record
    from outbox.types import utcnow
    from pipeline.kafka_admin import admin_client, apply_rewind, plan_rewind

    if (to_time is None) == (to_outbox_id is None):
        raise refuse("give exactly one of --to-time and --to-outbox-id")
    now = utcnow()
    when = parse_when("--to-time", to_time, now) if to_time else None
    if when is not None and when > now:
        raise refuse(f"--to-time: {to_time!r} is in the future")
    loaded = settings()
    engine = engine_for(loaded)
    with engine.connect() as conn:
        check_topics(conn, topics)
        offsets = _outbox_offsets(conn, to_outbox_id, topics) if to_outbox_id else None
    admin = admin_client(loaded.kafka_bootstrap_servers)
    try:
        plan = plan_rewind(admin, group, topics=topics, to_time=when, outbox_offsets=offsets)
        if not plan.moves and not plan.unchanged:
            raise refuse(f"--group: {group!r} has no committed offsets; name its --topic")
        if as_json and dry_run:
            dump_json({"dry_run": True, **plan.as_dict()})
            return
        if not as_json:
            _print_rewind(plan)
        if dry_run:
            return
        confirm(yes, f"Rewind {len(plan.moves)} partition(s) of group {group!r}?")
        apply_rewind(admin, plan)
    finally:
        admin.close()
    with engine.begin() as conn:
        record(conn, at=utcnow(), actor=actor_of(actor), action="rewind", target=f"group:{group}",
               reason=reason, details={"to_time": to_time, "to_outbox_id": to_outbox_id,
                                       **plan.as_dict()})  # fmt: skip
    if as_json:
        dump_json(plan.as_dict())
    else:
        out.print(f"rewound {len(plan.moves)} partition(s) of {group}")


def _outbox_offsets(conn: Connection, first_id: int, topics: tuple[str, ...]) -> dict[Any, int]:
    """(topic, partition) -> the recorded offset of the first published row at/after an id."""
    from outbox import OutboxStatus, outbox_table

    o = outbox_table
    query = (
        select(o.c.topic, o.c.kafka_partition, func.min(o.c.kafka_offset))
        .where(o.c.id >= first_id, o.c.status == OutboxStatus.PUBLISHED)
        .group_by(o.c.topic, o.c.kafka_partition)
    )
    if topics:
        query = query.where(o.c.topic.in_(topics))
    offsets = {(t, int(p)): int(off) for t, p, off in conn.execute(query)}
    if not offsets:
        raise refuse(f"--to-outbox-id: no published outbox row at or after {first_id}")
    return offsets


def _print_rewind(plan: RewindPlan) -> None:
    table = Table("topic", "partition", "committed", "new offset", title=f"rewind {plan.group}")
    for (t, p), (old, new) in sorted(plan.moves.items()):
        table.add_row(t, str(p), str(old), str(new))
    for (t, p), why in sorted(plan.unchanged.items()):
        table.add_row(t, str(p), "", f"unchanged: {why}")
    out.print(table)
