"""Workers say what they run now (worker_heartbeats, the dashboard's "running now"): the job
and its message while it runs, its duration after, and no row once the worker stopped. A
database that fails a heartbeat write does not stop the worker."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select

from consumers import JobContext, JobRegistry, job
from consumers.heartbeat import Activity, HeartbeatWriter
from outbox.schema import worker_heartbeats_table as hb
from tests.consumer_harness import Pinged, bump, effects, harness, new_group, ping
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration


def _rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(hb)).all())


def test_a_running_job_shows_in_its_workers_heartbeat(postgres_db: Engine, kafka: Any) -> None:
    release = threading.Event()
    registry = JobRegistry()

    @job("slow", on=Pinged, registry=registry)
    def slow(event: Pinged, ctx: JobContext) -> None:
        if event.n == 1:
            release.wait(30)
        bump(ctx.connection, "beats", event.n)

    group = new_group(kafka.bootstrap_servers, ("slow",))
    with harness(postgres_db, kafka.bootstrap_servers, group, registry, heartbeat_s=0.2) as h:
        h.start_relay()
        h.start_worker()
        h.write([ping(group.topics[0], 1, event_id="00000000-0000-4000-8000-0000000000b1")])

        def running() -> bool:
            rows = _rows(postgres_db)
            return bool(rows) and rows[0].job_name == "slow"

        wait_for(running, 30, "the job in the heartbeat row")
        (row,) = _rows(postgres_db)
        assert row.group_name == group.name
        assert row.message_id == "00000000-0000-4000-8000-0000000000b1"
        assert row.message_key == "k-1" and row.job_started_at is not None
        release.set()
        wait_for(lambda: effects(postgres_db, "beats") == {1: 1}, 30, "the job done")
        wait_for(lambda: _rows(postgres_db)[0].job_name is None, 10, "the worker idle")
        recent = json.loads(_rows(postgres_db)[0].recent)
        assert recent[-1]["job"] == "slow" and recent[-1]["outcome"] == "processed"
        assert recent[-1]["duration_ms"] > 0
        assert _rows(postgres_db)[0].handled == 1
    assert _rows(postgres_db) == []  # removed when the worker stopped


def test_a_failing_heartbeat_write_is_retried_not_fatal(postgres_db: Engine) -> None:
    activity = Activity()
    writer = HeartbeatWriter(postgres_db, "g", activity, interval_s=0.05)
    writer.beat()
    assert len(_rows(postgres_db)) == 1
    with postgres_db.begin() as conn:  # someone removed it (a prune of stale rows, say)
        conn.execute(hb.delete())
    activity.begin("j", "m" * 500, "k", writer.started_at)  # bounded to the column sizes
    writer.beat()
    (row,) = _rows(postgres_db)
    assert row.job_name == "j" and len(row.message_id) == 80
    broken = HeartbeatWriter(
        create_engine("postgresql+psycopg://nobody@127.0.0.1:1/x"),
        "g", activity, interval_s=0.05,
    )  # fmt: skip
    broken.start()
    threading.Event().wait(0.3)
    assert broken._thread is not None and broken._thread.is_alive()
    broken.stop()
    writer.stop()
    assert _rows(postgres_db) == []
