"""One screen's worth of database figures for `outbox status`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from outbox.schema import OutboxStatus
from outbox.schema import failed_jobs_table as failed
from outbox.schema import outbox_table as o
from outbox.schema import parked_keys_table as parked
from outbox.schema import relay_instances_table as instances
from outbox.schema import relay_leases_table as leases

__all__ = ["Overview", "overview"]


@dataclass(slots=True)
class Overview:
    now: datetime
    by_status: dict[str, int]
    # topic -> status -> rows
    by_topic: dict[str, dict[str, int]]
    oldest_pending_age_s: float
    published_last_minute: int
    # instance -> {"heartbeat_age_s", "alive", "shards"}
    relays: dict[str, dict[str, Any]] = field(default_factory=dict)
    parked_keys: int = 0
    failed_jobs: int = 0

    @property
    def publish_rate_per_s(self) -> float:
        return round(self.published_last_minute / 60, 2)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "publish_rate_per_s": self.publish_rate_per_s}


def overview(conn: Connection, now: datetime, *, lease_ttl_s: float) -> Overview:
    by_status = dict.fromkeys([s.value for s in OutboxStatus], 0)
    by_topic: dict[str, dict[str, int]] = {}
    for topic, status, count in conn.execute(
        select(o.c.topic, o.c.status, func.count()).group_by(o.c.topic, o.c.status)
    ):
        by_topic.setdefault(topic, {})[status] = int(count)
        by_status[status] = by_status.get(status, 0) + int(count)
    oldest = conn.execute(
        select(func.min(o.c.created_at)).where(o.c.status == OutboxStatus.PENDING)
    ).scalar()
    minute = conn.execute(
        select(func.count()).where(
            o.c.status == OutboxStatus.PUBLISHED, o.c.published_at >= now - timedelta(minutes=1)
        )
    ).scalar_one()
    view = Overview(
        now=now,
        by_status=by_status,
        by_topic=dict(sorted(by_topic.items())),
        oldest_pending_age_s=round((now - oldest).total_seconds(), 3) if oldest else 0.0,
        published_last_minute=int(minute),
    )
    for instance_id, heartbeat in conn.execute(
        select(instances.c.instance_id, instances.c.heartbeat_at).order_by(instances.c.instance_id)
    ):
        age = (now - heartbeat).total_seconds()
        view.relays[instance_id] = {
            "heartbeat_age_s": round(age, 3),
            "alive": age < lease_ttl_s,
            "shards": [],
        }
    for shard, owner in conn.execute(
        select(leases.c.shard, leases.c.owner)
        .where(leases.c.owner.is_not(None), leases.c.expires_at > now)
        .order_by(leases.c.shard)
    ):
        view.relays.setdefault(owner, {"heartbeat_age_s": None, "alive": False, "shards": []})
        view.relays[owner]["shards"].append(shard)
    view.parked_keys = int(conn.execute(select(func.count()).select_from(parked)).scalar_one())
    view.failed_jobs = int(conn.execute(select(func.count()).select_from(failed)).scalar_one())
    return view
