"""prune-outbox, the scheduled retention run, dispatched through the outbox and run by
consumers.testing (the real attempt path, no broker)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, update

from consumers.messages import ScheduledJobDue
from consumers.testing import JobRunner
from jobs.config import AppConfig
from outbox import Envelope, append, outbox_table
from outbox.schema import audit_log_table
from outbox.types import utcnow

DAY = timedelta(days=1)


def _age(engine: Engine, event_id: str, status: str, created: datetime, **extra: object) -> None:
    o = outbox_table
    published = created if status == "published" else None
    with engine.begin() as conn:
        conn.execute(
            update(o)
            .where(o.c.event_id == event_id)
            .values(status=status, created_at=created, published_at=published, **extra)
        )


def _row(n: int, event_id: str, key: str) -> Envelope:
    return Envelope(
        event_id=event_id,
        topic="pruned-events",
        key=key,
        type="test.pinged",
        payload=json.dumps({"n": n}),
        occurred_at=utcnow(),
        headers={"schema_version": "1"},
    )


def _left(engine: Engine, ids: dict[str, str]) -> set[str]:
    with engine.connect() as conn:
        present = set(conn.execute(select(outbox_table.c.event_id)).scalars())
    return {name for name, event_id in ids.items() if event_id in present}


def test_prune_outbox_deletes_old_published_rows_only_and_a_second_run_is_harmless(
    engine: Engine,
) -> None:
    """Retention 1 day, dedup window 3 days: the window wins, so a row published 2 days ago
    stays; pending, dead and recent rows stay too."""
    now = utcnow()
    ids = {name: str(uuid.uuid4()) for name in ("old", "in_window", "recent", "pending", "dead")}
    config = AppConfig(prune_retention_s=int(DAY.total_seconds()), dedup_window_s=3 * 86400)
    with engine.begin() as conn:
        append(conn, [_row(n, e, name) for n, (name, e) in enumerate(ids.items())], shards=8)
    _age(engine, ids["old"], "published", now - 10 * DAY)
    _age(engine, ids["in_window"], "published", now - 2 * DAY)
    _age(engine, ids["recent"], "published", now - timedelta(hours=1))
    _age(engine, ids["pending"], "pending", now - 10 * DAY, available_at=now + DAY)
    _age(engine, ids["dead"], "dead", now - 10 * DAY)
    runner = JobRunner(engine, config=config)
    for _ in (1, 2):
        assert runner.dispatch("prune-outbox", ScheduledJobDue(job="prune-outbox", slot=utcnow()))
        assert [(r.job, r.outcome) for r in runner.drain("maintenance")] == [
            ("prune-outbox", "done")
        ]
        assert _left(engine, ids) == {"in_window", "recent", "pending", "dead"}
    with engine.connect() as conn:
        audits = conn.execute(select(audit_log_table).order_by(audit_log_table.c.id)).all()
    assert [(a.actor, a.action, a.target) for a in audits] == [("scheduler", "prune", "outbox")] * 2
    first, second = (json.loads(a.details) for a in audits)
    assert first["outbox_rows"] == 1 and second["outbox_rows"] == 0
    assert first["retention_extended_to_dedup_window"] is True
