"""A relay and a worker running real jobs through the harness write rollups whose counts
match what happened: handled, failed for good, retried, published per topic, and a wait
and a run time for every attempt."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from consumers import JobContext, JobRegistry, job
from consumers.metrics import ConsumerMetrics
from infra.broker import EmbeddedBroker
from outbox.rollups import RollupFlusher, Rollups
from outbox.schema_rollups import rollups_table as t
from outbox.schema_rollups import run_columns, wait_columns
from relay import RelayMetrics
from tests.consumer_harness import (
    Pinged,
    bump,
    count_failed,
    harness,
    inbox_rows,
    new_group,
    ping,
    wait_for,
)


def _sums(engine: Engine, grain: int, kind: str, group: str) -> dict[str, int]:
    names = ("published", "handled", "failed", "retried", *wait_columns, *run_columns)
    with engine.connect() as conn:
        row = conn.execute(
            select(*(func.coalesce(func.sum(t.c[n]), 0).label(n) for n in names)).where(
                t.c.grain == grain, t.c.kind == kind, t.c.group_name == group
            )
        ).one()
    m = row._mapping
    found = {n: int(m[n]) for n in ("published", "handled", "failed", "retried")}
    found["waits"] = sum(int(m[c]) for c in wait_columns)
    found["runs"] = sum(int(m[c]) for c in run_columns)
    return found


def test_a_worker_and_a_relay_write_rollups_that_match_their_work(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    registry = JobRegistry()

    @job("odd-fails", on=Pinged, registry=registry, tries=1)
    def odd_fails(event: Pinged, ctx: JobContext) -> None:
        if event.n % 2:
            raise ValueError("odd")
        bump(ctx.connection, "rollups", event.n)

    group = new_group(kafka.bootstrap_servers, ("odd-fails",))
    topic = group.topics[0]
    worker_rollups, relay_rollups = Rollups(), Rollups()
    with harness(engine, kafka.bootstrap_servers, group, registry) as h:
        h.write([ping(topic, n) for n in range(6)])
        with (
            RollupFlusher(relay_rollups, engine, interval_s=0.2),
            RollupFlusher(worker_rollups, engine, interval_s=0.2),
        ):
            h.start_relay(metrics=RelayMetrics(rollups=relay_rollups))
            h.start_worker(metrics=ConsumerMetrics(rollups=worker_rollups))
            wait_for(
                lambda: (
                    len(inbox_rows(engine, group.name)) >= 3
                    and count_failed(engine, group.name) == 3
                )
            )
            h.stop()  # the last batch's counts are taken before the flushers' last flush
    assert worker_rollups.pending() == 0 and relay_rollups.pending() == 0
    for grain in (60, 900, 14400):  # the minute rows and their wider rows agree
        jobs = _sums(engine, grain, "job", group.name)
        assert (jobs["handled"], jobs["failed"], jobs["retried"]) == (3, 3, 0)
        assert jobs["runs"] == 6 and jobs["waits"] == 6  # every attempt had both
        relay = _sums(engine, grain, "relay", topic)
        assert relay["published"] == 6 and relay["waits"] == 6
    with engine.connect() as conn:
        names = set(
            conn.execute(select(t.c.job_name).where(t.c.group_name == group.name)).scalars()
        )
    assert names == {"odd-fails"}
