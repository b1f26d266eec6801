"""prune-outbox, the scheduled retention run, through a real relay, worker and broker."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, update

from consumers import JobConfig, jobs
from consumers.scheduled import ScheduledJobDue
from domain.events import registry
from outbox import outbox_table
from outbox.schema import audit_log_table
from outbox.types import utcnow
from pipeline.broker import EmbeddedBroker
from tests.consumer_harness import Harness, harness, new_group, ping, wait_for

DAY = timedelta(days=1)


def _age(h: Harness, event_id: str, status: str, created: datetime, **extra: object) -> None:
    o = outbox_table
    published = created if status == "published" else None
    h.in_transaction(
        lambda c: c.execute(
            update(o)
            .where(o.c.event_id == event_id)
            .values(status=status, created_at=created, published_at=published, **extra)
        )
    )


def _left(engine: Engine, ids: dict[str, str]) -> set[str]:
    with engine.connect() as conn:
        present = set(conn.execute(select(outbox_table.c.event_id)).scalars())
    return {name for name, event_id in ids.items() if event_id in present}


def test_prune_outbox_deletes_old_published_rows_only_and_a_second_run_is_harmless(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    """Retention 1 day, dedup window 3 days: the window wins, so a row published 2 days ago
    stays; pending, dead and recent rows stay too."""
    group = new_group(kafka.bootstrap_servers, ("prune-outbox",))
    topic = group.topics[0]
    now = utcnow()
    ids = {name: str(uuid.uuid4()) for name in ("old", "in_window", "recent", "pending", "dead")}
    config = JobConfig(prune_retention_s=int(DAY.total_seconds()), dedup_window_s=3 * 86400)
    with harness(
        engine, kafka.bootstrap_servers, group, jobs, events=registry, job_config=config
    ) as h:
        h.write([ping(topic, n, event_id=e, key=name) for n, (name, e) in enumerate(ids.items())])
        _age(h, ids["old"], "published", now - 10 * DAY)
        _age(h, ids["in_window"], "published", now - 2 * DAY)
        _age(h, ids["recent"], "published", now - timedelta(hours=1))
        _age(h, ids["pending"], "pending", now - 10 * DAY, available_at=now + DAY)
        _age(h, ids["dead"], "dead", now - 10 * DAY)
        h.start_relay()
        worker = h.start_worker()
        for run in (1, 2):
            due = ScheduledJobDue(job="prune-outbox", slot=utcnow())
            h.in_transaction(lambda c, due=due: h.dispatcher.dispatch(c, "prune-outbox", due))
            wait_for(lambda run=run: worker.stats.processed == run, what=f"prune run {run}")
            assert _left(engine, ids) == {"in_window", "recent", "pending", "dead"}
    with engine.connect() as conn:
        audits = conn.execute(select(audit_log_table).order_by(audit_log_table.c.id)).all()
    assert [(a.actor, a.action, a.target) for a in audits] == [("scheduler", "prune", "outbox")] * 2
    first, second = (json.loads(a.details) for a in audits)
    assert first["outbox_rows"] == 1 and second["outbox_rows"] == 0
    assert first["retention_extended_to_dedup_window"] is True
