"""What is stuck and why: read-only examinations of the outbox for `outbox coroner`.

Every query reads pending, dead and parked rows through the status index, never the
published bulk, so the examination stays fast on a table of millions of published rows.
Payloads are never read (they may hold personal data), only their size when asked about
one message.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from outbox.scheduler_state import last_scheduled_slot, leader_state
from outbox.schema import OutboxStatus, ReplayStatus
from outbox.schema import outbox_table as o
from outbox.schema import parked_keys_table as parked
from outbox.schema import replays_table as replays
from outbox.shards import LeaseView, StalledRelay, age, lease_views, stalled_relays
from outbox.stats import FailedJobGroup, backlog, failed_job_groups

__all__ = [
    "Blocker",
    "ErrorGroup",
    "Examination",
    "KeyStory",
    "LeaseView",
    "MessageStory",
    "ParkedView",
    "RecentRow",
    "RunningReplay",
    "SchedulerDown",
    "StalledRelay",
    "TopicGroup",
    "examine",
    "key_story",
    "lease_views",
    "message_story",
]

ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class ParkedView:
    key: str
    parked_at: datetime
    actor: str
    reason: str | None
    pending: int


@dataclass(frozen=True, slots=True)
class TopicGroup:
    """Old, failing, dead or parked rows of one topic and status."""

    topic: str
    status: str
    count: int
    first_id: int


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """Rows sharing one last error (cut to ERROR_CHARS)."""

    error: str
    status: str
    count: int
    first_id: int
    last_id: int


@dataclass(frozen=True, slots=True)
class RunningReplay:
    id: str
    created_at: datetime
    age_s: float | None
    actor: str
    rows: int


@dataclass(frozen=True, slots=True)
class SchedulerDown:
    """Scheduled slots fired before, and no instance holds the scheduler lease now."""

    last_slot: datetime
    last_slot_age_s: float | None
    lease_expired_at: datetime | None


@dataclass(slots=True)
class Examination:
    now: datetime
    older_than_s: float
    by_status: dict[str, int]
    oldest_pending_age_s: float
    # Pending rows created before now - older_than; pending rows that failed at least once.
    old_pending: int = 0
    failing: int = 0
    dead: int = 0
    by_topic: list[TopicGroup] = field(default_factory=list)
    by_error: list[ErrorGroup] = field(default_factory=list)
    leases: list[LeaseView] = field(default_factory=list)
    parked: list[ParkedView] = field(default_factory=list)
    # Shards with pending rows that no live relay holds.
    orphan_shards: list[int] = field(default_factory=list)
    # Live relays that hold shards with due rows and made no progress for RELAY_STALL_S.
    stalled_relays: list[StalledRelay] = field(default_factory=list)
    # Replays still `running`: being written, or abandoned by a dead process (then they
    # hold prune back until `outbox replays close ID`). Shown, not an alarm.
    running_replays: list[RunningReplay] = field(default_factory=list)
    # The scheduler has fired slots before and no instance holds its lease now: the periodic
    # jobs (stale orders, reminders, ...) have stopped. None when it leads or never ran.
    scheduler_down: SchedulerDown | None = None
    failed_jobs: list[FailedJobGroup] = field(default_factory=list)

    @property
    def stuck(self) -> bool:
        """Old or failing pending rows, pending rows nobody publishes (no live holder, or a
        holder that gets nowhere), or a scheduler that stopped leading: a monitor alarm."""
        return bool(
            self.old_pending
            or self.failing
            or self.orphan_shards
            or self.stalled_relays
            or self.scheduler_down
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stuck"] = self.stuck
        return data


def examine(
    conn: Connection,
    now: datetime,
    *,
    older_than: timedelta,
    lease_ttl_s: float,
    top: int = 10,
    stall_s: float = 60.0,
) -> Examination:
    """The whole outbox: backlog, what is old, failing or dead, and who holds each shard."""
    figures = backlog(conn, now)
    cutoff = now - older_than
    pending = o.c.status == OutboxStatus.PENDING
    found = Examination(
        now=now,
        older_than_s=older_than.total_seconds(),
        by_status=figures.by_status,
        oldest_pending_age_s=round(figures.oldest_pending_age_s, 3),
        dead=figures.by_status.get(OutboxStatus.DEAD, 0),
    )
    found.old_pending = int(
        conn.execute(select(func.count()).where(pending, o.c.created_at < cutoff)).scalar_one()
    )
    found.failing = int(
        conn.execute(select(func.count()).where(pending, o.c.attempts > 0)).scalar_one()
    )
    trouble = or_(
        and_(pending, or_(o.c.created_at < cutoff, o.c.attempts > 0)),
        o.c.status.in_([OutboxStatus.DEAD, OutboxStatus.PARKED]),
    )
    found.by_topic = [
        TopicGroup(topic, status, int(count), int(first))
        for topic, status, count, first in conn.execute(
            select(o.c.topic, o.c.status, func.count(), func.min(o.c.id))
            .where(trouble)
            .group_by(o.c.topic, o.c.status)
            .order_by(func.count().desc())
            .limit(top * 5)
        )
    ]
    errors = conn.execute(
        select(o.c.last_error, o.c.status, func.count(), func.min(o.c.id), func.max(o.c.id))
        .where(trouble, o.c.last_error.is_not(None))
        .group_by(o.c.last_error, o.c.status)
        .order_by(func.count().desc())
        .limit(top)
    )
    found.by_error = [
        ErrorGroup((error or "")[:ERROR_CHARS], status, int(count), int(first), int(last))
        for error, status, count, first, last in errors
    ]
    found.leases = lease_views(conn, now, lease_ttl_s)
    found.orphan_shards = [
        v.shard for v in found.leases if v.pending and not (v.held and v.owner_alive)
    ]
    found.stalled_relays = stalled_relays(conn, now, found.leases, stall_s)
    found.parked = parked_views(conn)
    found.running_replays = [
        # r[3]: Row.count is the tuple method.
        RunningReplay(r.id, r.created_at, age(now, r.created_at), r.actor, int(r[3]))
        for r in conn.execute(
            select(replays.c.id, replays.c.created_at, replays.c.actor, replays.c.count)
            .where(replays.c.status == ReplayStatus.RUNNING)
            .order_by(replays.c.created_at)
        )
    ]
    found.scheduler_down = scheduler_down(conn, now)
    found.failed_jobs = failed_job_groups(conn, top * 5)
    return found


def scheduler_down(conn: Connection, now: datetime) -> SchedulerDown | None:
    """The last slot and lease expiry when scheduled firings exist but nobody leads now."""
    last_slot = last_scheduled_slot(conn)
    if last_slot is None:
        return None
    lease = leader_state(conn)
    if lease is not None and lease.alive(now):
        return None
    return SchedulerDown(
        last_slot, age(now, last_slot), None if lease is None else lease.expires_at
    )


def parked_views(conn: Connection) -> list[ParkedView]:
    held = (
        select(func.count())
        .where(o.c.key == parked.c.key, o.c.status == OutboxStatus.PENDING)
        .scalar_subquery()
    )
    return [
        ParkedView(row.key, row.parked_at, row.actor, row.reason, int(row.pending))
        for row in conn.execute(select(parked, held.label("pending")).order_by(parked.c.parked_at))
    ]


@dataclass(frozen=True, slots=True)
class Blocker:
    """The earliest unpublished row of the same key before a message: it holds it back."""

    id: int
    status: str
    attempts: int
    last_error: str | None
    available_at: datetime


@dataclass(frozen=True, slots=True)
class MessageStory:
    id: int
    event_id: str
    topic: str
    key: str
    shard: int
    type: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    available_at: datetime
    published_at: datetime | None
    kafka_partition: int | None
    kafka_offset: int | None
    payload_bytes: int
    replay_of: int | None
    replay_id: str | None
    key_parked: bool
    # The earliest unpublished row of the same key before this one (it holds this one back).
    blocked_by: Blocker | None
    lease: LeaseView | None
    payload: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_STORY_COLUMNS = (
    o.c.id,
    o.c.event_id,
    o.c.topic,
    o.c.key,
    o.c.shard,
    o.c.type,
    o.c.status,
    o.c.attempts,
    o.c.last_error,
    o.c.created_at,
    o.c.available_at,
    o.c.published_at,
    o.c.kafka_partition,
    o.c.kafka_offset,
    func.length(o.c.payload).label("payload_bytes"),
    o.c.replay_of,
    o.c.replay_id,
)


def message_story(
    conn: Connection, outbox_id: int, now: datetime, *, lease_ttl_s: float, payload: bool = False
) -> MessageStory | None:
    row = conn.execute(select(*_STORY_COLUMNS).where(o.c.id == outbox_id)).first()
    if row is None:
        return None
    blocker = None
    if row.status == OutboxStatus.PENDING:
        head = conn.execute(
            select(o.c.id, o.c.status, o.c.attempts, o.c.last_error, o.c.available_at)
            .where(
                o.c.key == row.key,
                o.c.id < outbox_id,
                o.c.status.in_([OutboxStatus.PENDING, OutboxStatus.PARKED]),
            )
            .order_by(o.c.id)
            .limit(1)
        ).first()
        if head is not None:
            blocker = Blocker(
                head.id,
                head.status,
                head.attempts,
                (head.last_error or "")[:ERROR_CHARS] or None,
                head.available_at,
            )
    is_parked = conn.execute(select(parked.c.key).where(parked.c.key == row.key)).first()
    lease = next((v for v in lease_views(conn, now, lease_ttl_s) if v.shard == row.shard), None)
    body = None
    if payload:
        body = conn.execute(select(o.c.payload).where(o.c.id == outbox_id)).scalar_one()
    return MessageStory(
        **{k: v for k, v in row._mapping.items() if k != "payload_bytes"},
        payload_bytes=int(row.payload_bytes or 0),
        key_parked=is_parked is not None,
        blocked_by=blocker,
        lease=lease,
        payload=body,
    )


@dataclass(frozen=True, slots=True)
class RecentRow:
    """One of a key's recent rows, as `coroner --key` lists them."""

    id: int
    type: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    kafka_partition: int | None
    kafka_offset: int | None
    replay_id: str | None


