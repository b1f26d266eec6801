"""Who publishes each shard, and whether it gets anywhere: read-only views of the relay's
leases and instances for `outbox coroner` and the dashboard (the tooling never imports
the relay).

A relay writes its progress (`progress_at`: a batch with outcomes, or nothing due;
`last_published_at`) to its `relay_instances` row at every heartbeat. A live relay that
holds shards with due rows and made no progress for RELAY_STALL_S is stalled: it keeps
shards nobody else may publish (ADR 012).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, func, select

from outbox.schema import OutboxStatus
from outbox.schema import outbox_table as o
from outbox.schema import relay_instances_table as instances
from outbox.schema import relay_leases_table as leases

__all__ = ["LeaseView", "StalledRelay", "age", "lease_views", "stalled_relays"]


def age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 3)


@dataclass(frozen=True, slots=True)
class LeaseView:
    shard: int
    owner: str | None
    epoch: int
    expires_at: datetime | None
    held: bool  # owner set and not expired
    heartbeat_age_s: float | None  # None: the owner has no instance row (gone)
    owner_alive: bool
    pending: int
    due: int = 0  # pending rows whose time has come (available_at <= now)


@dataclass(frozen=True, slots=True)
class StalledRelay:
    """A live relay holding shards with due rows that made no progress for stall_s."""

    instance_id: str
    shards: list[int]
    due: int
    last_published_at: datetime | None
    last_published_age_s: float | None  # None: it never published
    no_progress_s: float | None

    def describe(self) -> str:
        """ "relay R holds 16 shards, last publish 3.0 min ago, 36,554 due"."""
        last = (
            "never published"
            if self.last_published_age_s is None
            else f"last publish {_minutes(self.last_published_age_s)} ago"
        )
        return f"relay {self.instance_id} holds {len(self.shards)} shards, {last}, {self.due:,} due"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def lease_views(conn: Connection, now: datetime, lease_ttl_s: float) -> list[LeaseView]:
    """Per shard: the holder, until when, its heartbeat age, whether it is alive, and its
    pending and due rows."""
    due_now = func.sum(case((o.c.available_at <= now, 1), else_=0))
    counts: dict[int, tuple[int, int]] = {
        int(shard): (int(count), int(due or 0))
        for shard, count, due in conn.execute(
            select(o.c.shard, func.count(), due_now)
            .where(o.c.status == OutboxStatus.PENDING)
            .group_by(o.c.shard)
        )
    }
    rows = conn.execute(
        select(leases, instances.c.heartbeat_at)
        .outerjoin(instances, instances.c.instance_id == leases.c.owner)
        .order_by(leases.c.shard)
    ).all()
    views = []
    seen = set()
    for row in rows:
        seen.add(row.shard)
        held = row.owner is not None and row.expires_at is not None and row.expires_at > now
        heartbeat_age = age(now, row.heartbeat_at)
        pending, due = counts.get(row.shard, (0, 0))
        views.append(
            LeaseView(
                shard=row.shard,
                owner=row.owner,
                epoch=int(row.epoch),
                expires_at=row.expires_at,
                held=held,
                heartbeat_age_s=heartbeat_age,
                owner_alive=heartbeat_age is not None and heartbeat_age < lease_ttl_s,
                pending=pending,
                due=due,
            )
        )
    for shard, (pending, due) in sorted(counts.items()):
        if shard not in seen:  # no relay ever started for this shard
            views.append(LeaseView(shard, None, 0, None, False, None, False, pending, due))
    return views


def stalled_relays(
    conn: Connection, now: datetime, views: list[LeaseView], stall_s: float
) -> list[StalledRelay]:
    """Live holders of shards with due rows whose last progress is older than `stall_s`."""
    by_owner: dict[str, list[LeaseView]] = {}
    for view in views:
        if view.owner is not None and view.held and view.owner_alive:
            by_owner.setdefault(view.owner, []).append(view)
    if not by_owner:
        return []
    cutoff = now - timedelta(seconds=stall_s)
    found = []
    for instance_id, started, progress_at, published_at in conn.execute(
        select(
            instances.c.instance_id,
            instances.c.started_at,
            instances.c.progress_at,
            instances.c.last_published_at,
        ).where(instances.c.instance_id.in_(sorted(by_owner)))
    ):
        held = by_owner[instance_id]
        due = sum(v.due for v in held)
        progress = progress_at or started
        if due and progress < cutoff:
            found.append(
                StalledRelay(
                    instance_id=instance_id,
                    shards=sorted(v.shard for v in held),
                    due=due,
                    last_published_at=published_at,
                    last_published_age_s=age(now, published_at),
                    no_progress_s=age(now, progress),
                )
            )
    return sorted(found, key=lambda r: r.instance_id)
