"""The rollups table: the flush upsert adds to what is there on every backend, two processes
flushing at once lose nothing, a failed flush keeps its counts, prune removes old minutes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from infra.db import make_engine
from outbox.rollups import Rollups, Sample, prune_rollups, rollups_older_than
from outbox.schema_rollups import rollups_table as t
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_OK


def _row(engine: Engine, grain: int, at: int, group: str = "g", job: str = "j") -> dict[str, int]:
    with engine.connect() as conn:
        row = conn.execute(
            select(t).where(
                t.c.grain == grain, t.c.at == at, t.c.group_name == group, t.c.job_name == job
            )
        ).one()
    return dict(row._mapping)


def test_a_flush_adds_to_the_minute_and_hour_rows(engine: Engine) -> None:
    now = [3600 * 10 + 65.0]  # 10:01:05
    rollups = Rollups(clock=lambda: now[0])
    rollups.job("g", "j", Sample(handled=1, run_ms=2.0, wait_ms=40.0))
    rollups.job("g", "j", Sample(failed=1, run_ms=2.0))
    assert rollups.flush(engine) == 1
    rollups.job("g", "j", Sample(handled=1, run_ms=2.0, wait_ms=40.0))
    rollups.job("g", "j", Sample(retried=1))
    now[0] += 60  # 10:02:05: another minute of the same hour
    rollups.job("g", "j", Sample(handled=1))
    assert rollups.flush(engine) == 2
    minute = _row(engine, 60, 36060)
    assert (minute["handled"], minute["failed"], minute["retried"]) == (2, 1, 1)
    assert minute["wait_ms_sum"] == 80
    assert sum(minute[f"r{i:02d}"] for i in range(30)) == 3
    assert sum(minute[f"w{i:02d}"] for i in range(30)) == 2
    assert _row(engine, 60, 36120)["handled"] == 1
    for grain, at in ((900, 36000), (14400, 28800)):  # 10:00-10:15, 08:00-12:00
        wider = _row(engine, grain, at)
        assert (wider["handled"], wider["failed"], wider["retried"]) == (3, 1, 1)
    assert rollups.flush(engine) == 0  # nothing new: nothing written


def test_relay_rows_are_per_topic(engine: Engine) -> None:
    rollups = Rollups(clock=lambda: 600.0)
    rollups.relay("orders", Sample(published=1, wait_ms=5.0))
    rollups.relay("orders", Sample(published=1, wait_ms=7.0))
    rollups.relay("products", Sample(failed=1))
    rollups.flush(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.group_name, t.c.published, t.c.failed)
            .where(t.c.kind == "relay", t.c.grain == 60)
            .order_by(t.c.group_name)
        ).all()
    assert [tuple(r) for r in rows] == [("orders", 2, 0), ("products", 0, 1)]


def test_concurrent_flushes_from_two_processes_lose_no_counts(engine: Engine) -> None:
    # Two processes' aggregators over the same cells, flushing at the same moments.
    rounds, per_round = 8, 5
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def process() -> None:
        rollups = Rollups(clock=lambda: 7200.0)
        try:
            for _ in range(rounds):
                for job in ("a", "b", "c"):
                    for _ in range(per_round):
                        rollups.job("g", job, Sample(handled=1, run_ms=1.0))
                barrier.wait(timeout=30)
                while rollups.pending():
                    rollups.flush(engine)  # a failed one (a deadlock victim) goes again
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=process) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors
    for job in ("a", "b", "c"):
        assert _row(engine, 60, 7200, job=job)["handled"] == 2 * rounds * per_round
        assert _row(engine, 14400, 0, job=job)["handled"] == 2 * rounds * per_round


def test_a_failed_flush_keeps_its_counts_for_the_next(engine: Engine, tmp_path: Path) -> None:
    rollups = Rollups(clock=lambda: 60.0)
    rollups.job("g", "j", Sample(handled=3))
    # A database without the table: the write fails, nothing raises, the counts stay.
    unmigrated = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    assert rollups.flush(unmigrated) == 0
    assert rollups.pending() == 1
    rollups.job("g", "j", Sample(handled=1))
    assert rollups.flush(engine) == 1
    assert _row(engine, 60, 60)["handled"] == 4


def test_prune_removes_minutes_past_the_retention(engine: Engine) -> None:
    day = 86400
    now = 20 * day
    for age_days in (16, 15, 13, 1):
        rollups = Rollups(clock=lambda a=age_days: float(now - a * day))
        rollups.job("g", "j", Sample(handled=1))
        rollups.flush(engine)
    with engine.connect() as conn:
        # two minutes, each with its quarter hour's and its 4 hours' row
        assert rollups_older_than(conn, 14 * day, now=now) == 6
    assert prune_rollups(engine, 14 * day, now=now, batch_size=1) == 6
    with engine.connect() as conn:
        ages = sorted(
            (now - at) // day
            for at in conn.execute(select(t.c.at).where(t.c.grain == 60)).scalars()
        )
        assert ages == [1, 13]
        assert conn.execute(select(func.count()).select_from(t)).scalar_one() == 6


def test_outbox_prune_deletes_rollups_past_rollup_retention_s(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("ROLLUP_RETENTION_S", str(3 * 86400))
    for age_days in (5, 1):
        rollups = Rollups(clock=lambda a=age_days: time.time() - a * 86400)
        rollups.job("g", "j", Sample(handled=1))
        rollups.flush(engine)
    assert main(["prune", "--dry-run", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["rollup_rows"] == 3
    assert main(["prune", "--yes", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["rollup_rows"] == 3
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t)).scalar_one() == 3  # 1 day old


def test_forged_times_neither_overflow_a_sum_nor_block_later_flushes(engine: Engine) -> None:
    # A wait from a ce_time of year 1 (and one of year 9999: negative), many times over.
    rollups = Rollups(clock=lambda: 60.0)
    for _ in range(10_000):
        rollups.job("g", "j", Sample(handled=1, wait_ms=6.2e16, run_ms=float("inf")))
        rollups.job("g", "j", Sample(handled=1, wait_ms=-2.5e14, run_ms=float("nan")))
    assert rollups.flush(engine) == 1
    row = _row(engine, 60, 60)
    assert row["handled"] == 20_000
    assert row["w29"] == 10_000 and row["w00"] == 10_000
    assert row["r29"] == 10_000 and row["r00"] == 10_000
    # Names longer than their columns are cut, not refused by the database at every flush.
    rollups.job("g" * 300, "j" * 120, Sample(handled=1))
    rollups.relay("t" * 300, Sample(published=1))
    assert rollups.flush(engine) == 2
    assert _row(engine, 60, 60, group="g" * 255, job="j" * 100)["handled"] == 1