@dataclass(frozen=True, slots=True)
class KeyStory:
    key: str
    parked: ParkedView | None
    by_status: dict[str, int]
    # The first pending row: the one every later row of the key waits for.
    head: MessageStory | None
    recent: list[RecentRow]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def key_story(
    conn: Connection, key: str, now: datetime, *, lease_ttl_s: float, limit: int = 20
) -> KeyStory:
    counts = dict.fromkeys([s.value for s in OutboxStatus], 0)
    for status, count in conn.execute(
        select(o.c.status, func.count()).where(o.c.key == key).group_by(o.c.status)
    ):
        counts[status] = int(count)
    head_id = conn.execute(
        select(func.min(o.c.id)).where(o.c.key == key, o.c.status == OutboxStatus.PENDING)
    ).scalar()
    head = message_story(conn, int(head_id), now, lease_ttl_s=lease_ttl_s) if head_id else None
    recent = [
        RecentRow(
            r.id,
            r.type,
            r.status,
            r.attempts,
            (r.last_error or "")[:ERROR_CHARS] or None,
            r.created_at,
            r.kafka_partition,
            r.kafka_offset,
            r.replay_id,
        )
        for r in conn.execute(
            select(*_STORY_COLUMNS).where(o.c.key == key).order_by(o.c.id.desc()).limit(limit)
        )
    ]
    found = next((p for p in parked_views(conn) if p.key == key), None)
    return KeyStory(key, found, counts, head, list(reversed(recent)))
