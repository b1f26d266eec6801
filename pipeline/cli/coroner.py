"""`outbox coroner`: what is stuck and why; exit 1 when something is (a monitor's alarm)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table
from rich.text import Text

from infra.logs import redact_text, redact_value
from pipeline.cli.clikit import (
    EXIT_FAILED,
    ID,
    KEY,
    CliExit,
    dump_json,
    engine_for,
    guarded,
    json_option,
    out,
    settings,
)
from pipeline.cli.opskit import parse_duration, refuse

if TYPE_CHECKING:
    from outbox.coroner import Examination, KeyStory, MessageStory
    from pipeline.cli.group_health import GroupsReport

__all__ = ["coroner"]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


@click.command("coroner")
@click.option(
    "--older-than",
    default="5m",
    show_default=True,
    help="Pending rows older than this are stuck (90s, 15m, 2h...).",
)
@click.option("--message", "message_id", type=ID, default=None, help="One message's story.")
@click.option("--key", type=KEY, default=None, help="One key's story.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--payload", is_flag=True, help="With --message: print the payload too.")
@click.option("--no-kafka", is_flag=True, help="Do not ask the broker about consumer groups.")
@json_option
@guarded
def coroner(  # noqa: PLR0917 - click passes each option positionally
    older_than: str,
    message_id: int | None,
    key: str | None,
    limit: int,
    payload: bool,
    no_kafka: bool,
    as_json: bool,
) -> None:
    """What is stuck and why. Exits 1 when something is stuck (old or failing pending
    rows, pending rows no live relay holds, a relay that holds shards with due rows and
    made no progress for RELAY_STALL_S, a scheduler nobody leads, a consumer group
    behind whose offsets stopped moving, or with no members, or not Stable; an unreachable
    broker), 0 otherwise: a monitor can call it."""
    from outbox.coroner import examine, key_story, message_story
    from outbox.types import utcnow

    if message_id is not None and key is not None:
        raise refuse("--message and --key: give one of them")
    if payload and message_id is None:
        raise refuse("--payload goes with --message")
    threshold = parse_duration("--older-than", older_than)
    loaded = settings()
    now = utcnow()
    ttl = loaded.relay_lease_ttl_s
    with engine_for(loaded).connect() as conn:
        if message_id is not None:
            story = message_story(conn, message_id, now, lease_ttl_s=ttl, payload=payload)
            if story is None:
                raise refuse(f"--message: no outbox message with id {message_id}")
            _show(as_json, story.as_dict(), lambda: _print_message(story))
            return
        if key is not None:
            kstory = key_story(conn, key, now, lease_ttl_s=ttl, limit=limit)
            if not any(kstory.by_status.values()) and kstory.parked is None:
                raise refuse(f"--key: no outbox message has key {key!r}")
            _show(as_json, kstory.as_dict(), lambda: _print_key(kstory))
            return
        found = examine(
            conn,
            now,
            older_than=threshold,
            lease_ttl_s=ttl,
            top=limit,
            stall_s=loaded.relay_stall_s,
        )
    groups = None if no_kafka else _groups(loaded, threshold.total_seconds(), now.timestamp())
    data = found.as_dict()
    if groups is not None:
        data["consumer_groups"] = groups.as_dict()

    def pretty() -> None:
        _print_examination(found)
        _print_failed_jobs(found)
        if groups is not None:
            _print_groups(groups)

    _show(as_json, data, pretty)
    stuck_groups = groups if groups is not None and (groups.stuck or groups.broker_error) else None
    if found.stuck or stuck_groups is not None:
        raise CliExit(
            EXIT_FAILED,
            f"stuck: {found.old_pending} pending older than {older_than}, "
            f"{found.failing} failing, shards without a live relay: "
            f"{found.orphan_shards or 'none'}"
            + "".join(f"; {r.describe()}" for r in found.stalled_relays)
            + (f"; consumer groups: {_group_summary(stuck_groups)}" if stuck_groups else ""),
        )


def _groups(loaded: Any, older_than_s: float, now: float) -> GroupsReport:
    """Our consumer groups as the broker sees them (an unreachable broker is a finding)."""
    from consumers import GROUPS
    from pipeline.cli.group_health import GroupsReport, examine_groups
    from pipeline.kafka_admin import admin_client
    from pipeline.wiring import group_topics, load_job_modules

    load_job_modules(loaded)
    bootstrap = loaded.kafka_bootstrap_servers
    try:
        admin = admin_client(bootstrap)
    except Exception as exc:
        return GroupsReport(broker_error=str(exc))
    try:
        return examine_groups(
            admin, bootstrap, GROUPS, group_topics, older_than_s=older_than_s, now=now
        )
    except Exception as exc:
        return GroupsReport(broker_error=f"{type(exc).__name__}: {exc}")
    finally:
        admin.close()


def _group_summary(groups: GroupsReport) -> str:
    if groups.broker_error:
        return f"broker unreachable ({groups.broker_error[:200]})"
    return "; ".join(f"{g.group}: {', '.join(g.why)}" for g in groups.stuck)


def _print_groups(groups: GroupsReport) -> None:
    if groups.broker_error:
        out.print(Text(f"consumer groups: broker unreachable: {groups.broker_error}", "red"))
        return
    table = Table("group", "state", "members", "lag", "offsets unmoved", "stuck because",
                  title="consumer groups")  # fmt: skip
    for g in groups.groups:
        table.add_row(
            _text(g.group),
            g.state,
            str(g.members),
            str(g.lag),
            _age(g.unmoved_s),
            Text("; ".join(g.why), style="red") if g.why else "-",
        )
    out.print(table)


def _print_failed_jobs(d: Examination) -> None:
    if d.failed_jobs:
        table = Table("group", "reason", "failed jobs", "last failed",
                      title="failed jobs (outbox failed list --group G)")  # fmt: skip
        for j in d.failed_jobs:
            table.add_row(_text(j.group), j.reason, str(j.count), j.last_failed_at.isoformat())
        out.print(table)


def _show(as_json: bool, data: dict[str, Any], pretty: Callable[[], None]) -> None:
    """JSON or the screen. Errors and reasons may quote personal data: masked as in the logs
    (a payload, printed only with --payload, is left as stored)."""
    if as_json:
        body = data.pop("payload", None)
        dump_json({**redact_value(data), **({"payload": body} if body is not None else {})})
    else:
        pretty()


def _text(value: object) -> Text:
    """A cell as plain text: operator-supplied and stored text is never read as markup."""
    return Text("" if value is None else redact_text(str(value)))


def _print_examination(d: Examination) -> None:
    counts = ", ".join(f"{s} {n}" for s, n in d.by_status.items())
    out.print(f"[bold]backlog[/bold]: {counts}; oldest pending {_age(d.oldest_pending_age_s)}")
    out.print(
        f"pending older than {_age(d.older_than_s)}: [bold]{d.old_pending}[/bold]; "
        f"failing (attempts > 0): [bold]{d.failing}[/bold]; dead: [bold]{d.dead}[/bold]"
    )
    if d.by_topic:
        table = Table("topic", "status", "rows", "first id", title="old, failing, dead by topic")
        for g in d.by_topic:
            table.add_row(_text(g.topic), g.status, str(g.count), str(g.first_id))
        out.print(table)
    if d.by_error:
        table = Table("last error", "status", "rows", "ids", title="by last error")
        for e in d.by_error:
            table.add_row(_text(e.error), e.status, str(e.count), f"{e.first_id}..{e.last_id}")
        out.print(table)
    if d.parked:
        table = Table("parked key", "since", "by", "reason", "held rows", title="parked keys")
        for p in d.parked:
            table.add_row(
                _text(p.key), str(p.parked_at), _text(p.actor), _text(p.reason), str(p.pending)
            )
        out.print(table)
    table = Table(
        "shard", "holder", "epoch", "expires", "heartbeat", "alive", "pending", title="shards"
    )
    for lease in d.leases:
        if not lease.owner and not lease.pending:
            continue
        table.add_row(
            str(lease.shard),
            _text(lease.owner) if lease.owner else Text("none", style="red"),
            str(lease.epoch),
            str(lease.expires_at or "-"),
            _age(lease.heartbeat_age_s),
            "yes" if lease.owner_alive else Text("no", style="red"),
            str(lease.pending),
        )
    out.print(table)
    for stalled in d.stalled_relays:
        out.print(
            Text.assemble(
                ("stalled: ", "red"),
                redact_text(stalled.describe()),
                " (it frees them for another relay after RELAY_STALL_S; check its broker "
                "connection and log)",
            )
        )
    if d.running_replays:
        table = Table(
            "replay", "started", "by", "rows so far",
            title="replays still running (a dead one holds prune back: `outbox replays close`)",
        )  # fmt: skip
        for r in d.running_replays:
            table.add_row(r.id, _age(r.age_s) + " ago", _text(r.actor), str(r.rows))
        out.print(table)
    if d.scheduler_down is not None:
        out.print(
            "[red]scheduler: no instance holds the lease[/red]; the last scheduled slot was "
            f"{_age(d.scheduler_down.last_slot_age_s)} ago: periodic jobs are not firing "
            "(start `outbox scheduler`)"
        )
    out.print("[red]STUCK[/red]" if d.stuck else "[green]nothing stuck[/green]")


_MESSAGE_FIELDS = (
    "event_id", "topic", "key", "shard", "type", "status", "attempts", "last_error",
    "created_at", "available_at", "published_at", "kafka_partition", "kafka_offset",
    "payload_bytes", "replay_of", "replay_id", "key_parked",
)  # fmt: skip


def _print_message(m: MessageStory) -> None:
    table = Table("field", "value", title=f"outbox message {m.id}", show_header=False)
    for name in _MESSAGE_FIELDS:
        table.add_row(name, _text(getattr(m, name)))
    b = m.blocked_by
    table.add_row(
        "blocked by",
        "nothing"
        if b is None
        else _text(
            f"message {b.id} ({b.status}, {b.attempts} attempts, next {b.available_at}): "
            f"{b.last_error}"
        ),
    )
    lease = m.lease
    table.add_row(
        "shard holder",
        "none"
        if lease is None or not lease.owner
        else _text(
            f"{lease.owner} until {lease.expires_at} (heartbeat "
            f"{_age(lease.heartbeat_age_s)} ago, alive: {lease.owner_alive})"
        ),
    )
    out.print(table)
    if m.payload is not None:
        out.print(m.payload, highlight=False, markup=False)


def _print_key(k: KeyStory) -> None:
    counts = ", ".join(f"{s} {n}" for s, n in k.by_status.items())
    out.print(Text.assemble("key ", (k.key, "bold"), f": {counts}"))
    if k.parked is not None:
        p = k.parked
        out.print(
            Text.assemble(("parked", "yellow"), f" since {p.parked_at} by ", _text(p.actor),
                          ": ", _text(p.reason))
        )  # fmt: skip
    if k.head is not None:
        _print_message(k.head)
    table = Table("id", "type", "status", "attempts", "error", "created", "partition", "offset")
    for r in k.recent:
        table.add_row(
            str(r.id), _text(r.type), r.status, str(r.attempts), _text(r.last_error),
            str(r.created_at), str(r.kafka_partition or ""), str(r.kafka_offset or ""),
        )  # fmt: skip
    out.print(table)
